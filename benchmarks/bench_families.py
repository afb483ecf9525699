"""Model families: the README's support table, and conversion time HF dir -> Q4_K_M vs llama.cpp's own tools.

Each family is a tiny random checkpoint saved by transformers (tests/family_checkpoints.py: a real byte-level BPE
tokenizer, the family's own chat template; the same checkpoints the tests use).

Support, per family, the largest logit difference from transformers over an 80-token prompt (past the sliding
windows of 8 and the original contexts of 32) of: the torch model; the F32 GGUF run by llama.cpp (F32 KV cache);
its Q4_K_M; the F32 GGUF read back into torch; the fp32 .pte (a 40-token prefill, then 16 decode steps); the HF
write-back run by transformers; the pruned model (depth and width) written as HF (transformers vs torch) and
GGUF (llama.cpp vs transformers), with its parameter count; and whether one conversation gives the same prompt
ids on torch, llama.cpp and ExecuTorch. Where edgechat refuses an engine, the refusal is the cell.

Time, per family: `edgechat convert HFDIR -o OUT --quant q4_k_m --no-imatrix --no-eval --threads 2` (a
subprocess) vs llama.cpp's `convert_hf_to_gguf.py HFDIR --outtype f32` (a subprocess, the script of the
llama.cpp that llama-cpp-python 0.3.36 vendors, with the pre-tokenizer named: its hash table does not know these
tiny trained tokenizers) + llama_model_quantize(Q4_K_M, 2 threads) in this process; rounds interleaved,
medians. Then both Q4_K_M files and both F32 files are compared tensor by tensor (bench_convert_time.compare_gguf).

    .venv/bin/python benchmarks/bench_families.py [--rounds 3] [--readme]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_convert_time as bct  # noqa: E402
from common import EDGECHAT, PYTHON, THREADS, Bench, median, rotate, summary  # noqa: E402
from families_report import FAMILIES, support_table, time_table, write_readme  # noqa: E402

GGUF_TWIN = {"mistral": "mistral_nowindow"}  # a GGUF is refused with the window: its windowless twin is measured
PTE_SEQ, PREFILL, DECODE = 64, 40, 16
SDIST = Path("/tmp/lcp")  # where the llama-cpp-python sdist may already be unpacked
# llama.cpp's converter, told the pre-tokenizer edgechat detected (its hash table knows only released tokenizers)
SHIM = ("import runpy, sys; from pathlib import Path; s = Path(sys.argv[1]); "
        "sys.path[:0] = [str(s.parent), str(s.parent / 'gguf-py')]; from conversion import base; "
        "pre = sys.argv[2]; base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre; "
        "sys.argv = [str(s), *sys.argv[3:]]; runpy.run_path(str(s), run_name='__main__')")


def prompt(model, n=80):
    import torch

    return torch.randint(3, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(0)).tolist()


def hf_logits(path, ids):
    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].numpy(), hf.num_parameters()


def err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def pte_of(src: Path, out: Path) -> Path:
    from edgechat.app.pipeline import ConvertOptions, convert
    from edgechat.reports.progress import Steps

    with Steps(enabled=False) as steps:
        convert(src, out, ConvertOptions(formats=["pte"], quants=["fp32"], evaluate=False,
                                         extra={"max_seq_len": PTE_SEQ}), steps)
    return next(out.glob("*.pte"))


def refusal(name: str, model, src: Path, work: Path) -> str | None:
    """The one-line refusal of a feature this family's engines cannot all run (a variant of its config)."""
    import dataclasses

    from converters.gguf_writer import write_gguf
    from edgechat.core import archs
    from edgechat.core.errors import EdgechatError

    cfg, hf = model.config, json.loads((src / "config.json").read_text())
    variants = {  # name: what the variant is, and the step that refuses it
        "llama3": ("a `yarn` RoPE", lambda: archs.config_from_hf({**hf, "rope_parameters": {"rope_type": "yarn", "factor": 4.0}})),
        "qwen3": ("`use_sliding_window`", lambda: archs.config_from_hf({**hf, "use_sliding_window": True, "sliding_window": 8})),
        "mistral": ("GGUF with the window", lambda: write_gguf(model, work / "refused.gguf")),
        "smollm3": ("GGUF of a depth-pruned layer pattern", lambda: write_gguf(
            dataclasses.replace(model, config=cfg.keep_layers([0, 1, 3])), work / "refused.gguf")),
        "phi3": ("GGUF with a sliding window", lambda: write_gguf(
            dataclasses.replace(model, config=cfg.replace(sliding_window=16)), work / "refused.gguf")),
        "gemma3": ("GGUF with query_pre_attn_scalar != head_dim", lambda: write_gguf(
            dataclasses.replace(model, config=cfg.replace(query_pre_attn_scalar=2.0 * cfg.head_dim)), work / "refused.gguf")),
    }
    what, step = variants[name]
    try:
        step()
    except EdgechatError as e:
        assert not (work / "refused.gguf").exists(), "a refused GGUF was left behind"
        return f"{what}: {e}"
    return None


def support(name: str, base: Path, work: Path) -> dict:
    from converters.gguf_quantize import quantize_gguf
    from converters.gguf_writer import write_gguf
    from converters.hf_writer import write_hf
    from converters.prune import measure_importance, plan_from_options, prune
    from edgechat.core.errors import EdgechatError
    from edgechat.core.sources import load_model
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from runtimes.pte_engine import PteEngine
    from runtimes.torch_engine import TorchEngine
    from tests.family_checkpoints import build

    src = build(name, base)
    model = load_model(src)
    ids = prompt(model)
    ref, hf_params = hf_logits(src, ids)
    row = {"family": name, "params": model.config.param_count(), "hf_params": hf_params,
           "torch": err(TorchEngine(model).logits_all(ids), ref), "refused": []}
    try:
        f32 = write_gguf(model, work / f"{name}-f32.gguf", "f32")
        gsrc, gmodel, gref = src, model, ref
    except EdgechatError as e:  # measured on the windowless twin
        row["refused"].append(str(e))
        gsrc = build(GGUF_TWIN[name], base)
        gmodel = load_model(gsrc)
        gref = hf_logits(gsrc, ids)[0]
        f32 = write_gguf(gmodel, work / f"{name}-f32.gguf", "f32")
    row["gguf_measured_on"] = gsrc.name
    row["gguf_f32"] = err(LlamaCppEngine(f32, kv_type="f32", logits_all=True, threads=THREADS).logits_all(ids), gref)
    q4 = quantize_gguf(f32, work / f"{name}-q4_k_m.gguf", "q4_k_m", threads=THREADS)
    row["gguf_q4_k_m"] = err(LlamaCppEngine(q4, logits_all=True, threads=THREADS).logits_all(ids), gref)
    row["gguf_read_back"] = err(TorchEngine(load_model(f32)).logits_all(ids), gref)

    pte = PteEngine(pte_of(src, work / f"{name}-pte"))
    seq = ids[:PREFILL] + [5 + i for i in range(DECODE)]
    ref_seq = hf_logits(src, seq)[0]
    outs = [pte.forward(seq[:PREFILL], 0)] + [pte.forward([t], PREFILL + i) for i, t in enumerate(seq[PREFILL:])]
    row["pte_fp32"] = err(np.stack(outs), ref_seq[PREFILL - 1:])

    write_hf(model, work / f"{name}-hf")
    row["hf_out"] = err(hf_logits(work / f"{name}-hf", ids)[0], ref)

    cfg = model.config  # depth where llama.cpp takes any layer pattern; Phi-3 keeps heads x head_dim == hidden
    layers, heads = (0 if name == "smollm3" else 1), (0 if name == "phi3" else cfg.n_rep)
    plan = plan_from_options(cfg, layers=layers, ffn_frac=0.5, heads=heads)
    small = prune(model, plan, measure_importance(model, [prompt(model, 40), prompt(model, 60)[20:]]))
    write_hf(small, work / f"{name}-pruned")
    pref, pparams = hf_logits(work / f"{name}-pruned", ids)
    row["prune"] = {"layers": small.config.num_layers, "ffn": small.config.intermediate_size,
                    "heads": small.config.num_heads, "params": small.config.param_count(), "hf_params": pparams,
                    "torch_vs_transformers": err(TorchEngine(small).logits_all(ids), pref)}
    try:
        pg = write_gguf(small, work / f"{name}-pruned.gguf", "f32")
        row["prune"]["llama_cpp_vs_transformers"] = err(
            LlamaCppEngine(pg, kv_type="f32", logits_all=True, threads=THREADS).logits_all(ids), pref)
    except EdgechatError as e:
        row["prune"]["gguf_refused"] = str(e)

    messages = [{"role": "user", "content": "Hello there, how are you today?"},
                {"role": "assistant", "content": "I am fine, thank you."}, {"role": "user", "content": "The capital of France?"}]
    chat = [TorchEngine(model).chat_format.ids(messages), LlamaCppEngine(f32, threads=THREADS).chat_format.ids(messages),
            pte.chat_format.ids(messages)]
    row["chat_same_ids"] = chat[0] == chat[1] == chat[2]
    row["refusal_probe"] = refusal(name, model, src, work)
    row["chat_prompt_tokens"] = len(chat[0])
    return row


def run_edgechat(hf: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    p = subprocess.run([EDGECHAT, "convert", str(hf), "-o", str(out), "--quant", "q4_k_m", "--no-imatrix", "--no-eval",
                        "--threads", str(THREADS), "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"edgechat convert failed:\n{p.stderr[-2000:]}")
    return {"total_s": time.perf_counter() - t, "file": out / json.loads(p.stdout)["artifacts"][0]["file"]}


def run_llama_cpp(script: Path, hf: Path, out: Path, pre: str) -> dict:
    from converters.gguf_quantize import quantize_gguf

    out.mkdir(parents=True, exist_ok=True)
    f32, q = out / "model-f32.gguf", out / "model-q4_k_m.gguf"
    for f in (f32, q):
        f.unlink(missing_ok=True)
    t0 = time.perf_counter()
    p = subprocess.run([PYTHON, "-c", SHIM, str(script), pre, str(hf), "--outfile", str(f32), "--outtype", "f32"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{p.stderr[-3000:]}")
    t1 = time.perf_counter()
    quantize_gguf(f32, q, "q4_k_m", threads=THREADS)
    t2 = time.perf_counter()
    return {"total_s": t2 - t0, "convert_s": t1 - t0, "quantize_s": t2 - t1, "file": q, "f32": f32}


def conversion(name: str, base: Path, work: Path, script: Path, rounds: int) -> dict:
    import gguf

    from tests.family_checkpoints import build

    hf = build(GGUF_TWIN.get(name, name), base)
    ec_f32 = work / f"{name}-f32.gguf"  # support()'s, written by the same write_gguf as convert's
    pre = gguf.GGUFReader(ec_f32).fields["tokenizer.ggml.pre"].contents()
    sides = {"edgechat": lambda: run_edgechat(hf, work / f"t-{name}-ec"),
             "llama.cpp": lambda: run_llama_cpp(script, hf, work / f"t-{name}-lc", pre)}
    runs = {k: [] for k in sides}
    for r in range(rounds):
        for k in rotate(list(sides), r):
            runs[k].append(sides[k]())
    per_round = [a["total_s"] / b["total_s"] for a, b in zip(runs["edgechat"], runs["llama.cpp"])]
    lc = runs["llama.cpp"][-1]
    return {"family": name, "checkpoint": hf.name, "pre_tokenizer_told": pre,
            "edgechat_s": summary([x["total_s"] for x in runs["edgechat"]]),
            "llama_cpp_s": summary([x["total_s"] for x in runs["llama.cpp"]]),
            "llama_cpp_script_s": summary([x["convert_s"] for x in runs["llama.cpp"]]),
            "time_ratio_edgechat_over_llama_cpp": summary(per_round),
            "q4_k_m": bct.compare_gguf(runs["edgechat"][-1]["file"], lc["file"]),
            "f32": bct.compare_gguf(ec_f32, lc["f32"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--readme", action="store_true", help="write the support table into README.md")
    args = ap.parse_args()
    bench = Bench("bench_families")
    if (SDIST / f"llama_cpp_python-{bct.LLAMA_CPP_PYTHON}").is_dir():
        bct.SDIST_DIR = SDIST
    script = bct.llama_cpp_script()
    work = Path(tempfile.mkdtemp(prefix="edgechat-bench-families-"))
    base = work / "checkpoints"
    rows, times = [], []
    for name in args.families:
        rows.append(support(name, base, work))
        print(f"{name}: {json.dumps({k: v for k, v in rows[-1].items() if k != 'prune'})}", file=sys.stderr)
    for name in args.families:
        times.append(conversion(name, base, work, script, args.rounds))
        t = times[-1]
        print(f"{name}: edgechat {t['edgechat_s']['median']:.1f}s, llama.cpp {t['llama_cpp_s']['median']:.1f}s, "
              f"Q4_K_M {t['q4_k_m']['n_identical_bytes']}/{t['q4_k_m']['n_common']} identical", file=sys.stderr)
    block = (support_table(rows) + "\n\nRefused by name (one line; the CLI exits 2 and writes nothing), one variant "
             "per family:\n\n" + "".join(f"- {FAMILIES[r['family']]}: {r['refusal_probe']}\n" for r in rows))
    ratios = [t["time_ratio_edgechat_over_llama_cpp"]["median"] for t in times]
    md = ("Tiny random checkpoints of each family (tests/family_checkpoints.py). Support: the largest logit "
          "difference from transformers (80-token prompt; the .pte over a 40-token prefill and 16 decode steps).\n\n"
          + block + "\n"
          + f"Conversion HF dir -> Q4_K_M, {THREADS} threads, {args.rounds} interleaved rounds per family, medians "
            f"(edgechat with --no-imatrix, as llama-quantize without an imatrix). Median of the families' time ratios "
            f"edgechat / llama.cpp: {median(ratios):.3f}.\n\n" + time_table(times) + "\n\n"
          + "Metadata (F32 files; tensors aside), keys only in edgechat's / only in llama.cpp's / with other values:\n\n"
          + "".join(f"- {t['family']}: {', '.join(t['f32']['metadata_only_in_a']) or 'none'} / "
                    f"{', '.join(t['f32']['metadata_only_in_b']) or 'none'} / "
                    f"{', '.join(t['f32']['metadata_differing']) or 'none'}\n" for t in times))
    bench.write({"rounds": args.rounds, "threads": THREADS, "llama_cpp_script": str(script), "support": rows,
                 "conversion": times}, md)
    if args.readme:
        write_readme(block)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
