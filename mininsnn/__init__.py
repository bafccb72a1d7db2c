"""mininsnn: quantized spiking neural networks with hand-written BPTT in NumPy + Numba."""

__version__ = "0.1.0"
