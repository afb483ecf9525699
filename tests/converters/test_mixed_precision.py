"""Mixed precision for a size budget (--bpw / --size-mib): per-tensor types chosen from measured sensitivity,
made by llama.cpp's quantizer; files within the budget, the plan in the manifest is the file's tensor types,
a budget below the smallest types is refused in one line."""
import itertools
import json

import numpy as np
import pytest

from tests.conftest import run_cli

SMALLEST = ("a budget of 6 bits per weight is below the smallest file llama.cpp's types allow for this model: "
            "0.24 MiB (7.01 bits per weight); ask for at least that")


@pytest.fixture(scope="module")
def budget_out(stories_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed") / "out"
    run_cli("convert", str(stories_dir), "-o", str(out), "--bpw", "8", "--size-mib", "0.3", "--no-eval",
            "--threads", "1", check=True)
    return out, json.loads((out / "edgechat.json").read_text())


def test_budget_files_are_within_budget_and_carry_the_plan(budget_out):
    from gguf import GGUFReader

    from edgechat.core.gguf_sizes import size_report

    out, manifest = budget_out
    arts = {a["quant"]: a for a in manifest["artifacts"]}
    assert set(arts) == {"mixed-bpw8", "mixed-0.3mib"}  # a budget without --quant makes only its file
    assert size_report(out / arts["mixed-bpw8"]["file"])["bpw"] <= 8
    assert (out / arts["mixed-0.3mib"]["file"]).stat().st_size <= 0.3 * 2**20
    for art in arts.values():
        plan = art["plan"]
        file_types = {t.name: t.tensor_type.name for t in GGUFReader(out / art["file"]).tensors}
        assert {n: file_types[n] for n in plan["tensor_types"]} == plan["tensor_types"]
        assert not art["fallbacks"]  # every planned type fits its rows
        assert plan["method"] == "measured" and art["imatrix"]
        sens = plan["sensitivity"]
        assert set(sens["blk.0.attn_q.weight"]) == {"Q4_0", "IQ4_NL", "Q5_0", "Q8_0"}  # 64-wide rows
        assert sens["blk.0.ffn_down.weight"] == {"F16": 0.0}  # 172 wide: nothing quantized fits
        assert plan["predicted_kld"] == pytest.approx(sum(sens[n][t] for n, t in plan["tensor_types"].items()), abs=1e-5)
    # the larger budget buys less summed sensitivity
    assert arts["mixed-0.3mib"]["plan"]["predicted_kld"] < arts["mixed-bpw8"]["plan"]["predicted_kld"]


def test_mixed_file_runs_close_to_fp32(budget_out, stories_model):
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from runtimes.torch_engine import TorchEngine

    out, manifest = budget_out
    art = next(a for a in manifest["artifacts"] if a["quant"] == "mixed-0.3mib")
    engine = LlamaCppEngine(out / art["file"], kv_type="f32", logits_all=True, threads=1)
    ids = engine.tokenize("Once upon a time, there was a little girl named Lily. She loved to play.", add_bos=True)
    q, ref = engine.logits_all(ids), TorchEngine(stories_model).logits_all(ids)
    logp = lambda x: x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)  # noqa: E731
    kld = float((np.exp(logp(ref)) * (logp(ref) - logp(q))).sum(-1).mean())
    assert kld < 0.05
    assert (q.argmax(-1) == ref.argmax(-1)).mean() > 0.8


def test_budget_below_the_smallest_types_is_refused(stories_dir, tmp_path):
    out = tmp_path / "small"
    proc = run_cli("convert", str(stories_dir), "-o", str(out), "--bpw", "6", "--no-eval", "--no-imatrix",
                   "--threads", "1")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"edgechat: error: {SMALLEST}"
    assert "Traceback" not in proc.stderr and not out.exists()


def test_budget_needs_gguf_or_pte(stories_dir, tmp_path):
    proc = run_cli("convert", str(stories_dir), "-o", str(tmp_path / "p"), "--format", "hf", "--bpw", "5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("edgechat: error: --bpw/--size-mib choose per-tensor GGUF types or per-module .pte "
                                   "types: add --format gguf or --format pte")


def test_choose_types_spends_the_budget_best():
    """Against brute force on small made-up sensitivities: within budget, the optimum."""
    from converters.mixed_precision import choose_types

    rng = np.random.default_rng(0)
    for _ in range(30):
        tensors = {}
        for i in range(4):
            kld = sorted(rng.uniform(0, 1, 3), reverse=True)
            tensors[f"t{i}"] = {"types": {t: {"bytes": int(b), "kld": float(k)}
                                          for t, b, k in zip(("A", "B", "C"), sorted(rng.integers(10, 100, 3)), kld)}}
        sens = {"tensors": tensors}
        budget = int(rng.integers(sum(min(e["bytes"] for e in t["types"].values()) for t in tensors.values()), 400))
        plan = choose_types(sens, budget)
        cost = lambda p: (sum(tensors[n]["types"][t]["bytes"] for n, t in p.items()),  # noqa: E731
                          sum(tensors[n]["types"][t]["kld"] for n, t in p.items()))
        assert cost(plan)[0] <= budget
        best = min(cost(dict(zip(tensors, combo)))[1] for combo in itertools.product("ABC", repeat=4)
                   if cost(dict(zip(tensors, combo)))[0] <= budget)
        assert cost(plan)[1] <= best + 1e-9
