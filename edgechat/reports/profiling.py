"""A profiling run's outputs: profile.json (everything, every reply), profile.csv (one row per artifact),
profile.md (a llama-bench-style table with the machine's load) and profile.png (a chart), plus the terminal
table. Writes go to temporary names, renamed when complete."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

CSV_COLUMNS = ("artifact", "engine", "format", "quant", "bytes", "params", "threads", "load_s", "replies",
               "pp_tok_s_mean", "pp_tok_s_sd", "tg_tok_s_mean", "tg_tok_s_sd", "tg_tok_s_estimated", "ttft_ms_mean",
               "ttft_ms_sd", "itl_p50_ms", "itl_p95_ms", "j_per_token_mean", "j_per_token_sd", "energy_source",
               "peak_rss_mb")


def _m(r, key, scale=1.0):
    v = r[key]["mean"]
    return None if v is None else v * scale


def _sd(r, key, scale=1.0):
    v = r[key]["sd"]
    return None if v is None else v * scale


def _pm(r, key, scale=1.0, digits=2) -> str:
    m, s = _m(r, key, scale), _sd(r, key, scale)
    return "-" if m is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def _est(r) -> float | None:
    e = r.get("estimate") or {}
    return e.get("decode_tok_s")


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def _params(n) -> str:
    return "-" if not n else (f"{n / 1e6:.1f} M" if n < 1e9 else f"{n / 1e9:.2f} B")


def csv_text(result: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in result["results"]:
        w.writerow([r["artifact"], r["engine"], r.get("format"), r.get("quant"), r["bytes"], r.get("params"),
                    result["threads"], round(r["load_s"], 4), r["replies"], _m(r, "prefill_tok_s"),
                    _sd(r, "prefill_tok_s"), _m(r, "decode_tok_s"), _sd(r, "decode_tok_s"), _est(r),
                    _m(r, "ttft_s", 1e3), _sd(r, "ttft_s", 1e3), r["itl_p50_ms"]["median"], r["itl_p95_ms"]["median"],
                    _m(r, "j_per_token"), _sd(r, "j_per_token"), r["energy_source"], round(r["peak_rss_mb"], 1)])
    return buf.getvalue()


def markdown(result: dict) -> str:
    mach = result["machine"]
    lines = [f"Profile on `{result['target']}`: {result['runs']} runs x {result['conversations']} conversations "
             f"({result['prompt_source']}, {result['turns']} turns), up to {result['max_tokens']} tokens a reply, "
             f"{result['threads']} threads, artifacts interleaved. Mean ± sd over {result['results'][0]['replies']} "
             "replies each.", "",
             "| artifact | size | params | engine | threads | pp t/s | tg t/s | tg t/s est. | TTFT ms | ITL p50/p95 ms "
             "| J/token | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        est = _est(r)
        lines.append(f"| {r['artifact']} | {_size(r['bytes'])} | {_params(r.get('params'))} | {r['engine']} | "
                     f"{result['threads']} | {_pm(r, 'prefill_tok_s', digits=1)} | {_pm(r, 'decode_tok_s', digits=1)} | "
                     f"{'-' if est is None else f'{est:.1f}'} | {_pm(r, 'ttft_s', 1e3, 1)} | "
                     f"{r['itl_p50_ms']['median']:.2f} / {r['itl_p95_ms']['median']:.2f} | "
                     f"{_pm(r, 'j_per_token', digits=3)} | {r['peak_rss_mb']:.0f} |")
    sources = sorted({r["energy_source"] for r in result["results"]})
    lines += ["", f"Energy: {'; '.join(sources)}.",
              "tg t/s est.: the planner's estimate for the artifact on this target (targets/), for comparison.",
              "", f"Machine load: load average {mach['loadavg_start'][0]:.2f} at the start, "
                  f"{mach['loadavg_end'][0]:.2f} at the end ({mach['cores']} cores)"
              + (f"; other processes used {mach['other_cpu_cores_mean']:.2f} cores on average "
                 f"(max {mach['other_cpu_cores_max']:.2f})" if mach["other_cpu_cores_mean"] is not None else "") + "."]
    if mach["warning"]:
        lines += ["", f"**Warning:** {mach['warning']}."]
    return "\n".join(lines) + "\n"


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = result["results"]
    names = [r["artifact"].removesuffix(".gguf") for r in rs]
    panels = [("prefill_tok_s", 1.0, "prefill tokens/s"), ("decode_tok_s", 1.0, "decode tokens/s"),
              ("ttft_s", 1e3, "time to first token, ms"), ("j_per_token", 1.0, "joules per generated token")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, scale, label) in zip(axes.flat, panels):
        means = [_m(r, key, scale) or 0.0 for r in rs]
        sds = [_sd(r, key, scale) or 0.0 for r in rs]
        ax.bar(range(len(rs)), means, yerr=sds, capsize=4, color=colors[: len(rs)] if len(rs) <= len(colors) else None)
        if key == "decode_tok_s":
            est = [_est(r) for r in rs]
            xs = [i for i, e in enumerate(est) if e]
            if xs:
                ax.scatter(xs, [est[i] for i in xs], marker="D", s=45, color="crimson", zorder=3,
                           label="planner estimate")
                ax.legend(loc="lower right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(range(len(rs)), names, rotation=15, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    mach = result["machine"]
    energy = "measured" if all(r["energy_source"].startswith("measured") for r in rs) else "estimated"
    threads = f"{result['threads']} thread{'s' if result['threads'] != 1 else ''}"
    fig.suptitle(f"edgechat profile on {result['target']} ({threads}, {result['runs']} runs, "
                 f"mean ± sd; energy {energy}; load avg {mach['loadavg_start'][0]:.2f})"
                 + ("\nWARNING: the machine was busy" if mach["warning"] else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_all(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"profile.{ext}" for ext in ("json", "csv", "md", "png")]
    _atomic(paths[0], lambda p: p.write_text(json.dumps(result, indent=2, default=str) + "\n"))
    _atomic(paths[1], lambda p: p.write_text(csv_text(result)))
    _atomic(paths[2], lambda p: p.write_text(markdown(result)))
    _atomic(paths[3], lambda p: chart(result, p))
    return paths


def show(result: dict, out=None) -> None:
    """The terminal view (edgechat.reports.tables: fits the width; markdown when piped)."""
    from edgechat.reports.tables import console, emit_table

    out = out or console
    mach = result["machine"]
    cols = ["artifact", "size", "engine", "pp t/s", "tg t/s", "tg est.", "TTFT ms", "ITL p95 ms", "J/token",
            "peak RSS MiB"]
    rows = []
    for r in result["results"]:
        est = _est(r)
        rows.append([r["artifact"], _size(r["bytes"]), r["engine"], _pm(r, "prefill_tok_s", digits=1),
                     _pm(r, "decode_tok_s", digits=1), "-" if est is None else f"{est:.1f}", _pm(r, "ttft_s", 1e3, 1),
                     f"{r['itl_p95_ms']['median']:.2f}", _pm(r, "j_per_token", digits=3), f"{r['peak_rss_mb']:.0f}"])
    emit_table(f"profile on {result['target']}: {result['runs']} runs x {result['conversations']} conversations, "
               f"{result['threads']} threads, load avg {mach['loadavg_start'][0]:.2f}", cols, rows,
               right=tuple(cols[3:]), out=out)
    for src in sorted({r["energy_source"] for r in result["results"]}):
        out.print(f"energy: {src}", highlight=False, markup=False, style="dim")
