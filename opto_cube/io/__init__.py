"""Readers: every kind of session folder or file becomes one in-memory :class:`~opto_cube.io.session.Session`.

The lowest layer above :mod:`opto_cube.schema` and :mod:`opto_cube.errors`: it reads files and
validates them, and knows nothing of stores, analyses or figures. Everything downstream is shared
by the ALF folders of the dataset, NWB files and Kilosort/phy folders.

- :mod:`~opto_cube.io.npy`: safe ``.npy`` reading, hashing and the value checks every reader shares
- :mod:`~opto_cube.io.session`: :class:`Session` and :class:`SpikeSource`, what every reader builds
- :mod:`~opto_cube.io.discover`: :func:`find_sessions`, :func:`session_id_of` and :func:`read_session`,
  which reads a session of any kind with its reader
- :mod:`~opto_cube.io.alf`, :mod:`~opto_cube.io.nwb`, :mod:`~opto_cube.io.kilosort`: the readers
  (``read_alf``, ``read_nwb``, ``read_kilosort``); :mod:`~opto_cube.io.kilosort_metrics`: Kilosort's QC
  metrics and template features

Importing the package imports numpy only (no reader, no pynwb, no numba, no xarray).
"""

from opto_cube.io.discover import find_sessions, read_session, session_id_of
from opto_cube.io.session import Session, SpikeSource

__all__ = ["Session", "SpikeSource", "find_sessions", "read_session", "session_id_of"]
