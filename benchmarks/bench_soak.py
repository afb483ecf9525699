"""Soak: a long chat session through the Chat API on SmolLM2-135M-Instruct Q4_K_M, with a small context so the
history overflows (oldest turns dropped, the system message kept) again and again.

Every turn sends the next user turn of the DailyDialog test split; greedy decoding, --max-tokens per reply. After
every reply it checks the reply is well-formed: text is a str that re-encodes as UTF-8 with no replacement
character, completion tokens <= max_tokens, a known stop reason, the prompt within n_ctx, the history alternating
user/assistant after the system message. RSS (VmRSS) is read every --every turns; the goal is a flat line after
warm-up: (max - min) / min of the samples from --warmup turns on, within 5%.

    .venv/bin/python benchmarks/bench_soak.py [--turns 1000] [--n-ctx 160] [--max-tokens 12] [--every 50] [--threads 1]
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

from common import DATA, Bench, artifact, cached_convert, md_table, rss_mb

SYSTEM = "You are a friendly assistant. Answer in one or two sentences."
STOPS = {"eos", "length", "context"}


def user_turns(limit: int) -> list[str]:
    turns = []
    for line in (DATA / "dailydialog" / "dialogues_test.txt").read_text().splitlines():
        turns += [t.strip() for t in line.split("__eou__")[::2] if t.strip()]
        if len(turns) >= limit:
            break
    return turns[:limit]


def check_reply(chat, reply, max_tokens: int, n_ctx: int) -> str | None:
    """None when the reply is well-formed, else what is wrong."""
    if not isinstance(reply.text, str) or "\ufffd" in reply.text:
        return f"text is not clean UTF-8: {reply.text!r:.80}"
    reply.text.encode("utf-8")
    s = reply.stats
    if s.completion_tokens != len(reply.token_ids) or s.completion_tokens > max_tokens:
        return f"{s.completion_tokens} completion tokens, {len(reply.token_ids)} ids, max {max_tokens}"
    if s.stop_reason not in STOPS:
        return f"stop reason {s.stop_reason!r}"
    if s.prompt_tokens + s.completion_tokens > n_ctx:
        return f"prompt {s.prompt_tokens} + reply {s.completion_tokens} > n_ctx {n_ctx}"
    roles = [m["role"] for m in chat.messages]
    if roles[-1] != "assistant" or any(a == b for a, b in zip(roles, roles[1:])):
        return f"history roles {roles}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=1000)
    ap.add_argument("--n-ctx", type=int, default=160, help="Small, so the history overflows every few turns.")
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1, help="The soak measures memory, not speed: one thread keeps "
                    "llama.cpp from spinning against other processes on a shared machine.")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=100, help="Turns before the RSS samples that must be flat.")
    args = ap.parse_args()
    import edgechat

    path = artifact(cached_convert(["q4_k_m"]), "q4_k_m")
    bench = Bench("bench_soak")
    chat = edgechat.load(path, n_ctx=args.n_ctx, threads=args.threads, system=SYSTEM, max_tokens=args.max_tokens)
    prompts = user_turns(args.turns)
    samples, problems, errors, overflows, dropped, stops = [], [], [], 0, 0, {}
    t0 = time.perf_counter()
    for i, text in enumerate(prompts, 1):
        try:
            reply = chat.send(text)
        except Exception as e:  # the goal is none: record and go on, so one error does not hide the rest
            errors.append({"turn": i, "error": f"{type(e).__name__}: {e}"})
            continue
        bad = check_reply(chat, reply, args.max_tokens, args.n_ctx)
        if bad:
            problems.append({"turn": i, "problem": bad})
        if reply.stats.dropped_messages:
            overflows += 1
            dropped += reply.stats.dropped_messages
        stops[reply.stats.stop_reason] = stops.get(reply.stats.stop_reason, 0) + 1
        if i % args.every == 0:
            gc.collect()
            samples.append({"turn": i, "rss_mib": round(rss_mb()["rss_mb"], 1), "elapsed_s": round(time.perf_counter() - t0, 1),
                            "history_messages": len(chat.messages)})
            print(f"turn {i}: RSS {samples[-1]['rss_mib']} MiB, {overflows} overflows", file=sys.stderr)
            write(bench, args, path, prompts[:i], samples, errors, problems, overflows, dropped, stops, t0, done=False)
    write(bench, args, path, prompts[:i], samples, errors, problems, overflows, dropped, stops, t0, done=True)


def write(bench, args, path, prompts, samples, errors, problems, overflows, dropped, stops, t0, done):
    """The results so far (every sample, so a run cut short still leaves its figures), marked complete or not."""
    steady = [s["rss_mib"] for s in samples if s["turn"] >= args.warmup]
    spread = (max(steady) - min(steady)) / min(steady) if steady else None
    results = {"artifact": str(path.name), "turns": len(prompts), "n_ctx": args.n_ctx, "max_tokens": args.max_tokens,
               "threads": args.threads,
               "errors": errors, "malformed_replies": problems, "context_overflows": overflows,
               "messages_dropped": dropped, "stop_reasons": stops, "rss": samples, "rss_spread_after_warmup": spread,
               "rss_flat_within_5pct": spread is not None and spread <= 0.05, "complete": done, "wall_s": round(time.perf_counter() - t0, 1)}
    md = md_table(["turn", "RSS MiB", "elapsed s", "history messages"],
                  [[s["turn"], s["rss_mib"], s["elapsed_s"], s["history_messages"]] for s in samples])
    md += (f"\n\n{'' if done else '(in progress) '}{len(prompts)} turns, n_ctx {args.n_ctx}, max_tokens {args.max_tokens}: {overflows} turns overflowed the "
           f"context ({dropped} messages dropped), {len(errors)} errors, {len(problems)} malformed replies, stop reasons "
           f"{stops}. RSS spread from turn {args.warmup} on: " + (f"{spread:.2%}" if spread is not None else "-") + " (goal <= 5%).")
    bench.write(results, md)


if __name__ == "__main__":
    main()
