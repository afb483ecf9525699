"""The teacher's distillation replies on SmolLM2-135M-Instruct's own GGUF (llama.cpp, greedy, 128 tokens):
one at a time through Chat.send (how edgechat.app.teacher_data made them before, the template prefix reused)
against runtimes.llama_batch's continuous batching at 4 and 16 parallel sequences, interleaved; medians of the
wall times, generated tokens/s, the ratio to one at a time, and how many replies are the same token for token.

    .venv/bin/python benchmarks/bench_teacher_replies.py [--prompts 64] [--rounds 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Bench, interleaved, md_table, median  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64, help="chit-chat first turns to answer")
    ap.add_argument("--tokens", type=int, default=128, help="most tokens a reply (teacher_data's default)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from edgechat.app.chat import Chat
    from edgechat.app.sampling import Sampler, SamplingParams
    from edgechat.app.teacher_data import corpus_prompts, open_teacher_engine
    from edgechat.core.sources import load_model
    from runtimes.llama_batch import generate_many

    bench = Bench("bench_teacher_replies")
    teacher = load_model(None)
    engine = open_teacher_engine(teacher, None, tempfile.mkdtemp())
    chat = Chat(engine, temperature=0.0, max_tokens=args.tokens)
    chat.probes = False
    prompts = corpus_prompts(args.prompts, 0)
    ids = [chat.prompt_ids([{"role": "user", "content": p}]) for p in prompts]
    greedy = [Sampler(SamplingParams())] * len(ids)  # stateless at temperature 0

    def one_at_a_time():
        out = []
        for p in prompts:
            chat.messages = []
            out.append(chat.send(p).token_ids)
        return out

    ways = {"one at a time (Chat.send)": one_at_a_time,
            "batched, 4 sequences": lambda: generate_many(engine, ids, args.tokens, greedy, parallel=4),
            "batched, 16 sequences": lambda: generate_many(engine, ids, args.tokens, greedy, parallel=16)}
    times, outs = interleaved(ways, args.rounds)
    base_k = next(iter(ways))
    tokens = {k: sum(len(o) for o in v) for k, v in outs.items()}
    rows, res = [], {}
    for k in ways:
        same = sum(a == b for a, b in zip(outs[k], outs[base_k]))
        res[k] = {"times_s": times[k], "median_s": median(times[k]), "tokens": tokens[k],
                  "tok_s": tokens[k] / median(times[k]), "speedup": median(times[base_k]) / median(times[k]),
                  "same_as_one_at_a_time": same}
        rows.append([k, median(times[k]), tokens[k], res[k]["tok_s"], res[k]["speedup"], f"{same} of {len(ids)}"])
    md = (f"SmolLM2-135M-Instruct's GGUF ({Path(engine.model_path).name}), llama.cpp, {engine.threads} threads; "
          f"{len(ids)} chit-chat first turns answered greedily in at most {args.tokens} tokens; {args.rounds} "
          f"interleaved rounds.\n\n"
          + md_table(["way", "median s", "tokens", "tok/s", "vs one at a time", "replies identical"], rows)
          + "\n\nA reply that differs does so where batched kernels round differently from one-token ones and "
            "two candidates are within rounding.\n")
    engine.close()
    bench.write({"prompts": len(ids), "tokens_max": args.tokens, "threads": engine.threads, "ways": res}, md)


if __name__ == "__main__":
    main()
