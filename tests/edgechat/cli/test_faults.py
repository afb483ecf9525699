"""Faults while edgechat works, on real subprocesses: SIGINT and SIGTERM during convert, distill and tune, a full disk,
a file-size limit, two converts into one OUTDIR, Ctrl-C during an interactive reply. Each checks the exit code,
the one line the user sees, and that nothing is left behind."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PARIS_SYSTEM, ROOT, run_cli


def foreground() -> None:
    """Ctrl-C reaches the child as it reaches a command run in a terminal: a suite started as a background job
    (`make test &`, or a CI runner) hands its children SIGINT ignored, and Python keeps that disposition."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgechat.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=foreground, **kwargs)


def wait_for(predicate, proc, timeout=300.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the command ended ({proc.returncode}) before the moment to interrupt it: "
                                 f"{proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the command to reach the moment to interrupt it")


def staged(parent: Path):
    return lambda: any(p.name.startswith(".out.partial-") for p in parent.iterdir())


DISK = "nothing was written; free space (or raise the limit) and run it again"


def assert_disk_error(proc, reason: str):
    """gguf-py writes the header with Python (errno ENOSPC/EFBIG, the file named) and tensors with numpy's
    tofile (a short write, no errno): either way one line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"edgechat: error: {reason} writing ") or lines[0].startswith(
        "edgechat: error: a write was cut short (the disk is full or a file-size limit was reached)"), lines[0]
    assert lines[0].endswith(DISK), lines[0]


def assert_last_line(stderr: str, line: str):
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == line, stderr


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_convert_removes_staging(tmp_path, sig, code, line):
    proc = start_cli("convert", "-o", str(tmp_path / "out"), "--quant", "q4_k_m", "--no-eval")
    wait_for(staged(tmp_path), proc)
    time.sleep(0.5)  # into the load and the export
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert_last_line(err, line)
    assert list(tmp_path.iterdir()) == []  # no staging directory, no lock file, no OUTDIR


@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_distill_keeps_checkpoint_for_resume(stories_dir, tmp_path, sig, code, line):
    import torch

    ck, out = tmp_path / "ck.pt", tmp_path / "student"
    args = ["distill", str(stories_dir), str(stories_dir), "-o", str(out), "--checkpoint", str(ck),
            "--checkpoint-every", "1", "--micro-batch", "2", "--seq-len", "32"]
    proc = start_cli(*args, "--steps", "100000")
    wait_for(ck.exists, proc)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert_last_line(err, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]  # no student, no staging, no .tmp
    step = torch.load(ck, weights_only=False)["step"]
    assert step >= 1
    log = tmp_path / "loss.json"
    run_cli(*args, "--steps", str(step + 2), "--loss-log", str(log), check=True)  # --resume: the same checkpoint
    steps = [s for s, _, _ in json.loads(log.read_text())["log"]]
    assert steps == list(range(step + 2))  # the first `step` steps came from the checkpoint, two more ran
    assert (out / "config.json").exists()


TUNE_EVAL = [{"role": "user", "content": "Once upon a time there was a girl."},
             {"role": "assistant", "content": "She had a big red ball and she loved to play with it."}]


@pytest.mark.parametrize("phase", ["quants", "student"])
@pytest.mark.parametrize("sig, code, line", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_during_tune_removes_staging(stories_dir, tmp_path, tmp_path_factory, sig, code, line, phase):
    """Interrupted while it converts the quantized candidates, or while it prunes and distills a student (each a
    convert staged inside tune's own staging directory): no candidate, OUTDIR, staging directory or lock is left."""
    data = tmp_path_factory.mktemp("tune-eval") / "eval.jsonl"
    data.write_text(json.dumps({"messages": TUNE_EVAL}) + "\n")
    proc = start_cli("tune", str(stories_dir), "-o", str(tmp_path / "out"), "--max-kld", "0.5", "--quant", "q8_0",
                     "--no-bpw", "--no-imatrix", "--kept", "0.9", "--budget-minutes", "1", "--eval-data", str(data))
    pattern = ".out.partial-*/candidates/" + ("*" if phase == "quants" else ".s90-q4_k_m.partial-*")
    wait_for(lambda: any(tmp_path.glob(pattern)), proc)
    time.sleep(0.5)  # into that conversion
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert_last_line(err, line)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_leaves_nothing(stories_dir, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
    try:
        proc = run_cli("convert", str(stories_dir), "-o", str(mnt / "out"), "--quant", "f32", "--no-eval")
        assert_disk_error(proc, "no space left on the device")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_file_size_limit_leaves_nothing(stories_dir, tmp_path):
    def limit():  # the F32 GGUF of stories260K is about 1.1 MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, resource.RLIM_INFINITY))

    proc = subprocess.run([sys.executable, "-m", "edgechat.cli", "convert", str(stories_dir), "-o",
                           str(tmp_path / "out"), "--quant", "f32", "--no-eval"], capture_output=True, text=True,
                          cwd=ROOT, preexec_fn=limit, timeout=600)
    assert_disk_error(proc, "a file would pass the file-size limit")
    assert list(tmp_path.iterdir()) == []


def test_two_converts_into_one_outdir_never_mix(stories_dir, tmp_path):
    out = tmp_path / "out"
    first = start_cli("convert", "-o", str(out), "--quant", "q8_0", "--no-eval")
    wait_for(lambda: (tmp_path / ".out.lock").exists(), first)
    second = run_cli("convert", str(stories_dir), "-o", str(out), "--quant", "f32", "--no-eval")
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip() == (f"edgechat: error: cannot write to {out}: another edgechat process is writing "
                                     f"it (lock {tmp_path / '.out.lock'}); wait for it to finish or choose another -o")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    manifest = json.loads((out / "edgechat.json").read_text())
    assert [a["quant"] for a in manifest["artifacts"]] == ["q8_0"]  # the first run's files only, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    from edgechat.core.files import file_sha256

    assert file_sha256(out / manifest["artifacts"][0]["file"]) == manifest["artifacts"][0]["sha256"]


def test_ctrl_c_during_a_reply_keeps_the_session():
    import select

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "edgechat.cli", "chat", "--system", PARIS_SYSTEM,
                             "--max-tokens", "2000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=env, preexec_fn=foreground)
    proc.stdin.write(b"Write a very long story about a dragon, with many chapters.\n")
    proc.stdin.flush()
    seen, end = b"", time.monotonic() + 120
    while time.monotonic() < end and not (b"> " in seen and len(seen.split(b"> ", 1)[1]) >= 20):  # reply started
        if select.select([proc.stdout], [], [], 0.05)[0]:
            seen += os.read(proc.stdout.fileno(), 4096)
    proc.send_signal(signal.SIGINT)
    time.sleep(1)
    rest, err = proc.communicate(b"What is the capital of France?\n/exit\n", timeout=120)
    out, err = (seen + rest).decode(errors="replace"), err.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "(reply stopped)" in out
    assert "Paris" in out.split("(reply stopped)", 1)[1]  # the session went on and answered the next question
    assert "Traceback" not in err
