"""The jobs users run: convert, verify, NWB export, and the analysis pass with what is built on it.

A job composes the layers below (read, bin, write; open, compute, save, draw); one dask task per
session, each store opened once where its task runs.
"""
