"""bench_quality_per_byte_pte's report: one row per scored artifact, the goal table (each program against every
GGUF within 5% of its size; the GGUF half's goals on this text), the chart, the JSON and the markdown."""
from __future__ import annotations

import json

from bench_quality import N_CTX
from bench_quality_per_byte import THREADS
from common import loadavg, md_table, median
from quality_chart import draw


def report(args, bench, done, speeds):
    rows = []
    for name, q in done.items():
        if name.startswith("_"):
            continue
        w, d = q["wikitext2"], q["dailydialog"]
        size = q.get("bytes") or q.get("plan_bytes")
        rows.append({"name": name, "bytes": size, "mib": size / 2**20 if size else None, "chunks": w["sequences"],
                     "dialogues": d["sequences"], "wiki_kld": w["mean_kld"], "wiki_top1": w["top1_agreement"],
                     "wiki_ppl": w["ppl"], "dd_kld": d["mean_kld"], "dd_top1": d["top1_agreement"], "dd_ppl": d["ppl"],
                     "decode_tok_s": median(speeds[name]) if name in speeds else None,
                     "decode_runs": speeds.get(name), "how": "ExecuTorch" if name.endswith("(.pte)") else
                     "llama.cpp" if name.endswith("(GGUF)") or name.startswith("llama.cpp") else "torchao eager",
                     **{k: q[k] for k in ("plan_counts", "predicted_kld", "sensitivity_s", "levers", "export",
                                          "prepare_s", "program", "eager_row", "eval_s") if k in q}})
    goals = {}
    for p in (r for r in rows if r["how"] == "ExecuTorch"):
        same = [g for g in rows if g["how"] == "llama.cpp" and abs(p["bytes"] / g["bytes"] - 1) <= 0.05]
        if not same:
            goals[f"{p['name']}: a GGUF within 5% of its {p['mib']:.1f} MiB"] = {"value": p["mib"], "limit": None,
                                                                                 "met": False}
        for g in same:
            tag = f"{p['name']} vs {g['name']} ({p['mib']:.1f} vs {g['mib']:.1f} MiB)"
            goals[f"{tag}: mean KLD <= 1.5x {g['wiki_kld']:.4f}"] = {
                "value": p["wiki_kld"], "limit": 1.5 * g["wiki_kld"], "met": p["wiki_kld"] <= 1.5 * g["wiki_kld"]}
            if p["decode_tok_s"] and g["decode_tok_s"]:
                goals[f"{tag}: decode >= 0.8x {g['decode_tok_s']:.1f} tok/s"] = {
                    "value": p["decode_tok_s"], "limit": 0.8 * g["decode_tok_s"],
                    "met": p["decode_tok_s"] >= 0.8 * g["decode_tok_s"]}
    by = {r["name"]: r for r in rows}
    for theirs, limit in (("llama.cpp Q4_0", 0.15), ("llama.cpp Q4_K_M", 0.029)):  # the GGUF half's goals, on this text
        ours = min((r for r in rows if r["how"] == "llama.cpp" and r["name"].startswith("edgechat")
                    and theirs in by and abs(r["bytes"] / by[theirs]["bytes"] - 1) <= 0.01),
                   key=lambda r: r["wiki_kld"], default=None)
        if ours:
            t = by[theirs]
            goals[f"GGUF: {ours['name']} at {theirs}'s size: mean KLD <= half its {t['wiki_kld']:.4f} and <= {limit}"] = {
                "value": ours["wiki_kld"], "limit": min(t["wiki_kld"] / 2, limit),
                "met": ours["wiki_kld"] <= min(t["wiki_kld"] / 2, limit)}
    if args.source:  # a smoke run on another model: the committed SmolLM2 results stay as they are
        print(md_table(["artifact", "MiB", "chunks", "WikiText-2 KLD", "decode tok/s"],
                       [[r["name"], r["mib"] or "-", r["chunks"], r["wiki_kld"], r["decode_tok_s"] or "-"] for r in rows]))
        print(json.dumps(goals, indent=1))
        return
    png = draw(rows)
    doc = {"threads": THREADS, "n_ctx": N_CTX, "chunks": args.chunks, "dialogues": args.dialogues,
           "program_chunks": args.program_chunks, "program_dialogues": args.program_dialogues,
           "qat_steps": args.qat_steps, "budgets_mib": args.budget_mib, "rows": rows, "goals": goals,
           "decode_loadavg": done.get("_speeds_load"), "chart": png.name, "loadavg_end": loadavg()}
    md = (f"SmolLM2-135M-Instruct against the fp32 reference (torch), {THREADS} thread. WikiText-2: `chunks` x {N_CTX} "
          f"tokens; DailyDialog: assistant turns of `dialogues` test dialogues. 'how': torchao eager = the quantized "
          f"export module run by torch (no lowering; MiB = the plan's predicted file), ExecuTorch = the written program "
          f"(scored through its forward_all method: batch kernels), llama.cpp = the GGUF. Decode: median of "
          f"{args.rounds} interleaved rounds of {args.tokens} tokens (load average at the end of the decode rounds: "
          f"{done.get('_speeds_load')}).\n\n"
          + md_table(["artifact", "how", "MiB", "chunks", "WikiText-2 KLD", "top-1", "PPL", "dialogues",
                      "DailyDialog KLD", "top-1", "PPL", "decode tok/s"],
                     [[r["name"], r["how"], r["mib"] or "-", r["chunks"], r["wiki_kld"], r["wiki_top1"], r["wiki_ppl"],
                       r["dialogues"], r["dd_kld"], r["dd_top1"], r["dd_ppl"], r["decode_tok_s"] or "-"] for r in rows])
          + "\n\n" + md_table(["goal", "value", "limit", "met"],
                              [[k, v["value"], v["limit"] if v["limit"] is not None else "-",
                                "yes" if v["met"] else "NO"] for k, v in goals.items()])
          + "\n\nPlans (per-module choices; sensitivity pass + levers, s): "
          + "; ".join(f"{r['name']}: {r['plan_counts']} ({r['sensitivity_s']} s)" for r in rows if "plan_counts" in r)
          + "\n\nPrograms (types read back from the file; export wall s): "
          + "; ".join(f"{r['name']}: {r['program']} ({r['export'].get('wall_s')} s)" for r in rows if "program" in r)
          + f"\n\n![chart]({png.name})\n")
    bench.write(doc, md)
