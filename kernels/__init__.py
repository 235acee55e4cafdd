"""Kernel layer: sandboxed IPython kernels, one session per user. No HTTP in here."""
