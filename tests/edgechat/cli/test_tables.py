"""Tables a person can read anywhere: `targets list` and `profile` in an 80-column terminal and piped hold
every name and figure uncut (no "1…"), within the width on the terminal, as markdown when piped."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

from rich.console import Console

from tests.conftest import ROOT, run_cli

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def as_terminal(*args, columns=80) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "FORCE_COLOR": "1"}  # rich: a terminal of that width
    proc = subprocess.run([sys.executable, "-m", "edgechat.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300, check=True)
    return ANSI.sub("", proc.stdout)


def target_figures() -> list[list[str]]:
    """name, cores/threads, budget / RAM, CPU GB/s per profile (host's budget is this machine's free memory,
    which moves between two runs: a pattern for it)."""
    profiles = json.loads(run_cli("targets", "list", "--json", check=True).stdout)
    return [[p["name"], f"{p['cpu']['cores']}/{p['cpu']['threads']}",
             r"[0-9.]+ / [0-9.]+" if p["name"] == "host" else
             re.escape(f"{p['memory']['app_budget_gb']:.1f} / {p['memory']['total_gb']:.1f}"),
             f"{p['cpu']['bandwidth_gbs']:.1f}"] for p in profiles]


def test_targets_list_at_80_columns_holds_every_name_and_figure():
    out = as_terminal("targets", "list")
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    first = out[:out.index("└")]  # the figures' table; the long text columns follow in a second one
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in first.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    for name, cores, budget, bandwidth in target_figures():
        got = rows[name]
        assert got[0] == cores and re.fullmatch(budget, got[1]) and got[2] == bandwidth, name
    assert "device" in out[out.index("└"):] and "accelerators" in out[out.index("└"):]


def test_targets_list_piped_is_markdown():
    out = run_cli("targets", "list", check=True).stdout
    lines = out.splitlines()
    assert "| name | cores/threads | app budget / RAM GB | CPU GB/s | device | accelerators |" in lines
    for name, cores, budget, bandwidth in target_figures():
        assert any(re.match(rf"\| {name} \| {cores} \| {budget} \| {bandwidth} \| ", line) for line in lines), name


def test_profile_table_at_80_columns_and_piped(stories_f32_gguf, tmp_path):
    from edgechat.reports.profiling import show

    out_dir = tmp_path / "run"
    piped = run_cli("profile", str(stories_f32_gguf), "--runs", "1", "--max-tokens", "4", "--max-prompts", "1",
                    "--threads", "1", "--power", "estimate", "-o", str(out_dir), check=True).stdout
    result = json.loads((out_dir / "profile.json").read_text())
    r = result["results"][0]
    cells = [r["artifact"], f"{r['decode_tok_s']['mean']:.1f} ± {r['decode_tok_s']['sd']:.1f}",
             f"{r['prefill_tok_s']['mean']:.1f} ± {r['prefill_tok_s']['sd']:.1f}", f"{r['peak_rss_mb']:.0f}"]
    row = next(line for line in piped.splitlines() if line.startswith(f"| {r['artifact']} |"))
    assert all(f"| {c} |" in row or f" {c} |" in row for c in cells), row
    term = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    show(result, out=term)
    text = term.file.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for c in cells:
        assert c in text, c
