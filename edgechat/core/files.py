"""File helpers every floor uses: content hashes, atomic writes, and the staging directory that makes an
output appear only when every step that writes it succeeded."""
from __future__ import annotations

import errno
import fcntl
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


def cache_dir(*parts: str) -> Path:
    """edgechat's per-user cache ($EDGECHAT_CACHE_DIR, else $XDG_CACHE_HOME/edgechat, else ~/.cache/edgechat):
    results that are slow to make and safe to remake (per-host probes, generated data), never artifacts."""
    root = os.environ.get("EDGECHAT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgechat")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pte_data_file(pte: Path) -> Path:
    """Where a program's external data (a .ptd: --share-tied's one copy of a tied matrix) lives: beside it."""
    return pte.with_suffix(".ptd")


def artifact_bytes(path: Path) -> int:
    """An artifact's bytes on disk: the file, and a .pte's external data file where it has one."""
    ptd = pte_data_file(path) if path.suffix == ".pte" else None
    return path.stat().st_size + (ptd.stat().st_size if ptd and ptd.exists() else 0)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write beside the target, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share a temp file
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _lock(out_dir: Path) -> int:
    """An exclusive lock on `.OUTDIR.lock` beside out_dir, so two writers of one OUTDIR never mix files: the second
    fails at once. The lock file is removed on release; a writer that opened a file another has just removed
    (stat no longer matches) tries again with the new one."""
    path = out_dir.parent / f".{out_dir.name}.lock"
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise EdgechatError(f"cannot write to {out_dir}: another edgechat process is writing it "
                                    f"(lock {path}); wait for it to finish or choose another -o") from None
            raise
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise EdgechatError(f"cannot lock {path}: it keeps being replaced")


def _unlock(out_dir: Path, fd: int) -> None:
    try:
        os.unlink(out_dir.parent / f".{out_dir.name}.lock")  # while still held, so no one locks a removed file
    except FileNotFoundError:
        pass
    os.close(fd)


@contextmanager
def staging(out_dir: Path):
    """Yield a hidden sibling directory; on success move its contents into out_dir, else delete it all. Only one
    process at a time stages a given out_dir."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgechatError(f"cannot write to {out_dir}: it exists and is not a directory")
    created = next((p for p in [out_dir.parent, *out_dir.parent.parents][::-1] if not p.exists()), None)
    lock = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = _lock(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new directory
    except OSError as e:
        if lock is not None:
            _unlock(out_dir, lock)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise EdgechatError(f"cannot write to {out_dir}: {e.strerror or e}") from None
    except EdgechatError:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
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
        _unlock(out_dir, lock)
