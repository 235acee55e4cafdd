"""Domain errors of the file area; `code` is a stable machine-readable name. The web layer
maps them to HTTP statuses."""


class FileAreaError(Exception):
    """Base of the file area's domain errors; `code` is a stable machine-readable name."""

    code = "file_error"


class BadFileName(FileAreaError):
    code = "bad_file_name"


class FileNotFound(FileAreaError):
    code = "file_not_found"


class FileExpired(FileNotFound):
    code = "file_expired"


class FileTooLarge(FileAreaError):
    code = "file_too_large"


class QuotaExceeded(FileAreaError):
    code = "quota_exceeded"


class FileBusy(FileAreaError):
    code = "file_busy"


class FileAreaPurged(FileAreaError):
    code = "file_area_purged"


class PurgeFailed(FileAreaError):
    code = "purge_failed"


class BadBundle(FileAreaError):
    """A zip sent to be run again that is not a usable bundle."""

    code = "bad_bundle"
