"""Human-facing output: rich tables for convert, eval and inspect."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(map(fmt, v))
    return str(v)


def kv_table(title: str, data: dict) -> None:
    t = Table(title=title, show_header=False)
    for k, v in data.items():
        t.add_row(k, fmt(v))
    console.print(t)


def artifact_table(manifest: dict, out_dir: Path) -> None:
    t = Table(title=f"{out_dir} (manifest: edgechat.json)")
    for col in ("file", "quant", "MiB", "PPL", "ref PPL", "mean KLD", "top-1"):
        t.add_column(col)
    for a in manifest["artifacts"]:
        q = a.get("quality") or {}
        t.add_row(a["file"], a["quant"], f"{a['bytes'] / 2**20:.1f}" if "bytes" in a else "-",
                  *(fmt(q[k]) if k in q else "-" for k in ("ppl", "ref_ppl", "mean_kld", "top1_agreement")))
    console.print(t)
