"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class EdgechatError(Exception):
    """A problem the user caused and can fix (bad path, bad option, unsupported model)."""

    exit_code = 2


class GateFailed(EdgechatError):
    """The artifact was written, but misses a quality bound: exit 1 with the figures."""
    exit_code = 1

    def __init__(self, message: str, manifest: dict):
        super().__init__(message)
        self.manifest = manifest
