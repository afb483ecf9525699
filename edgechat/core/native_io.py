"""Keeping native libraries' own stderr lines (ExecuTorch's cpuinfo probe, its eager kernels' "No temp
allocator provided") out of the user's terminal: they write to fd 2 directly, past Python's sys.stderr."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def quiet_stderr():
    """fd 2 points at /dev/null inside the block (a no-op where fd 2 cannot be duplicated)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
