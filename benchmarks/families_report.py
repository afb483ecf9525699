"""bench_families' tables: the families it measures, the support table (also written into the README between
its markers) and the conversion-time table."""
from __future__ import annotations

import re

from common import ROOT, md_table

FAMILIES = {"llama3": "Llama 3.x (`LlamaForCausalLM`, `llama3` RoPE)", "qwen3": "Qwen3 (`Qwen3ForCausalLM`)",
            "mistral": "Mistral (`MistralForCausalLM`, sliding window 8)", "smollm3": "SmolLM3 (`SmolLM3ForCausalLM`)",
            "phi3": "Phi-3/3.5/4-mini (`Phi3ForCausalLM`, `longrope`, partial rotary)",
            "gemma3": "Gemma 3 text (`Gemma3ForCausalLM`)"}
README_START, README_END = "<!-- bench_families table: start -->", "<!-- bench_families table: end -->"


def differing(cmp: dict) -> str:
    names = [n for n, t in cmp["tensors"].items() if not t["identical_bytes"]]
    kinds = sorted({re.sub(r"^blk\.\d+\.", "blk.N.", n) for n in names})
    extra = cmp["only_in_a"] + cmp["only_in_b"]
    return (", ".join(kinds) or "none") + (f"; only in one: {', '.join(extra)}" if extra else "")


def e(x) -> str:
    return "0" if x == 0 else f"{x:.0e}"


def support_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        p = r["prune"]
        gguf = f"{e(r['gguf_f32'])}" + (f" (on `{r['gguf_measured_on']}`: refused with the window)" if r["refused"] else "")
        pruned = (f"{p['layers']}L/ffn {p['ffn']}/{p['heads']}h, {p['params']:,} params (transformers {p['hf_params']:,}): "
                  f"torch {e(p['torch_vs_transformers'])}, llama.cpp "
                  + (e(p["llama_cpp_vs_transformers"]) if "llama_cpp_vs_transformers" in p else "refused"))
        out.append([FAMILIES[r["family"]], e(r["torch"]), gguf, e(r["gguf_q4_k_m"]), e(r["gguf_read_back"]),
                    e(r["pte_fp32"]), e(r["hf_out"]), pruned, "same ids" if r["chat_same_ids"] else "DIFFERENT ids"])
    return md_table(["family (HF architecture)", "load: torch", "F32 GGUF: llama.cpp", "Q4_K_M: llama.cpp",
                     "GGUF read back: torch", "fp32 .pte", "HF out: transformers", "prune (depth+width)",
                     "chat: torch/llama.cpp/ExecuTorch"], out)


def time_table(rows: list[dict]) -> str:
    return md_table(["family", "edgechat s (median)", "llama.cpp s (median)", "ratio (median per round)",
                     "Q4_K_M identical tensors", "Q4_K_M tensors differing", "F32 identical tensors", "F32 tensors differing"],
                    [[r["family"], r["edgechat_s"]["median"], r["llama_cpp_s"]["median"],
                      r["time_ratio_edgechat_over_llama_cpp"]["median"],
                      f"{r['q4_k_m']['n_identical_bytes']}/{r['q4_k_m']['n_common']}", differing(r["q4_k_m"]),
                      f"{r['f32']['n_identical_bytes']}/{r['f32']['n_common']}", differing(r["f32"])] for r in rows])


def write_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + table.rstrip() + "\n" + text[end:])
