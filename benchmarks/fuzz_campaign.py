"""Fuzzing campaign: N mutated inputs per reader (default 20,000) of the GGUF, safetensors, config.json,
tokenizer, recipe and device-profile readers, with the mutators of the test suite (tests/fuzzing.py) over real
files (../shared/data's stories260K, an F32 GGUF written from it, a trained tokenizer.json, a real profile).

Each reader runs in a worker subprocess that reports every input as it finishes; the parent watches it:
  clean     the reader raised the project's error type (EdgechatError; TargetError for profiles)
  accepted  the reader returned; an accepted GGUF is then loaded and run by llama.cpp in the same worker
  unclean   any other exception (a bug: the user would see a traceback)
  crash     the worker died of a signal (a segfault in C/C++/Rust code); the campaign restarts after that input
  hang      no report for --hang-s seconds; the worker is killed and restarted after that input
Input i of reader R is random.Random(f"{R}-{i}"): any one can be replayed alone (--replay R I).

    .venv/bin/python benchmarks/fuzz_campaign.py [--per-reader 20000] [--readers gguf,config] [--hang-s 10]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, PYTHON, ROOT, Bench, md_table

from tests import fuzzing

PROFILE = ROOT / "targets" / "profiles" / "rpi5-8gb.toml"


def prepare(work: Path) -> None:
    """The base files, written once: the stories260K F32 GGUF and a trained byte-level BPE tokenizer.json."""
    from converters.gguf_writer import write_gguf
    from edgechat.core.sources import load_model
    from tests.conftest import make_tokenizer_dir

    write_gguf(load_model(DATA / "stories260K" / "hf"), work / "stories-f32.gguf", "f32")
    make_tokenizer_dir(work / "tokjson")


def cases_for(work: Path) -> fuzzing.Cases:
    return fuzzing.Cases(DATA / "stories260K" / "hf", work / "stories-f32.gguf", work / "tokjson", PROFILE)


def llama_run(path: Path) -> str:
    """llama.cpp on an input edgechat accepted: refusing it is fine, crashing (the worker dies) is not."""
    from runtimes import llama_lib

    llama_cpp = llama_lib.load()  # the variant worker() chose on the intact file
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False)
        llm.eval(llm.tokenize(b"Once upon a time")[:8])
        return "ran"
    except Exception:
        return "refused"


def warm_up() -> None:
    """The readers' imports (torch, gguf-py, tokenizers, ...) before the first input, so that its time is the
    reader's and not Python's."""
    import edgechat.app.recipe  # noqa: F401
    import edgechat.core.load_gguf  # noqa: F401
    import edgechat.core.load_hf  # noqa: F401
    import safetensors.torch  # noqa: F401
    import sentencepiece  # noqa: F401
    import targets.profile  # noqa: F401
    import tokenizers  # noqa: F401


def worker(reader: str, work: Path, start: int, end: int) -> None:
    warm_up()
    cases, read, allowed = cases_for(work), fuzzing.reader(reader), fuzzing.expected_errors(reader)
    if reader == "gguf":
        from runtimes import llama_lib

        llama_lib.load(work / "stories-f32.gguf")  # the CPU variant, chosen on the intact file
    inputs = work / f"in-{reader}"
    inputs.mkdir(exist_ok=True)
    print("ready", flush=True)  # set-up done: from here each input has hang_s
    for i in range(start, end):
        path = cases.make(reader, random.Random(f"{reader}-{i}"), inputs)
        t = time.perf_counter()
        try:
            read(path)
            status = "accepted"
            if reader == "gguf":
                status += ":" + llama_run(path)
        except allowed:
            status = "clean"
        except BaseException as e:  # noqa: B036 -- anything else is what the campaign looks for
            status = f"unclean:{type(e).__name__}"
        print(i, status, f"{time.perf_counter() - t:.6f}", flush=True)


START_S = 600  # the most a worker may take to import and set up (a loaded 2-core machine: a minute or more)
RECYCLE = 2000  # a worker reads this many inputs, then a fresh one takes over (memory stays bounded)


def campaign(reader: str, work: Path, n: int, hang_s: float) -> dict:
    counts = {"clean": 0, "accepted": 0, "unclean": 0, "crash": 0, "hang": 0}
    llama = {"ran": 0, "refused": 0}
    reject_s, bad, t0, next_i = [], [], time.perf_counter(), 0
    while next_i < n:
        proc = subprocess.Popen([PYTHON, __file__, "--worker", reader, "--work", str(work), "--start", str(next_i),
                                 "--end", str(min(n, next_i + RECYCLE))], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                cwd=ROOT)
        # a fresh worker's imports and llama.cpp's CPU-variant probe are not an input's time: wait for "ready"
        started, _, _ = select.select([proc.stdout], [], [], START_S)
        if not started or proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise RuntimeError(f"a {reader} worker did not start within {START_S} s")
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], hang_s)
            if not ready:  # no input finished within hang_s: a hang
                proc.kill()
                proc.wait()
                counts["hang"] += 1
                bad.append({"input": next_i, "kind": "hang"})
                next_i += 1
                break
            line = proc.stdout.readline()
            if not line:  # the worker ended: done, or died on input next_i
                rc = proc.wait()
                if rc != 0:
                    counts["crash"] += 1
                    bad.append({"input": next_i, "kind": "crash", "returncode": rc})
                    next_i += 1
                break
            i, status, secs = line.split()
            kind, _, extra = status.partition(":")
            counts[kind] += 1
            if kind == "clean":
                reject_s.append(float(secs))
            elif kind == "unclean":
                bad.append({"input": int(i), "kind": "unclean", "error": extra})
            elif extra:
                llama[extra] += 1
            next_i = int(i) + 1
    out = {"inputs": n, **counts, "slowest_rejection_s": max(reject_s, default=None),
           "median_rejection_s": statistics.median(reject_s) if reject_s else None,
           "wall_s": round(time.perf_counter() - t0, 1), "bad_inputs": bad[:50]}
    if reader == "gguf":
        out["llama_cpp_on_accepted"] = llama
    return out


def recheck(reader: str, bad: list[dict], hang_s: float) -> None:
    """Each crash or hang again, alone in a fresh process: on a loaded machine a slow input can pass for a hang."""
    for b in bad:
        if b["kind"] == "unclean":
            continue
        try:
            proc = subprocess.run([PYTHON, __file__, "--replay", reader, str(b["input"])], capture_output=True,
                                  text=True, timeout=hang_s, cwd=ROOT)
            b["replayed"] = "refused cleanly" if "EdgechatError" in proc.stderr or "ProfileError" in proc.stderr \
                else ("accepted" if proc.returncode == 0 else f"exit {proc.returncode}")
        except subprocess.TimeoutExpired:
            b["replayed"] = f"hang again (> {hang_s} s)"


def replay(reader: str, i: int, work: Path) -> None:
    path = cases_for(work).make(reader, random.Random(f"{reader}-{i}"), work)
    print(path)
    fuzzing.reader(reader)(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-reader", type=int, default=20000)
    ap.add_argument("--readers", default=",".join(fuzzing.READERS))
    ap.add_argument("--hang-s", type=float, default=30.0, help="An input with no verdict after this long is a hang.")
    ap.add_argument("--replay", nargs=2, metavar=("READER", "I"), help="Rebuild and read one input, in this process.")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--end", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        os.environ.setdefault("RUST_BACKTRACE", "0")
        return worker(args.worker, args.work, args.start, args.end)
    with tempfile.TemporaryDirectory(prefix="fuzz-campaign-") as tmp:
        work = Path(tmp)
        prepare(work)
        if args.replay:
            return replay(args.replay[0], int(args.replay[1]), work)
        bench = Bench("fuzz_campaign")
        results = {}
        for reader in args.readers.split(","):
            results[reader] = campaign(reader, work, args.per_reader, args.hang_s)
            recheck(reader, results[reader]["bad_inputs"], args.hang_s)
            print(reader, json.dumps(results[reader]), file=sys.stderr)
            write(bench, args, results)  # after each reader, so a long campaign keeps what it has


def write(bench, args, results):
    rows = [[r, x["inputs"], x["clean"], x["accepted"], x["unclean"], x["crash"], x["hang"],
             x["slowest_rejection_s"], x["median_rejection_s"], x["wall_s"]] for r, x in results.items()]
    md = md_table(["reader", "inputs", "clean errors", "accepted", "unclean errors", "crashes", "hangs",
                   "slowest rejection s", "median rejection s", "wall s"], rows)
    if "gguf" in results:
        g = results["gguf"]["llama_cpp_on_accepted"]
        md += (f"\n\nAccepted GGUF inputs loaded and run by llama.cpp in the worker: {g['ran']} ran, "
               f"{g['refused']} refused by llama.cpp (a crash would count above).")
    rechecked = [(r, b) for r, x in results.items() for b in x["bad_inputs"] if "replayed" in b]
    if rechecked:
        md += "\n\nCrashes and hangs replayed alone in a fresh process: " + "; ".join(
            f"{r} #{b['input']} ({b['kind']}): {b['replayed']}" for r, b in rechecked) + "."
    bench.write({"per_reader": args.per_reader, "hang_s": args.hang_s, "readers": results}, md)


if __name__ == "__main__":
    main()
