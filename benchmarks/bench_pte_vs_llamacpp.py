"""SmolLM2-135M-Instruct side by side: the 8da4w .pte (ExecuTorch, XNNPACK, fused LLM ops) against llama.cpp's
Q4_0 and Q4_K_M GGUF of the same weights, through the same Chat API: decode and prefill tokens/s, TTFT, file
size and peak RSS.

Each (round, artifact) runs in its own process (so peak RSS is that engine's alone), the artifact order rotates
every round, and the figures are medians over rounds. Every run chats the same two conversations (a ~400-token
summarize request and a short question) greedily, up to 128 tokens; the same n_ctx (1024) everywhere; llama.cpp
with its default F16 KV cache, the .pte with its static fp32 cache.

    .venv/bin/python benchmarks/bench_pte_vs_llamacpp.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pte_common import MAX_SEQ_LEN, cached_pte  # noqa: E402
from common import (DATA, PYTHON, ROOT, THREADS, Bench, artifact, cached_convert, cpu_busy_cores,  # noqa: E402
                    md_table, median, ratio, rotate)

MAX_TOKENS = 128
GOAL = 0.8  # 8da4w decode tok/s / llama.cpp Q4_0 decode tok/s


def conversations() -> list[tuple[str, str]]:
    text = (DATA / "wikitext2" / "wiki.test.raw").read_text(encoding="utf-8") if DATA.exists() else ""
    passage = " ".join(text.split()[300:600]) or "The quick brown fox jumps over the lazy dog. " * 40
    return [("long", f"Summarize this text in three sentences:\n\n{passage}"),
            ("short", "Write a short story about a robot who learns to paint.")]


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def worker(path: str) -> dict:
    """Runs in a child process: open the artifact, chat, report stats and memory."""
    import edgechat  # noqa: F401  (imports everything the Chat API needs before the baseline is read)
    from edgechat.app.api import open_engine
    from edgechat.app.chat import Chat

    base_kib = vm_kib("VmRSS")
    t = time.perf_counter()
    engine = open_engine(path, n_ctx=MAX_SEQ_LEN, threads=THREADS)
    load_s = time.perf_counter() - t
    chat = Chat(engine, max_tokens=MAX_TOKENS, temperature=0.0)
    out = {"load_s": load_s, "replies": {}}
    for name, prompt in conversations():
        chat.reset()
        r = chat.send(prompt)
        s = r.stats
        out["replies"][name] = {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
                                "ttft_s": s.ttft_s, "prefill_tok_s": s.prefill_tok_s, "decode_tok_s": s.decode_tok_s,
                                "stop": s.stop_reason, "text": r.text[:200]}
    out["peak_rss_mib"] = vm_kib("VmHWM") / 1024
    out["baseline_rss_mib"] = base_kib / 1024
    return out


def run_worker(path: Path) -> dict:
    proc = subprocess.run([PYTHON, __file__, "--worker", str(path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {path.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    bench = Bench("bench_pte_vs_llamacpp")
    ggufs = cached_convert(["q8_0", "q4_0", "q4_k_m"], fresh=args.fresh)
    arts = {"8da4w .pte (ExecuTorch)": cached_pte("8da4w", fresh=args.fresh),
            "8da4w .pte, 8-bit head": cached_pte("8da4w", fresh=args.fresh, head_quant="8w"),
            "Q4_0 GGUF (llama.cpp)": artifact(ggufs, "q4_0"),
            "Q4_K_M GGUF (llama.cpp)": artifact(ggufs, "q4_k_m")}
    runs = {name: [] for name in arts}
    busy = []
    for r in range(args.rounds):
        for name in rotate(list(arts), r):
            busy.append(cpu_busy_cores(0.5))
            runs[name].append(run_worker(arts[name]))
            x = runs[name][-1]["replies"]
            print(f"[bench_pte_vs_llamacpp] round {r + 1}: {name}: decode {x['short']['decode_tok_s']:.1f} tok/s, "
                  f"prefill {x['long']['prefill_tok_s']:.1f} tok/s", file=sys.stderr)

    results, rows = {}, []
    for name, path in arts.items():
        rs = runs[name]
        res = {
            "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "file_mib": path.stat().st_size / 2**20,
            "decode_tok_s": median(x["replies"][c]["decode_tok_s"] for x in rs for c in ("long", "short")),
            "prefill_tok_s_long": median(x["replies"]["long"]["prefill_tok_s"] for x in rs),
            "prompt_tokens_long": rs[0]["replies"]["long"]["prompt_tokens"],
            "prompt_tokens_short": rs[0]["replies"]["short"]["prompt_tokens"],
            "ttft_s_long": median(x["replies"]["long"]["ttft_s"] for x in rs),
            "ttft_s_short": median(x["replies"]["short"]["ttft_s"] for x in rs),
            "peak_rss_mib": median(x["peak_rss_mib"] for x in rs),
            "peak_rss_over_baseline_mib": median(x["peak_rss_mib"] - x["baseline_rss_mib"] for x in rs),
            "load_s": median(x["load_s"] for x in rs),
            "runs": rs,
        }
        results[name] = res
    q40 = results["Q4_0 GGUF (llama.cpp)"]
    for name, res in results.items():
        rows.append([name, round(res["decode_tok_s"], 1), ratio(res["decode_tok_s"], q40["decode_tok_s"]),
                     round(res["prefill_tok_s_long"], 1), ratio(res["prefill_tok_s_long"], q40["prefill_tok_s_long"]),
                     round(res["ttft_s_short"] * 1e3), round(res["ttft_s_long"] * 1e3), round(res["file_mib"], 1),
                     round(res["peak_rss_mib"]), round(res["peak_rss_over_baseline_mib"]), round(res["load_s"], 2)])
    pte = results["8da4w .pte (ExecuTorch)"]
    goal = ratio(pte["decode_tok_s"], q40["decode_tok_s"])
    md = (f"SmolLM2-135M-Instruct, {THREADS} threads, n_ctx {MAX_SEQ_LEN}, greedy, up to {MAX_TOKENS} tokens per "
          f"reply; {args.rounds} rounds, one process per (round, artifact), order rotated; medians. Prompts: "
          f"{pte['prompt_tokens_long']} tokens (summarize a WikiText-2 passage) and {pte['prompt_tokens_short']} "
          f"tokens (a short request), through the chat template. Other processes kept {median(busy)} cores busy "
          f"(median, sampled before each run).\n\n"
          + md_table(["artifact", "decode tok/s", "decode vs Q4_0", f"prefill tok/s ({pte['prompt_tokens_long']} tok)",
                      "prefill vs Q4_0", "TTFT short ms", "TTFT long ms", "file MiB", "peak RSS MiB",
                      "peak RSS over baseline MiB", "load s"], rows)
          + "\n\n" + md_table(["goal", "value", "met"], [
              [f"8da4w decode >= {GOAL}x llama.cpp Q4_0", goal, "yes" if goal and goal >= GOAL else "NO"]])
          + "\n\nPeak RSS is the process's high-water mark (Python, torch and the runtime included); 'over "
          "baseline' subtracts the resident set measured just before the engine was opened.\n")
    bench.write({"threads": THREADS, "n_ctx": MAX_SEQ_LEN, "max_tokens": MAX_TOKENS, "rounds": args.rounds,
                 "busy_cores_per_run": busy, "results": results, "pte_vs_q4_0_decode": goal,
                 "goal": {"pte_vs_q4_0_decode": GOAL}}, md)
    print(md)


if __name__ == "__main__":
    main()
