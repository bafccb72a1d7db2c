"""Numba kernels: arrays in, preallocated arrays out. No Python objects, no validation."""
