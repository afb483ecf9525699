"""The quality-per-byte chart (bench_quality_per_byte.png, shown in the README): mean KLD against file size and
against decode tokens/s, llama.cpp's own files marked, edgechat's GGUF plans and .pte programs, and the points
later benchmarks measured (from their committed results)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from common import RESULTS


def chart(rows: list[dict], path: Path, pte: list[dict] | None = None, note: str = "") -> None:
    """GGUF rows (llama.cpp's own files marked) and, from bench_quality_per_byte_pte, .pte rows (green); `note`
    goes under the title (which text each point was scored on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, xlabel in ((axes[0], "mib", "file size (MiB)"), (axes[1], "decode_tok_s", "decode tokens/s (1 thread)")):
        for r in rows:
            if r.get(key) is None:  # a point measured for size and quality only
                continue
            ours = r["name"].startswith("edgechat")
            ax.scatter(r[key], r["wiki_kld"], marker="o" if ours else "s", s=60,
                       color="tab:blue" if ours else "tab:red", zorder=3)
            ax.annotate(r["name"].replace("edgechat ", ""), (r[key], r["wiki_kld"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        for r in pte or []:
            if r.get(key) is None:
                continue
            program = r["how"] == "ExecuTorch"
            ax.scatter(r[key], r["wiki_kld"], marker="^", s=60 if program else 30, zorder=3,
                       color="tab:green" if program else "none", edgecolors="tab:green")
            label = re.sub(r" \((?:default|8-bit|\.pte)[^)]*\)", "", r["name"])  # the short name on the chart
            ax.annotate(label, (r[key], r["wiki_kld"]), fontsize=6, color="tab:green",
                        xytext=(4, -8), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean KLD vs fp32 (WikiText-2)")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].scatter([], [], marker="s", color="tab:red", label="llama.cpp's own files")
    axes[0].scatter([], [], marker="o", color="tab:blue", label="edgechat GGUF")
    if pte:
        axes[0].scatter([], [], marker="^", color="tab:green", label="edgechat .pte (ExecuTorch)")
        axes[0].scatter([], [], marker="^", color="none", edgecolors="tab:green",
                        label=".pte variant, torchao eager (predicted size)")
    axes[0].legend(loc="upper right", fontsize=7)
    fig.suptitle("SmolLM2-135M-Instruct GGUF" + (" and .pte" if pte else "") + ": quality per byte and per decode speed"
                 + (f"\n{note}" if note else ""), fontsize=10 if note else None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)




def draw(rows: list[dict], later: tuple[list[dict], list[dict]] = ([], [])) -> Path:
    """bench_quality_per_byte.png: the GGUF rows of bench_quality_per_byte (with this run's figures where it scored
    a file on more text), this run's .pte rows, and `later`'s (GGUF, .pte) points measured by other benchmarks."""
    png = RESULTS / "bench_quality_per_byte.png"
    gguf_doc = json.loads((RESULTS / "bench_quality_per_byte.json").read_text())
    gguf_rows = [{"chunks": gguf_doc["chunks"], **r} for r in gguf_doc["rows"]]
    here = {r["name"].removesuffix(" (GGUF)"): r for r in rows if r["how"] == "llama.cpp"}
    for g in gguf_rows:  # the files this run scored on more text and timed again: its figures
        if g["name"] in here and here[g["name"]]["chunks"] > g.get("chunks", 0):
            g.update({k: here[g["name"]][k] for k in ("wiki_kld", "decode_tok_s", "chunks")})
    pte = [r for r in rows if r["mib"] and r["how"] != "llama.cpp"] + later[1]
    chunks = sorted({r["chunks"] for r in gguf_rows + later[0] + pte if "chunks" in r})
    chart(gguf_rows + later[0], png, pte=pte,
          note=f"mean KLD on WikiText-2 chunks of 512 ({' or '.join(map(str, chunks))} per point: see the tables)")
    return png


def later_points() -> tuple[list[dict], list[dict]]:
    """Points measured after this benchmark's run, from their committed results: the GGUF --size-mib plans of the
    default 8 x 128 sensitivity pass (bench_sensitivity_calib*), the --share-tied programs (bench_pte_tied_program*)
    and the QAT program (bench_pte_qat_program). Their
    decode was not timed on 1 thread like the chart's, so they sit on the size panel only."""
    gguf, pte = [], []
    for f in sorted(RESULTS.glob("bench_sensitivity_calib*.json")):
        doc = json.loads(f.read_text())
        for r in doc["rows"]:
            gguf.append({"name": f"edgechat mixed-{doc['size_mib']:g}mib ({r['variant']} pass)", "mib": r["mib"],
                         "wiki_kld": r["wikitext2"]["mean_kld"], "chunks": r["wikitext2"]["sequences"],
                         "decode_tok_s": None})
    tied = {}  # the --share-tied pairs (.pte + .ptd); a budget's later run (a longer name: -100.57) replaces it
    for f in sorted(RESULTS.glob("bench_pte_tied_program*.json"), key=lambda f: len(f.stem)):
        variant = f.stem.removeprefix("bench_pte_tied_program").lstrip("-").partition("-")[2]  # qat100, ...
        for name, r in json.loads(f.read_text())["rows"].items():
            if name.startswith("--size-mib"):
                label = f"share-tied {name.split()[1]} MiB" + (f" ({variant})" if variant else "")
                tied[label] = {"name": label, "how": "ExecuTorch", "mib": r["bytes"] / 2**20,
                               "wiki_kld": r["wikitext2"]["mean_kld"], "chunks": r["wikitext2"]["sequences"],
                               "decode_tok_s": None}
    pte += tied.values()
    qat = RESULTS / "bench_pte_qat_program.json"
    if qat.exists():
        doc = json.loads(qat.read_text())
        for name, q in doc["quality"].items():
            if "QAT" in name:
                pte.append({"name": name, "how": "ExecuTorch", "mib": doc["files"][name]["bytes"] / 2**20,
                            "wiki_kld": q["wikitext2"]["mean_kld"], "chunks": q["wikitext2"]["sequences"],
                            "decode_tok_s": None})
    return gguf, pte
