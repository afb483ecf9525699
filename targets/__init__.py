"""Device targets. `host` is this machine, measured at run time."""
from __future__ import annotations

import os


def threads_for(target: str = "host") -> int:
    if target != "host":
        from edgechat.errors import EdgechatError

        raise EdgechatError(f"unknown target {target!r}: only 'host' is available")
    return len(os.sched_getaffinity(0)) or os.cpu_count() or 1
