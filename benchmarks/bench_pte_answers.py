"""Does a 4-bit .pte keep the assistant's answers? Issue 12 began with the default 8da4w program telling a user
"There are 30 days in a week": short factual questions, each asked alone (greedy, one-sentence system prompt, as
`make demo` asks), to the fp32 model (torch), llama.cpp's own Q4_0 and the programs bench_pte_hqq cached (default
8da4w with HQQ, min/max, and `--qat-steps N` where it was run). A reply counts as right when it contains one of
the question's accepted answers (word match, case-insensitive): a crude judge, which also passes a reply that
names the answer beside a wrong one, so the replies are in the results, to read.

    .venv/bin/python benchmarks/bench_pte_answers.py [--max-tokens 48] [--threads 2]
(run bench_pte_hqq.py first, with --qat-steps for the QAT program; its llama.cpp Q4_0 and HF copy are reused)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, Bench, md_table  # noqa: E402

SYSTEM = "Answer the user's question in one sentence."
QUESTIONS = {  # question -> accepted answers
    "How many days are there in a week?": ["7", "seven"],
    "What is the chemical symbol for water?": ["H2O", "H₂O"],
    "What is the capital of France?": ["Paris"],
    "How many legs does a spider have?": ["8", "eight"],
    "What color is the sky on a clear day?": ["blue"],
    "What is 2 plus 2?": ["4", "four"],
    "Which planet do we live on?": ["Earth"],
    "How many hours are there in a day?": ["24", "twenty-four"],
    "What do bees make?": ["honey"],
    "What is the largest ocean on Earth?": ["Pacific"],
    "What is the freezing point of water in degrees Celsius?": ["0", "zero"],
    "Who wrote Romeo and Juliet?": ["Shakespeare"],
    "What is the capital of Japan?": ["Tokyo"],
    "What is the capital of Italy?": ["Rome"],
    "How many continents are there?": ["7", "seven"],
    "What gas do plants take in from the air?": ["carbon dioxide", "CO2"],
    "What is the largest planet in our solar system?": ["Jupiter"],
    "How many months are there in a year?": ["12", "twelve"],
    "What is the boiling point of water in degrees Celsius?": ["100"],
    "What animal is known as the king of the jungle?": ["lion"],
    "What is the opposite of hot?": ["cold"],
    "How many minutes are in an hour?": ["60", "sixty"],
    "What is the closest star to Earth?": ["Sun"],
    "What language is spoken in Spain?": ["Spanish"],
    "Who painted the Mona Lisa?": ["Leonardo", "da Vinci"],
    "What is 10 times 10?": ["100", "one hundred"],
    "What do cows drink?": ["water"],
    "How many sides does a triangle have?": ["3", "three"],
    "What is the capital of Germany?": ["Berlin"],
    "What is frozen water called?": ["ice"],
}


def right(reply: str, accepted: list[str]) -> bool:
    # "100.0" is 100, "0.69" is not 0
    return any(re.search(rf"(?<![\w.]){re.escape(a)}(?:\.0+)?(?!\w|\.\d)", reply, re.IGNORECASE) for a in accepted)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="bench_pte_answers", help="results file stem")
    args = ap.parse_args()

    import edgechat

    home, llama = CACHE / "pte-hqq", CACHE / "qpb-llama.cpp"
    arts = {"fp32 (torch)": llama / "hf", "llama.cpp Q4_0": llama / "q4_0.gguf",
            "8da4w min/max (--no-hqq)": home / "8da4w-minmax.pte", "8da4w HQQ (the default)": home / "8da4w-hqq.pte",
            **{f"8da4w --qat-steps {p.stem.removeprefix('8da4w-qat')}": p for p in sorted(home.glob("8da4w-qat*.pte"))}}
    missing = [str(p) for p in arts.values() if not p.exists()]
    if missing:
        ap.error(f"missing {', '.join(missing)}: run benchmarks/bench_pte_hqq.py first")
    bench = Bench(args.name)
    out = {}
    for name, path in arts.items():
        chat = edgechat.load(path, threads=args.threads)
        chat.system = SYSTEM
        replies = {}
        for q, accepted in QUESTIONS.items():
            chat.reset()
            text = chat.send(q, max_tokens=args.max_tokens, temperature=0).text.strip()
            replies[q] = {"reply": text, "right": right(text, accepted)}
        chat.engine.close()
        out[name] = {"file": path.name, "right": sum(r["right"] for r in replies.values()), "replies": replies}
        print(f"{name}: {out[name]['right']}/{len(QUESTIONS)}", file=sys.stderr, flush=True)
    n = len(QUESTIONS)
    md = (f"{n} short factual questions, each alone, greedy, system prompt \"{SYSTEM}\", up to {args.max_tokens} "
          f"tokens, {args.threads} threads; right = the reply contains an accepted answer.\n\n"
          + md_table(["artifact", "file", "right", f"of {n}"], [[k, v["file"], v["right"], n] for k, v in out.items()])
          + "\n\n## Replies\n\n" + md_table(["question"] + list(out), [
              [q] + [("" if out[k]["replies"][q]["right"] else "✗ ") + out[k]["replies"][q]["reply"].replace("\n", " ")
                     .replace("|", "/") for k in out] for q in QUESTIONS]) + "\n")
    bench.write({"questions": QUESTIONS, "system": SYSTEM, "max_tokens": args.max_tokens, "artifacts": out}, md)


if __name__ == "__main__":
    main()
