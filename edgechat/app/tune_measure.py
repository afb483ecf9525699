"""What tune measures of each candidate besides its quality figures: whether its greedy replies to held-out
prompts are the source's own, and its decode speed here (a profiling run) with the planner's estimate for
each target."""
from __future__ import annotations

from pathlib import Path

PROMPTS_START = 7140  # held-out chit-chat conversations past the 20 the KLD/PPL figures score (7100-7129)


def held_out_prompts(n: int) -> list[str]:
    from edgechat.core.data import chitchat_dialogues

    return [d[0]["content"] for d in chitchat_dialogues(PROMPTS_START, n) if d[0]["role"] == "user"]


def replies(chat, prompts: list[str], on_prompt=None) -> list[list[int]]:
    out = []
    for i, p in enumerate(prompts):
        chat.reset()
        out.append(list(chat.send(p).token_ids))
        if on_prompt:
            on_prompt(i + 1)
    return out


def greedy_match(teacher, paths: list[Path], opts, steps) -> dict[Path, float]:
    """Share of held-out prompts whose greedy reply (token ids, up to reply_tokens) is the source's own."""
    from edgechat.app.api import load
    from edgechat.app.chat import Chat
    from runtimes.torch_engine import TorchEngine

    prompts = held_out_prompts(opts.prompts)
    sampling = dict(temperature=0.0, max_tokens=opts.reply_tokens)
    ref = replies(Chat(TorchEngine(teacher, n_ctx=1024, threads=opts.threads), **sampling), prompts,
                  steps.step("the source's greedy replies to held-out prompts", total=len(prompts)))
    out = {}
    for path in paths:
        chat = load(path, threads=opts.threads, n_ctx=1024, **sampling)
        try:
            got = replies(chat, prompts, steps.step(f"greedy replies of {path.name}", total=len(prompts)))
        finally:
            chat.engine.close()
        out[path] = sum(a == b for a, b in zip(got, ref)) / len(prompts)
    return out


def speeds(paths: list[Path], targets: list[str], opts, steps) -> tuple[dict, dict]:
    """Decode tok/s measured here (profiling run: each artifact in its own process, interleaved, medians) and
    the planner's estimate for each target; plus the machine's load during the run."""
    from edgechat.app.profiling import artifact_facts, run_profiling

    steps.step(f"measuring decode speed here ({len(paths)} artifacts interleaved, {opts.runs} rounds)")
    run = run_profiling([str(p) for p in paths], runs=opts.runs, max_tokens=32, threads=opts.threads,
                        target="host", progress=False)
    out = {}
    for row in run["results"]:
        est = {}
        for t in targets:
            facts = artifact_facts(row["path"], t, max(round(row["prompt_tokens_mean"]), 1),
                                   max(round(row["completion_tokens_mean"]), 1), run["n_ctx"])
            est[t] = (facts["estimate"] or {}).get("decode_tok_s")
        out[Path(row["path"])] = {"here": row["decode_tok_s"]["median"], "est": est}
    return out, {"load_avg": run["load_avg"], "load_avg_after": run["load_avg_after"], "threads": run["threads"],
                 "warning": run["machine"]["warning"]}
