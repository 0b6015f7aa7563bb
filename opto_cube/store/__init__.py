"""Stores: the one place that writes and reads Zarr.

Writing is atomic and sealed (every chunk's CRC32C recorded by key, the completion mark set last);
reading goes through one checked opener that refuses a missing, moved or corrupt chunk with one
line naming the store and chunk. The catalog lists many stores and opens each on first use.
"""
