"""Readers: every kind of session folder or file becomes one in-memory :class:`~opto_cube.io.alf.Session`.

The lowest layer above :mod:`opto_cube.schema` and :mod:`opto_cube.errors`: it reads files and
validates them, and knows nothing of stores, analyses or figures. Everything downstream is shared
by the ALF folders of the dataset, NWB files and Kilosort/phy folders.
"""
