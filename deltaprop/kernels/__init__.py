"""Device code: Numba ``@cuda.jit`` modules and CUDA C sources for CuPy.

Nothing here is compiled at import: each backend compiles its kernels the first time it runs them.
"""
