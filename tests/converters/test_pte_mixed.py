""".pte mixed precision (--bpw/--size-mib with --format pte) and the 4-bit levers (HQQ, AWQ, QAT), on stories260K:
the program carries the planned per-module types (read back from its XNNPACK delegates), runs in ExecuTorch,
stays within its budget; an impossible budget is refused in one line; the AWQ fold keeps fp32 logits."""
import json

import numpy as np
import pytest
import torch

from converters import pte_mixed as pm
from converters.pte_program import program_layout
from runtimes.pte_engine import PteEngine
from runtimes.torch_engine import TorchEngine
from tests.background import jobs
from tests.conftest import run_cli

SEQ = 64
BUDGET_MIB = 0.3  # between stories260K's smallest plan (0.26 MiB) and all-8-bit


@pytest.fixture(scope="session")
def mixed_out(tmp_path_factory, stories_dir):
    """A budget's plan with AWQ and two QAT steps (`convert --size-mib 0.3 --awq --qat-steps 2`, made in the
    background: tests/background.py)."""
    return jobs.wait("pte-mixed-awq-qat", tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def hqq_out(tmp_path_factory, stories_dir):
    return jobs.wait("pte-mixed-hqq", tmp_path_factory.getbasetemp())


def test_a_program_over_its_budget_is_planned_again_smaller(stories_dir, tmp_path, monkeypatch):
    """The program's bytes beyond its weights are estimated (pte_mixed's slack): with the estimate zeroed the
    first program comes out over the budget, and the plan is made again by the overshoot, within it."""
    from edgechat.app.pipeline import ConvertOptions, convert
    from edgechat.reports.progress import Steps

    monkeypatch.setattr(pm, "PROGRAM_SLACK", 0)
    monkeypatch.setattr(pm, "PER_MODULE_SLACK", 0)
    opts = ConvertOptions(formats=["pte"], evaluate=False, budgets=[{"size_mib": BUDGET_MIB}],
                          extra={"max_seq_len": SEQ})
    with Steps(enabled=False) as steps:
        convert(stories_dir, tmp_path / "out", opts, steps)
    art = json.loads((tmp_path / "out" / "edgechat.json").read_text())["artifacts"][0]
    assert art["plan"]["replanned_over_bytes"] and min(art["plan"]["replanned_over_bytes"]) > 0
    assert (tmp_path / "out" / art["file"]).stat().st_size == art["bytes"] <= BUDGET_MIB * 2**20
    assert [x["choice"] for x in program_layout(tmp_path / "out" / art["file"])["linears"]] == \
        [c for n, c in art["plan"]["tensor_types"].items() if n != "model.embed_tokens"]


def _artifact(out):
    art = json.loads((out / "edgechat.json").read_text())["artifacts"]
    assert [a["quant"] for a in art] == [f"mixed-{BUDGET_MIB:g}mib"]
    return art[0], out / art[0]["file"]


@pytest.mark.parametrize("which", ["mixed_out", "hqq_out"])
def test_program_carries_the_planned_types_and_fits_the_budget(which, request):
    art, path = _artifact(request.getfixturevalue(which))
    plan = art["plan"]["tensor_types"]
    assert len(set(plan.values())) >= 3  # a real mix: 4-bit groups, 8-bit channels, the embedding's own
    layout = program_layout(path)
    linears = [c for n, c in plan.items() if n != "model.embed_tokens"]
    assert [x["choice"] for x in layout["linears"]] == linears  # every linear, in module order, as planned
    assert layout["embedding"] == plan["model.embed_tokens"].split("-")[0]
    assert {x["datatype"] for x in layout["linears"]} <= {"xnn_datatype_qbint4", "xnn_datatype_qcint8"}
    assert path.stat().st_size == art["bytes"] <= BUDGET_MIB * 2**20
    assert abs(art["plan"]["predicted_file_bytes"] - art["bytes"]) < 0.02 * art["bytes"]
    sens = art["plan"]["sensitivity"]
    assert set(sens) == set(plan) and all(plan[n] in sens[n] for n in plan)


def test_mixed_program_runs_close_to_fp32(mixed_out, stories_model):
    _art, path = _artifact(mixed_out)
    pte, ref = PteEngine(path, threads=2), TorchEngine(stories_model, n_ctx=SEQ)
    ids = ref.tokenize("Once upon a time, there was a big dog.", add_bos=True)
    a, r = pte.forward(ids, 0), ref.forward(ids, 0)
    lp = lambda x: torch.log_softmax(torch.as_tensor(np.asarray(x, dtype=np.float32)), -1)  # noqa: E731
    kl = float((lp(r).exp() * (lp(r) - lp(a))).sum())
    assert np.isfinite(a).all() and kl < 0.5 and int(np.argmax(a)) == int(np.argmax(r))


def test_levers_are_recorded(mixed_out, hqq_out):
    art, _ = _artifact(mixed_out)
    assert (art["awq"], art["hqq"], art["qat_steps"]) == (True, False, 2)
    assert art["qat"]["steps"] == 2 and art["qat"]["kl_last"] is not None and art["qat"]["wall_s"] > 0
    assert art["qat"]["trained_for"] == "the plan"  # planned first, then trained toward the plan's types
    assert len(art["awq_scales"]) == 2 * 5 and all(0 <= v["alpha"] <= 1 for v in art["awq_scales"].values())
    hqq, _ = _artifact(hqq_out)
    assert (hqq["hqq"], hqq["awq"], hqq["qat_steps"]) == (True, False, 0) and "qat" not in hqq


def test_inspect_shows_the_plan_and_the_program_types(mixed_out):
    art, path = _artifact(mixed_out)
    r = run_cli("inspect", str(path), "--json", check=True)
    info = json.loads(r.stdout)
    assert info["manifest"]["artifact"]["plan"]["tensor_types"] == art["plan"]["tensor_types"]
    counts = {}
    for n, c in art["plan"]["tensor_types"].items():
        key = f"embedding {c.split('-')[0]}" if n == "model.embed_tokens" else c
        counts[key] = counts.get(key, 0) + 1
    assert info["program_types"] == counts
    text = run_cli("inspect", str(path), check=True).stdout
    assert "program types" in text and "summed sensitivity" in text


def test_impossible_budget_is_refused_in_one_line(stories_dir, tmp_path):
    r = run_cli("convert", str(stories_dir), "-o", str(tmp_path / "o"), "--format", "pte", "--size-mib", "0.1",
                "--max-seq-len", str(SEQ), "--no-eval")
    assert r.returncode == 2 and not (tmp_path / "o").exists()
    assert r.stderr.strip().splitlines()[-1] == (
        "edgechat: error: a budget of 0.1 MiB is below the smallest .pte the per-module types allow for this model: "
        "0.26 MiB (8.11 bits per weight); ask for at least that")


def test_qat_with_hqq_is_refused(stories_dir, tmp_path):
    r = run_cli("convert", str(stories_dir), "-o", str(tmp_path / "o"), "--format", "pte", "--quant", "8da8w",
                "--hqq", "--qat-steps", "4", "--no-eval")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "edgechat: error: --hqq with --qat-steps is not supported: quantization-aware training learns the affine grid the "
        "program is then quantized with; drop --hqq")


def test_awq_fold_keeps_fp32_logits(stories_model):
    from converters import mixed_precision as mp
    from converters.pte_awq import apply_awq
    from converters.pte_levers import calibration_for
    from converters.pte_modules import ExportModel, export_module

    module = export_module(stories_model.module, SEQ, fused_ops=False)
    ids = torch.tensor([stories_model.tokenizer.encode("Once upon a time, there was a little girl.", add_bos=True)])
    with torch.no_grad():
        before = ExportModel(module, SEQ, last_only=False)(ids, torch.tensor([0]))
        norms = [layer.input_layernorm.weight.clone() for layer in module.model.layers]
        record = apply_awq(module, mp.calibration_batch(calibration_for(stories_model)), 32, SEQ)
        after = ExportModel(module, SEQ, last_only=False)(ids, torch.tensor([0]))
    folded = [not torch.equal(n, layer.input_layernorm.weight) for n, layer in zip(norms, module.model.layers)]
    assert any(folded) and folded == [record[f"layers.{i}.input_layernorm"]["alpha"] > 0 for i in range(5)]
    assert (after - before).abs().max() < 1e-4
    assert all(v["rel_error"] <= 1.0 for v in record.values())  # alpha 0 (no scaling) is on the grid


def test_candidates_fit_each_module_width():
    lin = pm.PlannedModule("model.layers.0.mlp.down_proj", "linear", 64, 172)  # stories260K: 172 = 4 x 43
    assert pm.candidates(lin) == ("8da8w",)
    qkv = pm.PlannedModule("model.layers.0.self_attn.qkv_proj", "linear", 128, 64)
    assert pm.candidates(qkv) == ("8da4w-g64", "8da4w-g32", "8da8w")
    emb = pm.PlannedModule("model.embed_tokens", "embedding", 512, 64)
    assert pm.candidates(emb) == ("4w-g64", "4w-g32", "8w")
    assert pm.module_bytes(qkv, "8da4w-g32") == 128 * 64 // 2 + 128 * 2 * 2  # bf16 scale per group
    assert pm.module_bytes(qkv, "8da8w") == 128 * 64 + 128 * 4  # fp32 scale per row
