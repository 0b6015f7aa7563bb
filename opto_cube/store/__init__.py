"""Stores: the one place that writes and reads Zarr.

Writing is atomic and sealed (every chunk's CRC32C recorded by key, the completion mark set last:
:mod:`~opto_cube.store.write`); reading goes through one checked opener (:mod:`~opto_cube.store.open`)
that refuses a missing, moved or corrupt chunk with one line naming the store and chunk
(:mod:`~opto_cube.store.chunks`). :mod:`~opto_cube.store.paths` names and lists stores,
:mod:`~opto_cube.store.ownership` says which are ours, whole and up to date. The catalog lists many
stores and opens each on first use.
"""
