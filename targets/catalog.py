"""Finding device profiles: the search path ($EDGECHAT_TARGETS_PATH, then targets/profiles/), the list of
names, and a profile by name or file (`host` is measured on this machine)."""
from __future__ import annotations

import os
from pathlib import Path

from targets.errors import TargetError
from targets.host import host_profile
from targets.profile import PROFILES_DIR, Profile, read_profile_file


# -- lookup -------------------------------------------------------------------------------------------
def search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("EDGECHAT_TARGETS_PATH", "").split(os.pathsep) if p]
    return [*extra, PROFILES_DIR]


def profile_files() -> dict[str, Path]:
    """name -> file; earlier directories of the search path win."""
    out: dict[str, Path] = {}
    for d in reversed(search_path()):
        for p in sorted(d.glob("*.toml")) if d.is_dir() else []:
            out[p.stem] = p
    return dict(sorted(out.items()))


def list_profiles() -> list[str]:
    return list(profile_files())


def load_profile(name: str, measure: bool = True, threads: int | None = None) -> Profile:
    """A profile by name (or a path to a .toml file). `host` is built from this machine (measured with
    `threads` threads, default all); with measure=False its bandwidth and compute are quick defaults instead
    of measurements (enough for power figures). `threads` applies to host only."""
    if name == "host":
        return host_profile(measure=measure, threads=threads)
    p = Path(name)
    if p.suffix == ".toml":
        return read_profile_file(p)
    files = profile_files()
    if name not in files:
        raise TargetError(f"unknown target {name!r}: choose one of {', '.join(files)} "
                          f"(or give a .toml file; `edgechat targets list` shows them)")
    return read_profile_file(files[name])


def threads_for(target: str = "host") -> int:
    return load_profile(target, measure=False).cpu.threads
