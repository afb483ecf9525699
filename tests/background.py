"""The suite's slowest fixtures, built in one background process chain while the tests before them run.

torch.export and ExecuTorch's lowering are single-threaded Python: the suite keeps about one of the two cores
busy, and the SmolLM2 8da4w export alone takes two to four minutes. Once collection shows which of these
fixtures the selected tests need, they are built one after another in a subprocess (the real CLI where it
can make them, this module's `python -m tests.background` where it cannot), each into the session's base
temp dir; a fixture waits for its own job. Each job is one subprocess, so a failure is reported with its
stderr, and a fixture whose job was never started (a test run on its own) starts it and waits."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORIES = ROOT.parent / "shared" / "data" / "stories260K" / "hf"
CLI = [sys.executable, "-m", "edgechat.cli"]
TUNE_EVAL = ROOT / "tests" / "fixtures" / "tune" / "eval.jsonl"  # two stories260K-style chats


def tiny_gpu_phone(d: Path) -> Path:
    """pixel8 with a Mali budget of 0.9 MB: with n_ctx 64, room for stories260K's buffers and two layers."""
    from targets.profile import PROFILES_DIR

    text = (PROFILES_DIR / "pixel8.toml").read_text().replace('name = "pixel8"', 'name = "tiny-gpu-phone"')
    path = d / "tiny-gpu-phone.toml"
    path.write_text(text.replace("memory_budget_gb = 2.0", "memory_budget_gb = 0.0009", 1))
    return path


# name -> (the fixture that needs it, argv for an output directory); the order is the order tests need them in
JOBS = {
    "smollm2-8da4w": ("smol_8da4w", lambda out: CLI + [
        "convert", "-o", str(out), "--format", "pte", "--quant", "8da4w", "--max-seq-len", "512", "--no-eval"]),
    # stories260K's .pte budget plans (tests/converters/test_pte_mixed.py): AWQ with two QAT steps, and HQQ
    "pte-mixed-awq-qat": ("mixed_out", lambda out: CLI + [
        "convert", str(STORIES), "-o", str(out), "--format", "pte", "--size-mib", "0.3", "--max-seq-len", "64",
        "--awq", "--qat-steps", "2", "--no-eval"]),
    "pte-mixed-hqq": ("hqq_out", lambda out: CLI + [
        "convert", str(STORIES), "-o", str(out), "--format", "pte", "--size-mib", "0.3", "--max-seq-len", "64",
        "--hqq", "--no-eval"]),
    # the tied matrix held once (tests/converters/test_pte_tied.py): 8da8w and a budget plan with --share-tied,
    # and the same 8da8w program holding it twice
    "pte-tied": ("tied_out", lambda out: CLI + [
        "convert", str(STORIES), "-o", str(out), "--format", "pte", "--quant", "8da8w", "--size-mib", "0.3",
        "--max-seq-len", "64", "--share-tied", "--no-eval"]),
    "pte-apart": ("apart_out", lambda out: CLI + [
        "convert", str(STORIES), "-o", str(out), "--format", "pte", "--quant", "8da8w", "--max-seq-len", "64",
        "--no-eval"]),
    "vulkan": ("vulkan_artifact", lambda out: [sys.executable, "-m", "tests.background", "vulkan", str(out),
                                               str(STORIES)]),
    "coreml": ("coreml_convert", lambda out: CLI + [
        "convert", str(STORIES), "-o", str(out), "--target", "iphone15pro", "--format", "pte", "--quant", "fp32",
        "--on", "Neural Engine", "--max-seq-len", "64", "--no-eval"]),
    # tune's .pte candidates (tests/edgechat/cli/test_tune.py): an 8da8w program and a --share-tied plan
    "tune-pte": ("tuned_pte", lambda out: CLI + [
        "tune", str(STORIES), "-o", str(out), "--format", "pte", "--quant", "8da8w", "--bpw", "10.5", "--share-tied",
        "--max-mib", "0.36", "--target", "rpi5-8gb", "--budget-minutes", "0", "--eval-data", str(TUNE_EVAL),
        "--prompts", "3", "--runs", "1"]),
}


class Jobs:
    def __init__(self):
        self.base: Path | None = None
        self.done: dict[str, threading.Event] = {}
        self.errors: dict[str, str] = {}
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.stopped = False

    def out(self, name: str) -> Path:
        return self.base / f"bg-{name}"

    def start(self, base: Path, fixtures: set[str]) -> None:
        """In JOBS order, the jobs whose fixture a selected test uses."""
        self.base = base
        names = [n for n, (fixture, argv) in JOBS.items() if fixture in fixtures
                 and (STORIES.exists() or str(STORIES) not in argv(base))]  # without the data their tests skip
        with self.lock:
            for n in names:
                self.done[n] = threading.Event()
        if names:
            threading.Thread(target=lambda: [self._run(n) for n in names], daemon=True).start()

    def _run(self, name: str) -> None:
        if self.stopped:
            self.errors[name] = "the session ended first"
        else:
            with subprocess.Popen(JOBS[name][1](self.out(name)), cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) as self.proc:
                _, err = self.proc.communicate()
            if self.proc.returncode != 0:
                self.errors[name] = f"exit {self.proc.returncode}:\n{err[-4000:]}"
        self.done[name].set()

    def stop(self) -> None:
        """At the end of the session: a job still running (its tests failed or were cut short) is ended."""
        self.stopped = True
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()

    def wait(self, name: str, base: Path) -> Path:
        with self.lock:
            started = name in self.done
            if not started:
                self.base = self.base or base
                self.done[name] = threading.Event()
        if not started:
            self._run(name)
        self.done[name].wait()
        if name in self.errors:
            raise RuntimeError(f"the background export {name} failed, {self.errors[name]}")
        return self.out(name)


jobs = Jobs()


def vulkan(out: Path, stories: Path) -> None:
    """stories260K's plan for the tiny GPU phone, lowered as planned; the plan and the artifact as JSON."""
    from converters.pte_partition import export_planned_pte
    from edgechat.app.targeting import plan_for
    from edgechat.core.sources import load_model

    out.mkdir(parents=True)
    profile = tiny_gpu_phone(out)
    plan = plan_for(stories, str(profile), formats=["pte"], quants=["fp32"], accelerator="Mali-G715 MC7", n_ctx=64,
                    measure=False).to_dict()
    art = export_planned_pte(load_model(stories), out / "stories-vulkan.pte", plan["chosen"], max_seq_len=64)
    (out / "result.json").write_text(json.dumps({"plan": plan, "artifact": art}))


if __name__ == "__main__":
    {"vulkan": vulkan}[sys.argv[1]](*map(Path, sys.argv[2:]))
