"""The science on opened cubes: conditions, responses, latency, PSTHs, maps and the spatial extent.

Array kernels (numpy/numba, no labels) sit apart from the labelled wrappers that return xarray
objects and pandas tables. Nothing here writes files or draws.
"""
