"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class EdgechatError(Exception):
    """A problem the user caused and can fix (bad path, bad option, unsupported model)."""

    exit_code = 2
