"""Human-facing output: rich tables for convert/eval/inspect/profile."""
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


def profile_table(result: dict) -> None:
    t = Table(title=f"profile ({result['runs']} runs x {len(result['prompts'])} prompts, "
                    f"load avg {result['load_avg'][0]:.2f})")
    cols = ("artifact", "engine", "MiB", "pp tok/s", "tg tok/s", "TTFT ms", "ITL p95 ms", "GB/s", "peak RSS MiB")
    for col in cols:
        t.add_column(col)
    for r in result["results"]:
        t.add_row(r["artifact"], r["engine"], f"{r['bytes'] / 2**20:.1f}",
                  f"{r['prefill_tok_s']['median']:.1f}", f"{r['decode_tok_s']['median']:.1f}",
                  f"{r['ttft_s']['median'] * 1e3:.1f}", f"{r['itl_p95_ms']['median']:.2f}",
                  f"{r['decode_gb_s']:.2f}", f"{r['peak_rss_mb']:.0f}")
    console.print(t)
