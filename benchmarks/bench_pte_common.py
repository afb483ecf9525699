"""Shared by the bench_pte_* benchmarks (not a benchmark itself): SmolLM2-135M .pte exports cached under
benchmarks/.cache/pte, keyed by the export options and the sources that decide what an export writes."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, ROOT, THREADS, cache_lock, library_hash  # noqa: E402

PTE_SOURCES = ["converters/pte_export.py", "converters/pte_options.py", "converters/pte_modules.py"]
MAX_SEQ_LEN = 1024  # every benchmark program, fused or not: the same static cache


def pte_hash() -> str:
    h = hashlib.sha256(library_hash().encode())
    for rel in PTE_SOURCES:
        h.update((ROOT / rel).read_bytes())
    return h.hexdigest()[:12]


def cached_pte(quant: str, fresh: bool = False, **extra) -> Path:
    """Path of SmolLM2-135M-Instruct exported as a .pte with `quant` and the given ExportOptions.extra
    (fused_ops, fuse_qkv, fuse_mlp, eval_method, group_size, ...), through the same pipeline as
    `edgechat convert --format pte` (tokenizer and chat template beside it)."""
    import shutil

    extra = {"max_seq_len": MAX_SEQ_LEN, **extra}
    tag = "_".join(f"{k}={v}" for k, v in sorted(extra.items()))
    key = f"default-{quant}-{hashlib.sha256(tag.encode()).hexdigest()[:8]}-{pte_hash()}"
    out = CACHE / "pte" / key
    with cache_lock(f"pte-{key}"):
        if (out / "edgechat.json").exists() and not fresh:
            return pte_file(out)
        if out.exists():
            shutil.rmtree(out)
        from edgechat.app.pipeline import ConvertOptions, convert
        from edgechat.reports.progress import Steps

        t = time.perf_counter()
        convert(None, out, ConvertOptions(formats=["pte"], quants=[quant], evaluate=False, threads=THREADS,
                                          extra=extra), Steps(enabled=False))
        print(f"[cache] exported {quant} {tag} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return pte_file(out)


def pte_file(out: Path) -> Path:
    art = json.loads((out / "edgechat.json").read_text())["artifacts"][0]
    return out / art["file"]


def export_info(path: Path) -> dict:
    art = json.loads((path.parent / "edgechat.json").read_text())["artifacts"][0]
    return {k: art.get(k) for k in ("quant", "group_size", "embedding_quant", "head_quant", "max_seq_len", "fused_ops",
                                    "fuse_qkv", "fuse_mlp", "export_s", "bytes")}
