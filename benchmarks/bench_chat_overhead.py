"""Chat API overhead: edgechat's Chat over a Q4_K_M GGUF vs raw llama-cpp-python generating the same tokens.

Three sides, each on its own llama_cpp.Llama with identical settings (n_ctx, n_batch=512, 2 threads, F16 KV):
  edgechat   Chat.send(prompt, stream=True), greedy, max_tokens=N (edgechat's llama.cpp engine)
  generate   Llama.generate(prompt_ids, top_k=1, temp=0): llama-cpp-python's own high-level loop
  c-loop     llama_decode + a greedy llama_sampler through the C API (no Python-side logits copy)
All three decode the same prompt ids (edgechat's chat-template rendering); the token ids must agree.

Each round measures two ways:
  sequential   each side generates its N tokens alone (order rotated per round). Decode tok/s by one external
               stopwatch for every side: (N-1) / (time of the last token - time of the first); for edgechat also
               its own Stats.decode_tok_s.
  interleaved  the three generations advance in turn, --chunk tokens at a time (order rotated per chunk), and
               each token step is timed on its own: decode tok/s = (N-1) / (sum of the step times after the
               first). The sides then see the same machine load within a fraction of a second, which matters
               when other processes share the 2 cores. (Chunks, not single tokens: each Llama has its own
               thread pool, and a pool that just finished still spins a moment, slowing the next one.)
Before each round the script waits (up to --quiet-timeout s) until other processes keep fewer than --max-busy
cores busy, and records what it saw before and after the round; medians are given over all rounds and over the
quiet rounds. Ratios are medians of per-round ratios.

    .venv/bin/python benchmarks/bench_chat_overhead.py [--rounds 7] [--tokens 128] [--chunk 16]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (THREADS, Bench, add_interleave_args, artifact, cached_convert, cpu_busy_cores, md_table, median,  # noqa: E402
                    rotate, summary, wait_quiet)

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
N_CTX = 2048
N_BATCH = 512  # what runtimes.llama_cpp_engine.LlamaCppEngine uses
GOAL = 0.97  # edgechat decode tokens/s within 3% of raw llama-cpp-python
SIDES = ["edgechat", "generate", "c-loop"]


def raw_llama(path: Path):
    from runtimes import llama_lib

    llama_cpp = llama_lib.load(path)

    return llama_cpp.Llama(model_path=str(path), n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=THREADS,
                           n_batch=N_BATCH, logits_all=False, type_k=1, type_v=1, verbose=False)


def settings_of(llm) -> dict:
    return {"n_ctx": llm.n_ctx(), "n_batch": llm.n_batch, "n_ubatch": llm.context_params.n_ubatch,
            "threads": llm.n_threads, "threads_batch": llm.n_threads_batch, "type_k": llm.context_params.type_k,
            "type_v": llm.context_params.type_v, "logits_all": llm._logits_all}


class Sides:
    """One generator per side; each next() produces one token (edgechat: one streamed piece)."""

    def __init__(self, path: Path, n: int):
        import edgechat
        from runtimes import llama_lib

        llama_cpp = llama_lib.load(path)

        self.lib, self.n = llama_cpp, n
        self.chat = edgechat.load(path, n_ctx=N_CTX, threads=THREADS, max_tokens=n, temperature=0.0)
        self.gen_llm = raw_llama(path)
        self.c_llm = raw_llama(path)
        self.sampler = llama_cpp.llama_sampler_init_greedy()
        self.settings = {k: settings_of(llm) for k, llm in
                         (("edgechat", self.chat.engine.llm), ("generate", self.gen_llm), ("c-loop", self.c_llm))}
        self.prompt_ids = self.chat.prompt_ids([{"role": "user", "content": PROMPT}])

    def start(self, side: str):
        if side == "edgechat":
            self.chat.reset()
            return self.chat.send(PROMPT, stream=True, max_tokens=self.n)
        if side == "generate":
            self.gen_llm.reset()
            return self.gen_llm.generate(self.prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0)
        return self._c_loop()

    def _c_loop(self):
        lib, ctx, ids = self.lib, self.c_llm._ctx.ctx, self.prompt_ids
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        arr = (lib.llama_token * len(ids))(*ids)
        if lib.llama_decode(ctx, lib.llama_batch_get_one(arr, len(ids))) != 0:
            raise RuntimeError("llama_decode failed on the prompt")
        one = (lib.llama_token * 1)()
        while True:
            tok = lib.llama_sampler_sample(self.sampler, ctx, -1)
            yield tok
            one[0] = tok
            if lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1)) != 0:
                raise RuntimeError("llama_decode failed")

    def finish(self, side: str, gen, ids: list[int]) -> dict:
        """Close a generation after N steps (untimed); the token ids and, for edgechat, its Stats."""
        if side == "edgechat":
            for _ in gen:  # edgechat ends by itself at max_tokens; drain the generator to get last_reply
                pass
            r = self.chat.last_reply
            return {"ids": r.token_ids, "stats_decode_tok_s": r.stats.decode_tok_s,
                    "stats_itl_p50_ms": r.stats.itl_p50_ms, "stop": r.stats.stop_reason}
        gen.close()
        return {"ids": ids}

    def close(self):
        self.lib.llama_sampler_free(self.sampler)
        self.gen_llm.close()
        self.c_llm.close()
        self.chat.engine.close()


def sequential(s: Sides, side: str) -> dict:
    t0 = time.perf_counter()
    gen = s.start(side)
    stamps, ids = [], []
    for tok in gen:
        stamps.append(time.perf_counter())
        ids.append(tok)
        if len(stamps) >= s.n:
            break
    out = s.finish(side, gen, ids)
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    out.update(pieces=len(stamps), ttft_s=stamps[0] - t0, ext_decode_tok_s=(len(stamps) - 1) / (stamps[-1] - stamps[0]),
               itl_p50_ms=gaps[len(gaps) // 2] * 1e3)
    return out


def interleaved(s: Sides, order: list[str], chunk: int) -> dict:
    gens, steps, ids = {}, {k: [] for k in order}, {k: [] for k in order}
    for k in order:  # prefill + first token each
        t = time.perf_counter()
        gens[k] = s.start(k)
        ids[k].append(next(gens[k]))
        steps[k].append(time.perf_counter() - t)
    done, i = 1, 0
    while done < s.n:
        m = min(chunk, s.n - done)
        for k in rotate(order, i):
            for _ in range(m):
                t = time.perf_counter()
                ids[k].append(next(gens[k]))
                steps[k].append(time.perf_counter() - t)
        done, i = done + m, i + 1
    out = {}
    for k in order:
        fin = s.finish(k, gens[k], ids[k])
        dec = sorted(steps[k][1:])
        out[k] = {"ids": fin["ids"], "pieces": len(steps[k]), "ttft_s": steps[k][0],
                  "step_decode_tok_s": len(dec) / sum(dec), "step_p50_ms": dec[len(dec) // 2] * 1e3}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_interleave_args(ap, rounds=7, tokens=128)
    args = ap.parse_args()
    bench = Bench("bench_chat_overhead")

    path = artifact(cached_convert(["q4_k_m"], fresh=args.fresh), "q4_k_m")
    model_bytes = path.stat().st_size
    s = Sides(path, args.tokens)
    base = s.settings["edgechat"]
    assert all(v == base for v in s.settings.values()), f"Llama settings differ: {s.settings}"

    for k in SIDES:  # warm-up: page in the weights, grow buffers
        sequential(s, k)
    seq = {k: [] for k in SIDES}
    inter = {k: [] for k in SIDES}
    load = []
    for r in range(args.rounds):
        q = wait_quiet(args.max_busy, args.quiet_timeout)
        for k in rotate(SIDES, r):
            seq[k].append(sequential(s, k))
        for k, v in interleaved(s, rotate(SIDES, r), args.chunk).items():
            inter[k].append(v)
        q["busy_cores_after"] = cpu_busy_cores(1.0)
        q["quiet"] = q["quiet"] and q["busy_cores_after"] is not None and q["busy_cores_after"] <= args.max_busy
        load.append(q)
        print(f"round {r + 1}/{args.rounds} (others busy {q['busy_cores_before']}/{q['busy_cores_after']} cores): sequential "
              + ", ".join(f"{k} {seq[k][-1]['ext_decode_tok_s']:.1f}" for k in SIDES)
              + " | interleaved " + ", ".join(f"{k} {inter[k][-1]['step_decode_tok_s']:.1f}" for k in SIDES) + " tok/s",
              file=sys.stderr)
    quiet = [i for i, q in enumerate(load) if q["quiet"]]

    ref_ids = seq["c-loop"][0]["ids"]
    same_ids = {k: all(x["ids"] == ref_ids for x in seq[k] + inter[k]) for k in SIDES}
    n_tokens = sorted({len(x["ids"]) for k in SIDES for x in seq[k] + inter[k]})
    pieces = sorted({x["pieces"] for x in seq["edgechat"] + inter["edgechat"]})

    def per_round(runs, metric, a, b):
        return [x[metric] / y[metric] for x, y in zip(runs[a], runs[b])]

    ratio_defs = {
        "interleaved edgechat/generate": per_round(inter, "step_decode_tok_s", "edgechat", "generate"),
        "interleaved edgechat/c-loop": per_round(inter, "step_decode_tok_s", "edgechat", "c-loop"),
        "interleaved generate/c-loop": per_round(inter, "step_decode_tok_s", "generate", "c-loop"),
        "sequential edgechat/generate": per_round(seq, "ext_decode_tok_s", "edgechat", "generate"),
        "sequential edgechat/c-loop": per_round(seq, "ext_decode_tok_s", "edgechat", "c-loop"),
        "sequential edgechat Stats / generate": [x["stats_decode_tok_s"] / y["ext_decode_tok_s"]
                                                 for x, y in zip(seq["edgechat"], seq["generate"])],
        "edgechat Stats / external stopwatch (sequential)": [x["stats_decode_tok_s"] / x["ext_decode_tok_s"]
                                                             for x in seq["edgechat"]],
        # tokens/s from the median token step: robust to the multi-second stalls other processes cause
        "interleaved p50-step edgechat/generate": [y["step_p50_ms"] / x["step_p50_ms"]
                                                   for x, y in zip(inter["edgechat"], inter["generate"])],
        "interleaved p50-step edgechat/c-loop": [y["step_p50_ms"] / x["step_p50_ms"]
                                                 for x, y in zip(inter["edgechat"], inter["c-loop"])],
        "sequential p50-step edgechat/generate": [y["itl_p50_ms"] / x["itl_p50_ms"]
                                                  for x, y in zip(seq["edgechat"], seq["generate"])],
    }
    ratios = ratio_defs
    quiet_ratios = {k: [v[i] for i in quiet] for k, v in ratio_defs.items()}
    use_quiet = len(quiet) >= 3  # enough quiet rounds: the headline comes from them
    head = quiet_ratios if use_quiet else ratios
    headline = median(head["interleaved edgechat/generate"])
    seq_headline = median(head["sequential edgechat/generate"])
    p50_headline = median(head["interleaved p50-step edgechat/generate"])
    sel = quiet if use_quiet else list(range(args.rounds))  # the rounds the table's medians come from
    med = {}
    for k in SIDES:
        si, ss = [inter[k][i] for i in sel], [seq[k][i] for i in sel]
        med[k] = {"interleaved_decode_tok_s": median(x["step_decode_tok_s"] for x in si),
                  "interleaved_step_p50_ms": median(x["step_p50_ms"] for x in si),
                  "sequential_decode_tok_s": median(x["ext_decode_tok_s"] for x in ss),
                  "sequential_itl_p50_ms": median(x["itl_p50_ms"] for x in ss),
                  "stats_decode_tok_s": median(x.get("stats_decode_tok_s") for x in ss),
                  "ttft_s": median(x["ttft_s"] for x in ss)}
    results = {
        "model": path.name, "model_bytes": model_bytes, "prompt": PROMPT, "prompt_tokens": len(s.prompt_ids),
        "tokens": args.tokens, "rounds": args.rounds, "llama_settings": s.settings,
        "same_token_ids": same_ids, "generated_tokens": n_tokens, "edgechat_pieces_per_reply": pieces,
        "edgechat_stop_reason": sorted({x["stop"] for x in seq["edgechat"]}),
        "medians": med,
        "ratios": {k: summary(v) for k, v in ratios.items()},
        "ratios_quiet_rounds": {k: summary(v) for k, v in quiet_ratios.items()},
        "machine_load_per_round": load, "quiet_rounds": len(quiet), "max_busy": args.max_busy,
        "headline_from": "quiet rounds" if use_quiet else "all rounds (fewer than 3 quiet rounds)",
        "chunk": args.chunk,
        "goal": f"edgechat decode tok/s >= {GOAL} x raw llama-cpp-python (Llama.generate), same token ids",
        "goal_met": headline is not None and headline >= GOAL and all(same_ids.values()),
        "goal_met_sequential": seq_headline is not None and seq_headline >= GOAL and all(same_ids.values()),
        "goal_met_p50_step": p50_headline is not None and p50_headline >= GOAL and all(same_ids.values()),
        "runs": {"sequential": {k: [{m: v for m, v in x.items() if m != "ids"} for x in seq[k]] for k in SIDES},
                 "interleaved": {k: [{m: v for m, v in x.items() if m != "ids"} for x in inter[k]] for k in SIDES}},
        "token_ids": ref_ids,
    }
    rows = [[k, med[k]["interleaved_decode_tok_s"], med[k]["interleaved_step_p50_ms"], med[k]["sequential_decode_tok_s"],
             med[k]["stats_decode_tok_s"], med[k]["sequential_itl_p50_ms"], med[k]["ttft_s"] * 1e3, same_ids[k]]
            for k in SIDES]
    md = (f"Model `{path.name}` ({model_bytes / 2**20:.1f} MiB), prompt {len(s.prompt_ids)} tokens (chat template), "
          f"greedy, {args.tokens} new tokens, {args.rounds} rounds (+1 warm-up), medians over {results['headline_from']}. "
          f"Every side has its own "
          f"`llama_cpp.Llama`: n_ctx={base['n_ctx']}, n_batch={base['n_batch']}, n_ubatch={base['n_ubatch']}, "
          f"threads={base['threads']}, KV cache type {base['type_k']}/{base['type_v']} (F16).\n\n"
          f"- interleaved: the three generations advance in turn, {args.chunk} tokens at a time; each token step timed alone; "
          f"decode tok/s = (N-1) / sum of step times after the first.\n"
          f"- sequential: each side generates alone; decode tok/s = (N-1) / (last token time - first token time), "
          f"the same stopwatch for every side; edgechat's own `Stats.decode_tok_s` beside it.\n\n"
          + md_table(["side", "interleaved decode tok/s", "interleaved step p50 ms", "sequential decode tok/s (external)",
                      "edgechat Stats decode tok/s", "sequential ITL p50 ms", "TTFT ms", "same token ids"], rows)
          + "\n\n" + md_table(["ratio (per round)", "median (all rounds)", "min", "max", f"median ({len(quiet)} quiet rounds)"],
                              [[k, v["median"], v["min"], v["max"], results["ratios_quiet_rounds"][k].get("median")]
                               for k, v in results["ratios"].items()])
          + f"\n\nOther processes' load per round (cores busy, before/after; {args.max_busy} or less = quiet): "
          + ", ".join(f"{q['busy_cores_before']}/{q['busy_cores_after']}" for q in load)
          + f". Headline from {results['headline_from']}."
          + f"\n\nGoal: edgechat decode tokens/s within 3% of raw llama-cpp-python (`Llama.generate`; ratio >= {GOAL}) "
            f"with the same token ids: **{'met' if results['goal_met'] else 'NOT met'}** (interleaved ratio "
            f"{headline:.3f}; sequential ratio {seq_headline:.3f}, "
            f"{'met' if results['goal_met_sequential'] else 'not met'} that way; from the median token step, "
            f"interleaved: {p50_headline:.3f}, {'met' if results['goal_met_p50_step'] else 'not met'}). "
            f"Token ids identical on all sides: "
            f"{all(same_ids.values())}.\n")
    bench.write(results, md)
    s.close()


if __name__ == "__main__":
    main()
