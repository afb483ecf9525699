"""The planner: llama.cpp's per-tensor quant types and sizes reproduced exactly, and its choice of format,
quant and CPU/GPU/NPU split for several model/target pairs, with the reasons; a model too large for a
target is a clear error saying by how much; `edgechat plan` and `convert --target`."""
from __future__ import annotations

import json

import gguf
import pytest

from targets import ModelSpec, PlanError, Request, load_profile, plan
from targets.quants import pte_plan_types, tensor_types, type_bytes
from tests.conftest import run_cli

SMOLLM2 = ModelSpec("SmolLM2-135M", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                    num_heads=9, num_kv_heads=3, head_dim=64, max_seq_len=8192, tie_word_embeddings=True)
LLAMA_3B = ModelSpec("Llama-3.2-3B", vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_layers=28,
                     num_heads=24, num_kv_heads=8, head_dim=128, max_seq_len=131072, tie_word_embeddings=True)
LLAMA_8B_HF = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
               "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
               "num_key_value_heads": 8, "max_position_embeddings": 131072, "rope_theta": 500000.0,
               "tie_word_embeddings": False}
LLAMA_8B = ModelSpec.from_dict(LLAMA_8B_HF, name="Llama-3.1-8B")


def file_types_and_bytes(path):
    r = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in r.tensors}, sum(int(t.n_bytes) for t in r.tensors)


def planned_bytes(spec, types):
    return sum(type_bytes(types[t.name], t.n) for t in spec.tensors())


@pytest.fixture(scope="module")
def stories_quants(stories_model, tmp_path_factory):
    from converters.gguf_quantize import quantize_gguf
    from converters.gguf_writer import write_gguf

    d = tmp_path_factory.mktemp("plan")
    base = write_gguf(stories_model, d / "f32.gguf", "f32")
    return {q: quantize_gguf(base, d / f"{q}.gguf", q) for q in ("q8_0", "q4_0", "q4_k_m")} | {"f32": base}


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "q4_k_m", "f32"])
def test_tensor_types_and_bytes_match_llama_cpp_on_stories(stories_quants, quant):
    from edgechat.app.targeting import spec_from_gguf

    spec, _, file_quant = spec_from_gguf(stories_quants[quant])
    assert file_quant == quant
    types, nbytes = file_types_and_bytes(stories_quants[quant])
    assert tensor_types(quant, spec) == types  # ffn_down (172 wide) falls back to F16, 64-wide K-quants to Q5_0
    assert planned_bytes(spec, types) == nbytes


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_tensor_types_and_bytes_match_llama_cpp_on_smollm2(smollm_out, quant):
    path = next(smollm_out.glob(f"*-{quant}.gguf"))
    types, nbytes = file_types_and_bytes(path)
    assert tensor_types(quant, SMOLLM2) == types
    assert planned_bytes(SMOLLM2, types) == nbytes
    if quant == "q4_k_m":  # the _M mix: more bits for attn_v/ffn_down in llama.cpp's chosen layers
        assert types["blk.0.ffn_down.weight"] == "Q6_K" and types["blk.3.ffn_down.weight"] == "Q4_K"
        assert types["blk.5.attn_v.weight"] == "Q8_0"  # Q6_K, but 576 is no multiple of 256
        assert types["blk.3.attn_q.weight"] == "Q5_0" and types["token_embd.weight"] == "Q8_0"


# -- choices ------------------------------------------------------------------------------------------
def test_small_model_on_a_pi_stays_on_the_cpu_at_q8_0():
    p = plan(SMOLLM2, load_profile("rpi5-8gb"))
    c = p.chosen
    assert (c.format, c.quant, c.n_gpu_layers) == ("gguf", "q8_0", 0)
    assert c.placement == "all on CPU (cpu)" and all(s.device == "CPU" for s in c.slots)
    gpu = next(x for x in p.candidates if x.quant == "q8_0" and "VideoCore" in x.placement)
    assert gpu.decode_tok_s < c.decode_tok_s
    assert any("q8_0: all on CPU (cpu) is fastest" in r and "all on VideoCore VII (vulkan)" in r for r in p.reasons)
    assert any(r.startswith("chose gguf q8_0: the most faithful quant estimated to decode at >= 20") for r in p.reasons)
    assert "not used: VideoCore VII: no executorch backend reaches it" in p.reasons


def test_memory_per_layer_and_kv_cache_at_the_context():
    req = Request(formats=("gguf",), quants=("q8_0",), n_ctx=4096)
    c = plan(SMOLLM2, load_profile("rpi5-8gb"), req).chosen
    assert sum(s.weight_bytes for s in c.slots) == planned_bytes(SMOLLM2, tensor_types("q8_0", SMOLLM2))
    assert sum(s.kv_bytes for s in c.slots) == 30 * 2 * 4096 * 3 * 64 * 2  # layers x K,V x ctx x kv_dim x f16
    assert [s.name for s in c.slots] == ["token_embd", *(f"blk.{i}" for i in range(30)), "output"]


def test_too_large_for_the_target_says_by_how_much():
    with pytest.raises(PlanError) as e:
        plan(LLAMA_8B, load_profile("pixel8"))
    msg = str(e.value)
    assert msg.startswith("Llama-3.1-8B does not fit pixel8: the smallest candidate (q4_0, all on CPU (cpu))")
    assert e.value.short_bytes > 2e9  # 4.65 GB of Q4_0 weights alone against a 3 GB budget
    assert f"short by {e.value.short_bytes / 1e9:.2f} GB of the app budget (3.00 GB for an app)" in msg
    assert "shorter context" in msg


def test_split_offloads_some_but_not_all_layers_to_the_npu():
    # at n_ctx 4096 the Q8_0 model and its cache pass the NPU's 3.5 GB (at 2048 they just fit on it)
    p = plan(LLAMA_3B, load_profile("sd8gen3-phone"), Request(formats=("gguf",), quants=("q8_0",), n_ctx=4096))
    c = p.chosen
    L = LLAMA_3B.num_layers
    assert 0 < c.n_gpu_layers < L + 1
    on_npu = [s for s in c.slots if s.device == "Hexagon NPU (hexagon)"]
    assert len(on_npu) == c.n_gpu_layers and on_npu[-1].name == "output"  # llama.cpp offloads the head first
    assert c.slots[1].device == "CPU" and c.memory["Hexagon NPU (hexagon)"] <= 3.5e9
    assert c.tensor_placement[f"blk.0-{L - c.n_gpu_layers}.*"] == "CPU"
    assert c.tensor_placement["output.weight"] == "HEXAGON0"
    assert c.placement == f"{c.n_gpu_layers}/{L + 1} on Hexagon NPU (hexagon), rest on CPU (cpu)"
    full_cpu = next(x for x in p.candidates if x.placement == "all on CPU (cpu)")
    assert c.decode_tok_s > full_cpu.decode_tok_s and c.prefill_tok_s > full_cpu.prefill_tok_s
    assert any(r.startswith(f"q8_0: {c.placement} is fastest") for r in p.reasons)


def test_pte_split_orders_the_partitioners():
    c = plan(LLAMA_3B, load_profile("sd8gen3-phone"), Request(formats=("pte",), quants=("8da8w",))).chosen
    assert c.partitioners == ["qnn", "xnnpack"] and "rest on CPU (xnnpack)" in c.placement
    assert c.slots[1].device == "Hexagon NPU (qnn)" and c.slots[-1].device == "CPU"  # first layers on the NPU


def test_phone_gpu_takes_the_whole_model_when_it_fits():
    p = plan(LLAMA_3B, load_profile("iphone15pro"))
    c = p.chosen
    assert (c.format, c.quant) == ("gguf", "q4_k_m")
    assert c.n_gpu_layers == LLAMA_3B.num_layers + 1 and c.placement == "all on A17 Pro GPU (metal)"
    assert "not used: Neural Engine: no llama.cpp backend reaches it" in p.reasons
    # the more faithful quant fits (3.92 of 4.00 GB on the CPU) but is too slow
    assert any(r.startswith("chose gguf q4_k_m") and "q8_0 reaches only" in r for r in p.reasons)


def test_kernels_that_do_not_take_a_quant_and_unreachable_npus_are_said():
    p = plan(LLAMA_3B, load_profile("sd8gen3-phone"))
    assert ("not used: Adreno 750 (opencl): its kernels do not take q4_k_m (they take q4_0, q8_0, f16, f32)"
            in p.reasons)
    p8 = plan(SMOLLM2, load_profile("pixel8"))
    assert "not used: Tensor G3 TPU: no llama.cpp backend reaches it" in p8.reasons


def test_when_nothing_is_fast_enough_the_fastest_wins():
    p = plan(LLAMA_8B, load_profile("rpi5-8gb"), Request(formats=("gguf",), min_decode_tok_s=1000))
    assert p.chosen.quant in ("q4_0", "q4_k_m")
    assert p.reasons[-2 if "not used" in p.reasons[-1] else -1].startswith("chose gguf")
    assert any("no candidate reaches 1000 tok/s" in r for r in p.reasons)


def test_format_order_breaks_near_ties():
    p = plan(SMOLLM2, load_profile("x86-avx2-laptop"))
    assert (p.chosen.format, p.chosen.quant) == ("gguf", "q8_0")
    assert any("pte 8da8w is within 10%" in r for r in p.reasons)
    p2 = plan(SMOLLM2, load_profile("x86-avx2-laptop"), Request(formats=("pte", "gguf")))
    assert (p2.chosen.format, p2.chosen.quant) == ("pte", "8da8w")


def test_plan_as_dict_is_json():
    d = plan(LLAMA_3B, load_profile("jetson-orin-nano-8gb")).to_dict()
    json.dumps(d)
    assert d["chosen"]["n_gpu_layers"] == LLAMA_3B.num_layers + 1 and d["format"] == "gguf"
    assert d["chosen"]["tensor_placement"]["blk.0-27.*"] == "CUDA0"


# -- CLI ----------------------------------------------------------------------------------------------
def test_cli_plan_json(stories_dir):
    out = run_cli("plan", str(stories_dir), "--target", "rpi5-8gb", "--json", check=True)
    d = json.loads(out.stdout)
    assert (d["format"], d["quant"], d["target"]) == ("gguf", "q8_0", "rpi5-8gb")
    assert [s["device"] for s in d["chosen"]["slots"]] == ["CPU"] * 7


def test_cli_plan_table(stories_dir):
    out = run_cli("plan", str(stories_dir), "--target", "sd8gen3-phone", "--format", "pte", check=True).stdout
    assert "decode ms/token" in out and "why:" in out and "ExecuTorch partitioners, in order: xnnpack" in out


def test_cli_plan_as_is(stories_quants):
    d = json.loads(run_cli("plan", str(stories_quants["q4_k_m"]), "--target", "host", "--as-is", "--json",
                           check=True).stdout)
    types = [s["types"] for s in d["chosen"]["slots"][1:6]]
    assert d["quant"] == "q4_k_m" and types == ["F16/Q5_0", "F16/Q5_0", "F16/Q5_0/Q8_0", "F16/Q5_0", "F16/Q5_0/Q8_0"]


def test_pte_plan_types_follow_the_modules_fused_or_not():
    """A .pte budget plan names the export module's linears (q/k/v and gate/up fused or apart); each maps to
    its GGUF tensors at the layout XNNPACK keeps, and the rest stays at 8da8w's types."""
    plan = {"model.embed_tokens": "4w-g64", "model.layers.0.self_attn.qkv_proj": "8da4w-g32",
            "model.layers.0.mlp.gate_up_proj": "8da4w-g128", "model.layers.1.self_attn.k_proj": "8da4w-g64",
            "model.layers.1.mlp.down_proj": "8da4w-g32", "lm_head": "8da8w"}
    types = pte_plan_types(plan, SMOLLM2)
    assert types == {**tensor_types("8da8w", SMOLLM2), "token_embd.weight": "QB4W_G64", "output.weight": "QC8W",
                     "blk.0.attn_q.weight": "QB4W", "blk.0.attn_k.weight": "QB4W", "blk.0.attn_v.weight": "QB4W",
                     "blk.0.ffn_gate.weight": "QB4W_G128", "blk.0.ffn_up.weight": "QB4W_G128",
                     "blk.1.attn_k.weight": "QB4W_G64", "blk.1.ffn_down.weight": "QB4W"}
    assert type_bytes("QB4W_G128", 256) == 256 * (4 + 16 / 128) / 8


def test_cli_plan_as_is_on_a_pte_without_its_manifest(tmp_path):
    pte = tmp_path / "moved.pte"
    pte.write_bytes(b"\0" * 64)
    out = run_cli("plan", str(pte), "--target", "host", "--as-is")
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        f"edgechat: error: {pte}: no edgechat.json beside it lists this program, and a .pte holds no model shape of "
        "its own: keep the .pte in the directory `edgechat convert` wrote")


def test_cli_plan_too_large_is_one_line(tmp_path):
    (tmp_path / "llama8b").mkdir()
    (tmp_path / "llama8b" / "config.json").write_text(json.dumps(LLAMA_8B_HF))
    out = run_cli("plan", str(tmp_path / "llama8b"), "--target", "pixel8")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not fit pixel8" in lines[0] and "short by" in lines[0]


def test_convert_with_target_uses_the_plan_and_checks_it_on_host(stories_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("convert", str(stories_dir), "-o", str(out), "--target", "host", "--no-eval", check=True)
    m = json.loads((out / "edgechat.json").read_text())
    tp = m["target_plan"]
    assert [a["quant"] for a in m["artifacts"]] == [tp["quant"]] == ["q8_0"]
    assert tp["target"] == "host" and tp["chosen"]["placement"] == "all on CPU (cpu)"
    check = tp["host_check"]
    assert check["measured_decode_tok_s"] > 0 and check["estimated_decode_tok_s"] > 0 and check["tokens"] > 0


def test_convert_with_target_and_quant_plans_only_that_quant(stories_dir, tmp_path):
    out = tmp_path / "out"
    run_cli("convert", str(stories_dir), "-o", str(out), "--target", "rpi5-8gb", "--quant", "q4_0", "--no-eval",
            check=True)
    m = json.loads((out / "edgechat.json").read_text())
    assert m["target_plan"]["quant"] == "q4_0" and "host_check" not in m["target_plan"]
