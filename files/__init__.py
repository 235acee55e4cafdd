"""The user's file area: the kernel's work dir seen from the host (uploads, listings,
downloads, the quota, expiry), and the fair pool all file work runs on. No kernel, no HTTP:
the session sees it only through the small `FileWatch` protocol, which the web layer
implements on top of it."""
