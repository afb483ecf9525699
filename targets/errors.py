"""Errors a user can cause in targets/: a malformed profile, an unknown target, a model that does not fit.
targets/ imports nothing from edgechat, so edgechat turns these into its own one-line errors at the boundary."""
from __future__ import annotations


class TargetError(ValueError):
    """A problem the user can fix: the CLI prints it as one line and exits with code 2."""

    exit_code = 2


class ProfileError(TargetError):
    """A device profile that cannot be used: names the file, the key and the reason."""

    def __init__(self, path, key: str | None, reason: str):
        self.path, self.key, self.reason = str(path), key, reason
        where = f"{self.path}: key {key!r}" if key else self.path
        super().__init__(f"{where}: {reason}")


class PlanError(TargetError):
    """Nothing fits the target; `short_bytes` says by how much the smallest candidate misses."""

    def __init__(self, message: str, short_bytes: int = 0):
        self.short_bytes = short_bytes
        super().__init__(message)
