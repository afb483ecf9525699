r"""Would pruning the vocabulary make the 1.2x student of issue 13 without touching the transformer body (and so
without the body-pruned students' loops)? SmolLM2's tied 49,152 x 576 embedding is 21% of its weights and, at
Q4_K_M, a Q8_0 matrix (576-wide rows fall back): the biggest single tensor that each decoded token reads.

For each vocabulary size N it keeps the first N ids (BPE ids come in merge order, so the pieces of every kept
token are kept), the merges among them, and the first N embedding rows; writes Q4_K_M through edgechat's
writer and llama.cpp's quantizer; and measures decode tok/s against the full model's Q4_K_M (llama.cpp, the
same fixed tokens, interleaved rounds, as bench_students) and how many of the full tokenizer's tokens of
held-out text are kept (the rest a trimmed model can neither read whole nor say).

    .venv/bin/python benchmarks/bench_vocab_trim.py               # N = 16384, 24576
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compress import decode_speed, export_q4km  # noqa: E402
from common import CACHE, DATA, THREADS, Bench, md_table  # noqa: E402


def trimmed(model, n: int):
    from edgechat.core.model import Model, build_module
    from edgechat.core.tokenizer import HFTokenizer

    v = model.tokenizer.to_gguf(model.config.vocab_size)
    keep = set(v.tokens[:n])
    merges = [m for m in v.merges if all(p in keep for p in m.split(" ", 1)) and m.replace(" ", "") in keep]
    tok = HFTokenizer.from_gguf(replace(v, tokens=v.tokens[:n], types=v.types[:n], merges=merges))
    cfg = replace(model.config, vocab_size=n)
    sd = model.state_dict()
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:n].clone()
    return Model(cfg, build_module(cfg, sd, f"vocab {n}"), tok, model.chat_template, model.source, f"vocab{n}")


def texts() -> dict[str, list[str]]:
    dd = [t.strip() for ln in (DATA / "dailydialog" / "dialogues_test.txt").read_text().splitlines()
          for t in ln.split("__eou__") if t.strip()]
    mt = [t for ln in (DATA / "mt_bench" / "mt_bench_question.jsonl").read_text().splitlines()
          for t in json.loads(ln)["turns"]]
    wiki = [p for p in (DATA / "wikitext2" / "wiki.test.raw").read_text().split("\n") if p.strip()]
    return {"DailyDialog test turns": dd, "MT-Bench questions": mt, "WikiText-2 test": wiki}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16384,24576", help="comma list of vocabulary sizes")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import gguf

    from edgechat.core.sources import load_model

    bench = Bench("bench_vocab_trim")
    teacher = load_model(None)
    ggufs = {"teacher": export_q4km(teacher, CACHE / "compress" / "teacher")}
    for n in sizes:
        ggufs[f"vocab {n}"] = export_q4km(trimmed(teacher, n), CACHE / "vocab_trim" / str(n))
    ids = {name: [i for t in ts for i in teacher.tokenizer.encode(t, add_bos=False)] for name, ts in texts().items()}
    speed = decode_speed(ggufs, args.rounds, args.tokens)
    rows, res = [], {}
    for k, p in ggufs.items():
        n = teacher.config.vocab_size if k == "teacher" else int(k.split()[1])
        embd = next(t for t in gguf.GGUFReader(p).tensors if t.name == "token_embd.weight")
        x = speed["x_teacher"][k]
        cover = {name: sum(i < n for i in v) / len(v) for name, v in ids.items()}
        res[k] = {"vocab": n, "file_mib": p.stat().st_size / 2**20, "token_embd": [embd.tensor_type.name, embd.n_bytes],
                  "decode_tok_s": speed["tok_s"][k], "decode_x": x, "kept_share": cover}
        rows.append([k, f"{res[k]['file_mib']:.1f}", f"{embd.tensor_type.name}, {embd.n_bytes / 2**20:.1f} MiB",
                     f"{speed['tok_s'][k]:.1f}", f"{x:.3f}"] + [f"{c:.2%}" for c in cover.values()])
    md = (f"SmolLM2-135M-Instruct, Q4_K_M (llama.cpp's quantizer, no importance matrix), the first N token ids "
          f"kept. Decode: llama.cpp, {THREADS} threads, {args.tokens} tokens, median of {args.rounds} interleaved "
          f"rounds ({speed['quiet_rounds']} quiet); x teacher = median of the per-round ratios. Kept: the share of "
          "the full tokenizer's tokens of each text whose id is below N.\n\n"
          + md_table(["model", "file MiB", "token_embd (tied head)", "decode tok/s", "x teacher"]
                     + [f"kept, {name}" for name in ids], rows))
    bench.write({"models": res, "decode": speed}, md)


if __name__ == "__main__":
    main()
