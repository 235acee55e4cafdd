"""Packages a kernel may install: an allowlist, and an installer the server runs (kernels
have no network) into a shared, content-addressed cache that kernels mount read-only."""
