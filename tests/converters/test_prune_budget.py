"""The distillation budget: steps from a measured step time, and the pruning ratios the tokens can recover."""
import json

import pytest

from converters.budget import BUDGET_RULE, kept_fractions, plan_budget
from converters.distill import DistillConfig
from edgechat.core.errors import EdgechatError
from tests.conftest import run_cli


@pytest.mark.parametrize("tokens_per_param,kept", [
    (0.003, (0.9,)),  # an hour of 2 CPU cores on SmolLM2-135M: light pruning only
    (0.05, (0.9, 0.8)), (0.5, (0.9, 0.8)), (1.0, (0.9, 0.8, 0.7)),
    (12.0, (0.9, 0.8, 0.7, 0.5)),  # Minitron's tokens per parameter for a 50% student
])
def test_budget_rule_offers_heavier_pruning_only_with_more_tokens(tokens_per_param, kept):
    assert kept_fractions(tokens_per_param) == kept
    assert [floor for floor, _ in BUDGET_RULE] == sorted((f for f, _ in BUDGET_RULE), reverse=True)


def test_plan_budget_buys_the_steps_the_measured_step_time_allows(stories_model):
    cfg = DistillConfig(micro_batch=2, seq_len=32)
    plan = plan_budget(stories_model, cfg, 0.1)
    assert plan.step_s > 0 and plan.steps == max(1, int(0.1 * 60 / plan.step_s))
    assert plan.tokens_per_step == 64 and plan.tokens == plan.steps * 64
    assert plan.tokens_per_param == pytest.approx(plan.tokens / stories_model.config.param_count(), rel=1e-3)
    assert plan.kept_fractions == kept_fractions(plan.tokens_per_param)
    assert cfg.log == [] and cfg.steps == 200  # the timing run trains a copy, with its own config


def test_plan_budget_refuses_no_time(stories_model):
    with pytest.raises(EdgechatError, match=r"^--budget-minutes must be above 0, got 0$"):
        plan_budget(stories_model, DistillConfig(), 0)


def test_distill_budget_minutes_sets_the_steps(stories_dir, tmp_path):
    log = tmp_path / "loss.json"
    run_cli("distill", str(stories_dir), str(stories_dir), "-o", str(tmp_path / "student"), "--budget-minutes", "0.05",
            "--micro-batch", "2", "--seq-len", "32", "--loss-log", str(log), check=True)
    record = json.loads(log.read_text())
    assert record["config"]["steps"] == len(record["log"]) >= 1
    assert (tmp_path / "student" / "config.json").exists()


def test_a_student_pruned_beyond_what_its_steps_recover_gets_a_note():
    from converters.budget import recovery_note

    smollm2 = 134_515_008
    assert recovery_note(smollm2, 0.5, DistillConfig(steps=200)) == (
        "note: a 50% student with 200 distillation steps (0.205M tokens, 0.0015 per parameter of the source) is "
        "likely far from the source: that much training recovers students down to about 90% of its parameters "
        "(keep more with --target-params 0.9, or distill longer or on a GPU; `edgechat tune` picks the ratio for "
        "a budget)")
    assert "about 70%" in recovery_note(smollm2, 0.5, DistillConfig(steps=200_000))  # 1.5 tokens per parameter
    assert recovery_note(smollm2, 0.7, None).startswith("note: a 70% student with no distillation is likely far")
    assert recovery_note(smollm2, 0.89, DistillConfig(steps=200)) is None  # within reach (0.9, less rounding)
    assert recovery_note(smollm2, 0.5, DistillConfig(steps=2_000_000)) is None
