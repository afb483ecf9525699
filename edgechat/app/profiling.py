"""Profiling runs: every artifact, each in its own worker process, on the same prompts, interleaved (the
artifact order rotates every run), with the machine's load recorded beside the figures and a warning when
other processes were busy. Writers (JSON, CSV, markdown, PNG) are in edgechat.reports.profiling."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from edgechat.core.errors import EdgechatError

DEFAULT_PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Give me three tips for sleeping better.",
    "Explain what a CPU does in two sentences.",
]
METRICS = ("prefill_tok_s", "decode_tok_s", "ttft_s", "itl_p50_ms", "itl_p95_ms", "energy_j", "j_per_token", "cpu_s")
MTBENCH_RELATIVE = Path("shared") / "data" / "mt_bench" / "mt_bench_question.jsonl"


def mtbench_path() -> Path:
    """$EDGECHAT_MTBENCH, else ../shared/data/mt_bench/ beside this checkout or the working directory."""
    if os.environ.get("EDGECHAT_MTBENCH"):
        return Path(os.environ["EDGECHAT_MTBENCH"])
    for base in (Path(__file__).resolve().parents[3], Path.cwd().parent, Path.cwd()):
        if (base / MTBENCH_RELATIVE).exists():
            return base / MTBENCH_RELATIVE
    raise EdgechatError("--prompts mtbench needs the MT-Bench questions (mt_bench_question.jsonl): set "
                        "EDGECHAT_MTBENCH to its path or give the file itself as --prompts FILE")


def read_prompts(spec: str | None, max_prompts: int | None = None) -> tuple[list[list[str]], str]:
    """Conversations (lists of user turns) and where they came from. spec: None (built-in prompts),
    "mtbench", a .jsonl file (objects with "turns" [MT-Bench] or "prompt"), or a text file (one a line)."""
    if spec is None:
        convs, source = [[p] for p in DEFAULT_PROMPTS], "built-in"
    else:
        p = mtbench_path() if spec == "mtbench" else Path(spec)
        if not p.exists():
            raise EdgechatError(f"no such prompts file: {p}")
        lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
        if p.suffix == ".jsonl":
            convs = []
            for i, ln in enumerate(lines, 1):
                try:
                    obj = json.loads(ln)
                except json.JSONDecodeError as e:
                    raise EdgechatError(f"{p}:{i} is not JSON: {e.msg}") from None
                turns = obj.get("turns") or ([obj["prompt"]] if "prompt" in obj else None)
                if not turns or not all(isinstance(t, str) for t in turns):
                    raise EdgechatError(f"{p}:{i} has no \"turns\" (list of strings) or \"prompt\"")
                convs.append(turns)
        else:
            convs = [[ln.strip()] for ln in lines]
        source = "mtbench" if spec == "mtbench" else str(p)
        if not convs:
            raise EdgechatError(f"the prompts file {p} is empty")
    return convs[:max_prompts] if max_prompts else convs, source


def summary(values: list) -> dict:
    xs = [v for v in values if v is not None]
    if not xs:
        return {"n": 0, "mean": None, "sd": None, "median": None, "min": None, "max": None}
    return {"n": len(xs), "mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def artifact_facts(path: str, target: str, prompt_tokens: int, gen_tokens: int, n_ctx: int,
                   threads: int | None = None) -> dict:
    """Format, quant, parameter count and (GGUF, .pte) the planner's estimate on the target, from the header
    (a .pte: the manifest beside it)."""
    from edgechat.core.sources import path_kind, resolve_artifact

    kind, p = path_kind(resolve_artifact(path))
    if kind not in ("gguf", "pte"):
        return {"format": "hf" if kind == "artifacts" else kind, "quant": None, "params": None, "estimate": None}
    from edgechat.app.targeting import model_spec, plan_for
    from edgechat.core.gguf_file import read_header

    params = read_header(p).params if kind == "gguf" else None
    try:
        if kind == "pte":
            params = model_spec(p)[0].params()
        plan = plan_for(p, target, as_is=True, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, n_ctx=n_ctx,
                        threads=threads)
        c = plan.chosen
        est = {"decode_tok_s": c.decode_tok_s, "prefill_tok_s": c.prefill_tok_s, "placement": c.placement,
               "target": plan.target}
        quant = c.quant
    except EdgechatError as e:
        est, quant = {"error": str(e)}, None
    return {"format": kind, "quant": quant, "params": params, "estimate": est}


def run_profiling(artifacts: list[str], prompts: str | None = None, runs: int = 3, max_tokens: int = 64,
                threads: int | None = None, target: str = "host", n_ctx: int = 1024, max_prompts: int | None = None,
                power: str | None = None, warmup: bool = True, progress: bool = True) -> dict:
    from edgechat.probes.machine_load import LoadMonitor
    from edgechat.app.profiling_worker import Worker
    from edgechat.reports.progress import Steps
    from edgechat.app.targeting import get_profile

    if runs < 1:
        raise EdgechatError(f"--runs must be at least 1, got {runs}")
    convs, source = read_prompts(prompts, max_prompts)
    profile = get_profile(target, measure=False)
    threads = threads or profile.cpu.threads
    for a in artifacts:
        if not Path(a).exists():
            raise EdgechatError(f"no such file or directory: {a}")
    options = {"target": target, "threads": threads, "n_ctx": n_ctx, "max_tokens": max_tokens, "power": power}
    workers: list[Worker] = []
    samples: list[dict] = []
    try:
        with Steps(enabled=progress) as steps, LoadMonitor() as load:
            for a in artifacts:
                steps.step(f"loading {Path(a).name} in its own process")
                workers.append(Worker(str(a), options))
                load.add_pid(workers[-1].pid)
            if warmup:
                steps.step("warm-up reply per artifact")
                for w in workers:
                    w.send(["Hello!"], 8)
            advance = steps.step("profiling (artifacts interleaved)", total=runs * len(convs) * len(workers))
            done = 0
            for run in range(runs):
                k = run % len(workers)
                order = workers[k:] + workers[:k]  # each artifact takes each position equally often
                for ci, conv in enumerate(convs):
                    for w in order:
                        for turn, st in enumerate(w.send(conv, max_tokens)):
                            samples.append({"artifact": w.artifact, "run": run, "prompt": ci, "turn": turn, **st})
                        done += 1
                        advance(done)
    finally:
        for w in workers:
            w.close()
    machine = load.summary()
    results = []
    for w in workers:
        mine = [s for s in samples if s["artifact"] == w.artifact]
        prompt_mean = statistics.fmean(s["prefill_tokens"] for s in mine)
        gen_mean = statistics.fmean(s["completion_tokens"] for s in mine)
        facts = artifact_facts(w.artifact, target, max(round(prompt_mean), 1), max(round(gen_mean), 1), n_ctx,
                               threads)
        variant = (w.info.get("cpu_backend") or "").split(" (")[0]  # "zen4 (AVX2 ...)": the tables show the name
        row = {"artifact": Path(w.artifact).name, "path": w.artifact,
               "engine": f"{w.info['engine']}/{variant}" if variant else w.info["engine"],
               "cpu_backend": w.info.get("cpu_backend"), "engine_threads": w.info.get("threads"),
               "bytes": w.info["bytes"], **facts, "load_s": w.info["load_s"], "replies": len(mine),
               "prompt_tokens_mean": prompt_mean, "completion_tokens_mean": gen_mean,
               **{m: summary([s[m] for s in mine]) for m in METRICS},
               "peak_rss_mb": max(s["peak_rss_mb"] for s in mine),
               "energy_source": mine[-1]["energy_source"]}
        row["decode_gb_s"] = row["bytes"] * (row["decode_tok_s"]["median"] or 0) / 1e9  # weights read per token
        results.append(row)
    return {"target": target, "threads": threads, "n_ctx": n_ctx, "runs": runs, "max_tokens": max_tokens,
            "prompts": [c[0] for c in convs], "prompt_source": source, "conversations": len(convs),
            "turns": sum(len(c) for c in convs), "machine": machine,
            "load_avg": machine["loadavg_start"], "load_avg_after": machine["loadavg_end"],
            "results": results, "samples": samples}


def write_profiling(result: dict, out_dir: Path) -> list[Path]:
    from edgechat.reports.profiling import write_all

    return write_all(result, Path(out_dir))
