"""Domain errors of package installs; `code` is a stable machine-readable name. The web layer
maps them to HTTP statuses, the session turns them into error outputs."""


class PackageError(Exception):
    code = "package_error"


class PackageRefused(PackageError):
    """A package that is not on the allowlist (or a requirement that cannot be read)."""

    code = "package_not_allowed"


class PackageInstallFailed(PackageError):
    code = "package_install_failed"


class PackageInstallTimeout(PackageInstallFailed):
    code = "package_install_timeout"
