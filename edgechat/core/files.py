"""File helpers every floor uses: content hashes, atomic writes, and the staging directory that makes an
output appear only when every step that writes it succeeded."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgechat.core.errors import EdgechatError


def sha256_of(paths: list[Path]) -> str:
    """One hash over the files' bytes, in sorted path order."""
    h = hashlib.sha256()
    for p in sorted(paths):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return sha256_of([path])


def write_text_atomic(path: Path, text: str) -> Path:
    """Write beside the target, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


@contextmanager
def staging(out_dir: Path):
    """Yield a hidden sibling directory; on success move its contents into out_dir, else delete it all."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgechatError(f"cannot write to {out_dir}: it exists and is not a directory")
    created = next((p for p in [out_dir.parent, *out_dir.parent.parents][::-1] if not p.exists()), None)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new directory
    except OSError as e:
        raise EdgechatError(f"cannot write to {out_dir}: {e.strerror or e}") from None
    ok = False
    try:
        yield tmp
        if out_dir.exists():
            for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "edgechat.json"):  # manifest last
                os.replace(entry, out_dir / entry.name)
        else:
            tmp.rename(out_dir)
        ok = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok and created is not None:
            shutil.rmtree(created, ignore_errors=True)
