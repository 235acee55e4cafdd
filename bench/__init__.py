"""Benchmark suite: our server against Jupyter Kernel Gateway and a raw ZMQ kernel (issue 5)."""
