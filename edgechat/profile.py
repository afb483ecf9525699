"""Profiling runs: every artifact on the same prompts, interleaved, with medians and the machine's load."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from edgechat.errors import EdgechatError

DEFAULT_PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Give me three tips for sleeping better.",
    "Explain what a CPU does in two sentences.",
]
METRICS = ("prefill_tok_s", "decode_tok_s", "ttft_s", "itl_p50_ms", "itl_p95_ms")


def read_prompts(path: str | None) -> list[str]:
    if path is None:
        return DEFAULT_PROMPTS
    p = Path(path)
    if not p.exists():
        raise EdgechatError(f"no such prompts file: {p}")
    prompts = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
    if not prompts:
        raise EdgechatError(f"the prompts file {p} is empty")
    return prompts


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def run_profile(artifacts: list[str], prompts_file: str | None, runs: int, max_tokens: int,
                threads: int | None, progress: bool = True) -> dict:
    import edgechat
    from edgechat.progress import Steps

    prompts = read_prompts(prompts_file)
    chats = [edgechat.load(a, threads=threads, max_tokens=max_tokens, n_ctx=1024) for a in artifacts]
    samples = [{m: [] for m in METRICS} for _ in chats]
    load_before = os.getloadavg()
    with Steps(enabled=progress) as steps:
        advance = steps.step("profiling", total=runs * len(prompts) * len(chats))
        done = 0
        for _ in range(runs):
            for prompt in prompts:
                for chat, sample in zip(chats, samples):  # interleaved: drift hits every artifact alike
                    chat.reset()
                    stats = chat.send(prompt).stats
                    for m in METRICS:
                        sample[m].append(getattr(stats, m))
                    done += 1
                    advance(done)
    results = []
    for art, chat, sample in zip(artifacts, chats, samples):
        row = {"artifact": Path(art).name, "path": str(art), "engine": chat.engine.name,
               "bytes": chat.engine.model_bytes, **{m: summary(v) for m, v in sample.items()}}
        row["decode_gb_s"] = row["bytes"] * row["decode_tok_s"]["median"] / 1e9  # weights read per token
        row["peak_rss_mb"] = chat.last_reply.stats.peak_rss_mb  # process-wide peak so far
        results.append(row)
        chat.engine.close()
    return {"prompts": prompts, "runs": runs, "max_tokens": max_tokens, "threads": threads or os.cpu_count(),
            "load_avg": list(load_before), "load_avg_after": list(os.getloadavg()), "results": results}


def write_profile(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| artifact | engine | MiB | pp tok/s | tg tok/s | TTFT ms | ITL p95 ms | GB/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        lines.append(f"| {r['artifact']} | {r['engine']} | {r['bytes'] / 2**20:.1f} | "
                     f"{r['prefill_tok_s']['median']:.1f} | {r['decode_tok_s']['median']:.1f} ± {r['decode_tok_s']['sd']:.1f} | "
                     f"{r['ttft_s']['median'] * 1e3:.1f} | {r['itl_p95_ms']['median']:.2f} | {r['decode_gb_s']:.2f} |")
    lines.append(f"\nload average before/after: {result['load_avg'][0]:.2f} / {result['load_avg_after'][0]:.2f}")
    (out_dir / "profile.md").write_text("\n".join(lines) + "\n")
