"""Accelerator .pte artifacts from a plan: a Vulkan lowering of the layers a plan puts on a phone GPU (some but
not all of them: the GPU's budget holds two) and a Core ML lowering of a model a plan puts wholly on the
Neural Engine; each written file holds its backend's delegates for exactly the planned layers. Built and
checked here; these programs need the device's runtime to run."""
from __future__ import annotations

import json

import pytest

from tests.background import jobs


def plan_dict(source, target, accelerator, n_ctx=64):
    from edgechat.app.targeting import plan_for

    return plan_for(source, target, formats=["pte"], quants=["fp32"], accelerator=accelerator, n_ctx=n_ctx,
                    measure=False).to_dict()


@pytest.fixture(scope="session")
def vulkan_artifact(stories_dir, tmp_path_factory):
    """stories260K's plan for a pixel8 whose Mali budget holds two layers, lowered as planned (in the
    background: tests/background.py)."""
    out = jobs.wait("vulkan", tmp_path_factory.getbasetemp())
    r = json.loads((out / "result.json").read_text())
    return r["plan"], out / "stories-vulkan.pte", r["artifact"]


@pytest.fixture(scope="session")
def coreml_convert(stories_dir, tmp_path_factory):
    """`convert --target iphone15pro --on "Neural Engine"` once (in the background: tests/background.py): its
    output directory and manifest. The Core ML lowering takes most of a minute even for stories260K."""
    out = jobs.wait("coreml", tmp_path_factory.getbasetemp())
    return out, json.loads((out / "edgechat.json").read_text())


@pytest.fixture(scope="session")
def coreml_artifact(coreml_convert):
    out, m = coreml_convert
    acc = [a for a in m["artifacts"] if a.get("accelerator_backend") == "coreml"]
    assert len(acc) == 1
    return m["target_plan"], out / acc[0]["file"], acc[0]


def test_the_plan_splits_the_gpu_layers(vulkan_artifact):
    plan = vulkan_artifact[0]
    c = plan["chosen"]
    assert c["partitioners"] == ["vulkan", "xnnpack"]
    assert c["placement"] == "2/6 on Mali-G715 MC7 (vulkan), rest on CPU (xnnpack)"
    assert [s["device"] for s in c["slots"][1:3]] == ["Mali-G715 MC7 (vulkan)"] * 2


def test_vulkan_pte_holds_vulkan_delegates_for_the_planned_layers_only(vulkan_artifact):
    from converters.pte_partition import file_delegates

    _, path, art = vulkan_artifact
    assert art["matches_plan"] and art["mismatches"] == []
    assert art["planned_on_accelerator"] == [0, 1]
    assert art["linears_per_delegate"]["VulkanBackend"] == {"0": 7, "1": 7}
    xnn = art["linears_per_delegate"]["XnnpackBackend"]
    assert {k: xnn[k] for k in ("2", "3", "4", "output")} == {"2": 7, "3": 7, "4": 7, "output": 1}
    in_file = file_delegates(path)  # read back from the written program
    assert in_file == art["delegates_in_file"] and in_file["VulkanBackend"] >= 2 and in_file["XnnpackBackend"] >= 1


def test_coreml_pte_holds_coreml_delegates_for_every_planned_layer(coreml_artifact):
    from converters.pte_partition import file_delegates

    plan, path, art = coreml_artifact
    assert plan["chosen"]["placement"] == "all on Neural Engine (coreml)"
    assert art["matches_plan"] and art["planned_on_accelerator"] == [0, 1, 2, 3, 4, "output"]
    assert art["linears_per_delegate"] == {"CoreMLBackend": {"0": 7, "1": 7, "2": 7, "3": 7, "4": 7, "output": 1}}
    assert file_delegates(path) == {"CoreMLBackend": 6}  # one delegate per layer, one for the head
    assert art["run_here"] is False and art["decode_step_only"] is True


def test_check_reports_a_mismatch():
    from converters.pte_partition import check

    coverage = {"VulkanBackend": {"0": 7, "1": 3}}
    problems = check("vulkan", {0, 1}, coverage, 3, {"VulkanBackend": 2})
    assert problems == ["1: 3 of its linears in VulkanBackend, planned 7"]
    assert check("coreml", {0}, {}, 1, {})[-1] == "the written file holds no CoreMLBackend delegate"


def test_a_plan_without_an_accelerator_is_refused(stories_dir, stories_model, tmp_path):
    from converters.pte_partition import export_planned_pte
    from edgechat.core.errors import EdgechatError

    cpu_plan = plan_dict(stories_dir, "iphone15pro", "cpu")
    with pytest.raises(EdgechatError, match="puts nothing on a Vulkan or Core ML accelerator"):
        export_planned_pte(stories_model, tmp_path / "x.pte", cpu_plan["chosen"])


@pytest.mark.slow
def test_convert_target_writes_the_accelerator_artifact(coreml_convert):
    out, m = coreml_convert
    assert m["target_plan"]["chosen"]["partitioners"] == ["coreml", "xnnpack"]
    acc = [a for a in m["artifacts"] if a.get("accelerator_backend") == "coreml"]
    assert len(acc) == 1 and acc[0]["matches_plan"] and (out / acc[0]["file"]).exists()
    assert acc[0]["file"] == "stories260k-fp32-coreml.pte" and acc[0]["bytes"] > 0
