"""Knowledge distillation: it lowers KL to the teacher; 1 and 2 DDP processes agree; resume is exact."""
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

from converters.distill import DistillConfig, distill
from converters.hf_writer import write_hf
from converters.prune import measure_importance, plan_from_options, prune
from edgechat.core.data import read_eval_data
from edgechat.core.errors import EdgechatError
from edgechat.app.evaluate import evaluate
from edgechat.core.sources import load_model
from runtimes.torch_engine import TorchEngine
from tests.conftest import ROOT

CALIB = ["Once upon a time there was a little girl named Lily. She loved to play outside.",
         "Tom had a big red ball. He liked to throw it to his dog, who ran fast."]


def pruned_student(teacher):
    imp = measure_importance(teacher, [teacher.tokenizer.encode(t) for t in CALIB])
    return prune(teacher, plan_from_options(teacher.config, ffn_frac=0.5, layers=1), imp)


def held_out_kld(teacher, student):
    data = read_eval_data(None)
    return evaluate(TorchEngine(student), TorchEngine(teacher), data, n_ctx=256).mean_kld


def test_distillation_lowers_kl_on_held_out_dialogue(stories_model):
    student = pruned_student(stories_model)
    before = held_out_kld(stories_model, student)
    # fp32 on every CPU, as auto chooses for a 64-wide model (bf16 autocast would halve its speed); the
    # precisions are compared in test_distill_precision.py
    cfg = DistillConfig(steps=200, micro_batch=4, seq_len=128, lr=1e-3, max_dialogues=800, seed=0, precision="fp32")
    distill(stories_model, student, cfg)
    after = held_out_kld(stories_model, student)
    assert cfg.log[-1][2] < cfg.log[0][2] / 2  # training KL fell
    assert after < before * 0.7, (before, after)


def test_resume_from_checkpoint_is_exact(stories_model, tmp_path):
    def run(steps, ckpt):
        s = pruned_student(stories_model)
        cfg = DistillConfig(steps=steps, micro_batch=2, seq_len=64, max_dialogues=100, checkpoint=ckpt, checkpoint_every=3)
        distill(stories_model, s, cfg)
        return cfg.log, s
    full_log, full = run(6, None)
    ckpt = str(tmp_path / "ckpt.pt")
    run(3, ckpt)  # stops at step 3, checkpoint written
    resumed_log, resumed = run(6, ckpt)
    assert [round(x[1], 5) for x in resumed_log] == [round(x[1], 5) for x in full_log]
    for k, v in full.module.state_dict().items():
        assert (v - resumed.module.state_dict()[k]).abs().max() < 1e-5


def test_vocabulary_mismatch_refused(stories_model, tiny_qwen2_dir):
    with pytest.raises(EdgechatError, match=r"teacher and student vocabularies differ \(512 vs \d+ tokens\)"):
        distill(stories_model, load_model(tiny_qwen2_dir), DistillConfig(steps=1))


@pytest.mark.parametrize("data", [[], ["--teacher-data", "24"]], ids=["chit-chat", "teacher-data"])
def test_ddp_two_processes_match_one(stories_model, tmp_path, data):
    """Same global batch (4 sequences): 1 process x 2 micro-batches vs 2 torchrun processes x 1. On teacher data
    each run writes its own cache: under torchrun rank 0 generates while rank 1 waits, then reads it."""
    student_dir = tmp_path / "student"
    write_hf(pruned_student(stories_model), student_dir)
    teacher = str(stories_model.source["path"])
    common = ["distill", teacher, str(student_dir), "--steps", "6", "--micro-batch", "2", "--seq-len", "64", "--seed", "3",
              *data]
    runs = {
        1: [sys.executable, "-m", "edgechat.cli", *common, "--grad-accum", "2"],
        2: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
            "-m", "edgechat.cli", *common, "--grad-accum", "1"],
    }
    logs = {}
    for n, cmd in runs.items():
        out, log = tmp_path / f"out{n}", tmp_path / f"log{n}.json"
        env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "EDGECHAT_CACHE_DIR": str(tmp_path / f"cache{n}")}
        proc = subprocess.run([*cmd, "-o", str(out), "--loss-log", str(log)], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[n] = json.loads(log.read_text())
        assert (out / "config.json").exists()
    assert logs[2]["world_size"] == 2
    if data:
        assert logs[1]["teacher_data"]["sha256"] == logs[2]["teacher_data"]["sha256"]
        assert logs[2]["teacher_data"]["conversations"] == 24
    one, two = [x[1] for x in logs[1]["log"]], [x[1] for x in logs[2]["log"]]
    assert len(one) == len(two) == 6
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-4 * max(one)
    shutil.rmtree(tmp_path / "out1")


@pytest.mark.parametrize("device, message", [
    ("tpu", "unknown distillation device 'tpu': use cpu or cuda"),
    pytest.param("cuda", "distillation device 'cuda' is not available: torch sees no CUDA GPU here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")),
])
def test_unusable_device_refused(stories_model, device, message):
    student = pruned_student(stories_model)
    with pytest.raises(EdgechatError, match=re.escape(message)):
        distill(stories_model, student, DistillConfig(steps=1, device=device))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(stories_model):
    """The same steps on a GPU follow the CPU's loss curve, and the student comes back on the CPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    logs = {}
    for device in ("cpu", "cuda"):
        s = pruned_student(stories_model)
        cfg = DistillConfig(steps=20, micro_batch=4, seq_len=128, lr=1e-3, max_dialogues=200, device=device)
        distill(stories_model, s, cfg)
        logs[device] = [x[2] for x in cfg.log]
        assert next(s.module.parameters()).device.type == "cpu"
    assert logs["cuda"] == pytest.approx(logs["cpu"], rel=1e-3)


def test_on_step_sees_every_logged_step(stories_model):
    seen = []
    cfg = DistillConfig(steps=3, micro_batch=2, seq_len=64, max_dialogues=50)
    distill(stories_model, pruned_student(stories_model), cfg, on_step=lambda *a: seen.append(a))
    assert seen == cfg.log and [s[0] for s in seen] == [0, 1, 2]
