"""A profiling run of the default artifacts on `host`, through the real CLI: SmolLM2-135M-Instruct at Q4_K_M and
Q8_0 (what `make demo` converts), interleaved on MT-Bench first questions (both turns), writing profile.json,
profile.csv, profile.md and profile.png under benchmarks/results/profile_host/ (the README's example), and
bench_profile_host.json/.md with the command and the machine's load.

    .venv/bin/python benchmarks/bench_profile_host.py [--runs 3] [--max-prompts 4] [--max-tokens 64]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, PYTHON, RESULTS, ROOT, Bench, artifact, cached_convert  # noqa: E402

OUT = RESULTS / "profile_host"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-prompts", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, help="engine threads (default: the host profile's, all cores)")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="wait up to this many seconds for other processes to go quiet first")
    ap.add_argument("--fresh", action="store_true")
    args = ap.parse_args()
    bench = Bench("bench_profile_host")

    from edgechat.probes.machine_load import wait_for_quiet

    out = cached_convert(["q4_k_m", "q8_0"], fresh=args.fresh)
    arts = [artifact(out, "q4_k_m"), artifact(out, "q8_0")]
    mt = DATA / "mt_bench" / "mt_bench_question.jsonl"
    prompts = ["--prompts", "mtbench", "--max-prompts", str(args.max_prompts)] if mt.exists() else []
    cmd = [PYTHON, "-m", "edgechat.cli", "profile", *map(str, arts), "--target", "host", *prompts,
           "--runs", str(args.runs), "--max-tokens", str(args.max_tokens), "-o", str(OUT)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    quiet = wait_for_quiet(args.wait_quiet) if args.wait_quiet else None
    env = {**os.environ, "COLUMNS": "160", "EDGECHAT_MTBENCH": str(mt)}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"edgechat profile failed ({proc.returncode}):\n{proc.stderr}")
    print(proc.stdout, proc.stderr, file=sys.stderr)
    result = json.loads((OUT / "profile.json").read_text())
    shown = " ".join(Path(c).name if str(c).startswith(str(ROOT.parent)) and c.endswith(".gguf") else
                     os.path.relpath(c, ROOT) if str(c).startswith(str(ROOT)) else str(c) for c in cmd[1:])
    summary = {r["artifact"]: {"tg_tok_s_mean": r["decode_tok_s"]["mean"], "tg_tok_s_sd": r["decode_tok_s"]["sd"],
                               "tg_tok_s_estimated": (r.get("estimate") or {}).get("decode_tok_s"),
                               "pp_tok_s_mean": r["prefill_tok_s"]["mean"], "ttft_ms_mean": r["ttft_s"]["mean"] * 1e3,
                               "j_per_token_mean": r["j_per_token"]["mean"], "peak_rss_mb": r["peak_rss_mb"]}
               for r in result["results"]}
    md = (f"`python {shown}` (artifacts from benchmarks/.cache), writing [profile_host/](profile_host/): "
          "profile.json, profile.csv, profile.md and the chart below.\n\n"
          + (OUT / "profile.md").read_text() + "\n![profile chart](profile_host/profile.png)\n")
    bench.write({"profile_command": shown, "outputs": sorted(p.name for p in OUT.iterdir()),
                 "waited_for_quiet": quiet, "machine_load": result["machine"], "summary": summary}, md)


if __name__ == "__main__":
    main()
