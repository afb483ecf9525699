"""The memory fit before loading, on the embedded SmolLM2-135M-Instruct (its Q4_1 GGUF) against a test profile
with a tiny app budget: refused with the figures and what would fit; --n-ctx auto picks a context the
estimate says fits."""
from __future__ import annotations

import re

import pytest

from targets import memory
from tests.conftest import ROOT, run_cli

BUDGET_GB = 0.3  # holds the 98 MiB model with a few thousand tokens of context, not its full 8192


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory):
    text = (ROOT / "targets/profiles/rpi5-8gb.toml").read_text()
    text = text[:text.index("[[accelerator]]")].replace('name = "rpi5-8gb"', 'name = "tiny-test"')
    text = re.sub(r"app_budget_gb = [0-9.]+", f"app_budget_gb = {BUDGET_GB}", text)
    path = tmp_path_factory.mktemp("targets") / "tiny-test.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def default_shape():
    from edgechat.app.targeting import spec_from_gguf
    from edgechat.core.sources import default_model_path

    spec, types, quant = spec_from_gguf(default_model_path())
    return spec, memory.weight_bytes(spec, quant, types)  # the tensors' bytes, as the planner counts them


def test_too_large_for_the_budget_is_refused_with_the_figures(tiny_target, default_shape):
    spec, weights = default_shape
    proc = run_cli("chat", "--prompt", "hi", "--target", str(tiny_target), "--n-ctx", "8192")
    assert proc.returncode == 2 and proc.stdout == ""
    est = memory.estimate(spec, "llama.cpp", 8192, weights)
    budget = BUDGET_GB * 1e9
    fit_ctx = memory.largest_n_ctx(spec, "llama.cpp", weights, budget, 8192)
    assert 512 <= fit_ctx < 8192
    assert proc.stderr == (
        f"edgechat: error: SmolLM2-135M-Instruct.Q4_1.gguf does not fit: it needs {memory.mib(est.total)} "
        f"({est.parts()}) but the app budget of tiny-test is {memory.mib(budget)}, "
        f"{memory.mib(est.total - budget)} short; what fits: --n-ctx {fit_ctx} (--n-ctx auto picks the largest)\n")
    # no smaller quant fits at n_ctx 8192: the KV cache and compute buffers alone pass the budget
    assert memory.estimate(spec, "llama.cpp", 8192, memory.weight_bytes(spec, "q4_0")).total > budget


def test_n_ctx_auto_picks_a_context_that_fits(tiny_target, default_shape):
    import edgechat

    spec, weights = default_shape
    chat = edgechat.load(None, target=str(tiny_target), n_ctx="auto", threads=1)
    n = chat.engine.n_ctx
    budget = BUDGET_GB * 1e9
    assert memory.estimate(spec, "llama.cpp", n, weights).total <= budget
    assert memory.estimate(spec, "llama.cpp", n + memory.STEP, weights).total > budget
    assert chat.send("What is 2 + 2?", max_tokens=4).stats.completion_tokens > 0


def test_the_cli_takes_n_ctx_auto_and_refuses_a_bad_value(tiny_target):
    ok = run_cli("chat", "--prompt", "Hi", "--max-tokens", "2", "--n-ctx", "auto", "--target", str(tiny_target),
                 "--json")
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("chat", "--prompt", "Hi", "--n-ctx", "lots")
    assert bad.returncode == 2 and "'lots' is neither a number of tokens nor 'auto'" in bad.stderr


def test_plan_shows_the_same_estimate(tiny_target, default_shape):
    import json

    spec, _ = default_shape
    proc = run_cli("plan", "--target", "rpi5-8gb", "--quant", "q4_k_m", "--n-ctx", "2048", "--json", check=True)
    got = json.loads(proc.stdout)["memory_estimate"]
    want = memory.estimate(spec, "llama.cpp", 2048, memory.weight_bytes(spec, "q4_k_m"))
    assert got["total"] == pytest.approx(want.total) and got["fits"] is True
    text = run_cli("plan", "--target", "rpi5-8gb", "--quant", "q4_k_m", check=True).stdout
    assert f"resident memory when loaded (the fit check's estimate): {want.total / 2**20:.1f} MiB" in text
