"""Accelerator .pte artifacts from a plan: the layers a plan puts on a GPU or NPU are lowered with that
accelerator's ExecuTorch partitioner (Vulkan, Core ML), everything else with XNNPACK and the
portable CPU kernels, and which delegate each layer ended up in is read back and checked against the plan.

These programs are one decode step with static shapes (tokens [1, 1], input_pos [1]): positions travel as
a tensor (RoPE rows by index_select, the KV cache by index_copy, the causal mask by comparison), so no
symbolic integer crosses into a delegate, which Core ML's converter refuses. Prefill runs token by token.
They are fp32 programs: the Vulkan and Core ML partitioners do not take torchao's dynamically quantized
linears (8da4w/8da8w), and Core ML computes in fp16 on the device. Built and checked here; not run here
(ExecuTorch's Vulkan and Core ML runtimes need the device)."""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model
from edgechat.core.rope import apply_rope, rope_tables
from edgechat.core.transformer import Attention, Transformer

BACKEND_IDS = {"vulkan": "VulkanBackend", "coreml": "CoreMLBackend"}
LINEARS_PER_LAYER = 7  # q, k, v, o, gate, up, down (unfused here)


class StepAttention(nn.Module):
    def __init__(self, attn: Attention, max_seq_len: int):
        super().__init__()
        self.cfg = cfg = attn.cfg
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
        shape = (1, cfg.num_kv_heads, max_seq_len, cfg.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("slots", torch.arange(max_seq_len), persistent=False)

    def forward(self, x, cos, sin, pos):
        cfg, b, t = self.cfg, x.shape[0], x.shape[1]
        q = self.q_proj(x).view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        self.k_cache.index_copy_(2, pos, k)
        self.v_cache.index_copy_(2, pos, v)
        keys, values = self.k_cache, self.v_cache
        if cfg.n_rep > 1:
            keys, values = keys.repeat_interleave(cfg.n_rep, dim=1), values.repeat_interleave(cfg.n_rep, dim=1)
        mask = self.slots[None, :] <= pos[:, None]
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class StepModel(nn.Module):
    """forward(tokens [1, 1], input_pos [1]) -> logits [1, V]: one decode step."""

    def __init__(self, module: Transformer, max_seq_len: int):
        super().__init__()
        import copy

        cfg = module.cfg
        unsupported = [n for n, on in (("q/k norms", cfg.qk_norm), ("a sliding window", cfg.sliding_window),
                                       ("layers without RoPE", cfg.no_rope_layers and not all(cfg.no_rope_layers)))
                       if on]
        if unsupported:
            raise EdgechatError(f"accelerator .pte programs do not support {cfg.arch}'s {unsupported[0]} yet: "
                                "plan for the CPU (XNNPACK) .pte")
        module = copy.deepcopy(module).eval().requires_grad_(False)
        for layer in module.model.layers:
            layer.self_attn = StepAttention(layer.self_attn, max_seq_len)
        self.model, self.lm_head = module.model, module.lm_head
        cos, sin = rope_tables(module.cfg, torch.arange(max_seq_len), context=max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=True)
        self.register_buffer("rope_sin", sin, persistent=True)

    def forward(self, tokens, input_pos):
        cos, sin = self.rope_cos.index_select(0, input_pos), self.rope_sin.index_select(0, input_pos)
        x = self.model.embed(tokens)
        for layer in self.model.layers:
            x = layer(x, {"global": (cos, sin)}, input_pos)
        return self.lm_head(self.model.norm(x)[:, -1, :])


def layer_of(node) -> int | str | None:
    """The decoder layer a graph node came from, "output" for the final norm and head, None otherwise."""
    stack = [str(path) for path, _ in (node.meta.get("nn_module_stack") or {}).values()]
    for path in reversed(stack):
        m = re.search(r"layers[._\[]+(\d+)", path)
        if m:
            return int(m.group(1))
    return "output" if any("lm_head" in p or re.search(r"model[._]norm", p) for p in stack) else None


def node_units(graph) -> dict:
    """Each node's layer (or "output"); a node outside any module (a slice, a view) takes its inputs' unit
    when they all share one, so splitting partitions by unit never cuts a chain inside a layer."""
    units = {}
    for n in graph.nodes:
        u = layer_of(n) if n.op == "call_function" else None
        if u is None and n.op == "call_function":
            ins = {units.get(a) for a in n.all_input_nodes if a.op == "call_function"}
            u = ins.pop() if len(ins) == 1 else None
        units[n] = u
    return units


def is_linear(node) -> bool:
    return node.op == "call_function" and any(k in str(node.target) for k in ("linear", "addmm", ".mm."))


def accelerator_partitioner(backend: str):
    if backend == "vulkan":
        from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

        return VulkanPartitioner()
    if backend == "coreml":
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        specs = CoreMLBackend.generate_compile_specs(minimum_deployment_target=ct.target.iOS17,
                                                     compute_unit=ct.ComputeUnit.ALL)
        return CoreMLPartitioner(compile_specs=specs, take_over_mutable_buffer=False)
    raise EdgechatError(f"no accelerator partitioner {backend!r} here: choose one of {', '.join(BACKEND_IDS)}")


def layer_filter(inner, keep: set):
    """`inner`, restricted to the nodes of the layers in `keep`: what it leaves goes to the next partitioner."""
    from executorch.exir.backend.partitioner import Partitioner, PartitionResult

    class LayerFilter(Partitioner):
        def __init__(self):
            super().__init__()
            self.delegation_spec = inner.delegation_spec

        def ops_to_not_decompose(self, ep):
            return inner.ops_to_not_decompose(ep)

        def partition(self, ep):
            res = inner.partition(ep)
            graph = res.tagged_exported_program.graph_module.graph
            units = node_units(graph)
            specs = {}
            for n in graph.nodes:  # split each partition by layer, dropping the layers not planned here
                tag = n.meta.get("delegation_tag")
                if n.op != "call_function" or tag is None:
                    continue
                if units[n] in keep:
                    n.meta["delegation_tag"] = f"{tag}_{units[n]}"
                    specs[n.meta["delegation_tag"]] = res.partition_tags[tag]
                else:
                    del n.meta["delegation_tag"]
            for n in graph.nodes:  # a weight goes with a delegate only if all its users are in that one
                if n.op in ("placeholder", "get_attr") and "delegation_tag" in n.meta:
                    tags = {u.meta.get("delegation_tag") for u in n.users}
                    if len(tags) == 1 and None not in tags:
                        n.meta["delegation_tag"] = tags.pop()
                    else:
                        del n.meta["delegation_tag"]
            return PartitionResult(tagged_exported_program=res.tagged_exported_program, partition_tags=specs)

    return LayerFilter()


def planned_units(chosen: dict) -> tuple[str, set]:
    """(backend, the layers and "output" the plan's chosen .pte candidate puts on its accelerator)."""
    parts = chosen.get("partitioners") or []
    if chosen.get("format") != "pte" or len(parts) < 2 or parts[0] not in BACKEND_IDS:
        raise EdgechatError(f"the plan puts nothing on a Vulkan or Core ML accelerator (partitioners: "
                            f"{', '.join(parts) or 'none'}); plan with --format pte and --on the GPU/NPU")
    backend = parts[0]
    units = set()
    for s in chosen["slots"]:
        if s["device"].endswith(f"({backend})"):
            units.add("output" if s["name"] == "output" else int(s["name"].split(".")[1]))
    return backend, units


def delegate_coverage(edge) -> dict[str, dict]:
    """backend id -> {layer: linears it holds} over the lowered program's delegates."""
    out: dict[str, Counter] = defaultdict(Counter)
    gm = edge.exported_program().graph_module
    for n in gm.graph.nodes:
        if n.op == "get_attr" and n.name.startswith("lowered_module"):
            lm = getattr(gm, n.target)
            for on in lm.original_module.graph.nodes:
                if is_linear(on):
                    out[lm.backend_id][str(layer_of(on))] += 1
    return {k: dict(v) for k, v in out.items()}


def file_delegates(path: Path) -> dict[str, int]:
    """Delegate backend ids in a written .pte file, with how many calls each has."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    prog = deserialize_pte_binary(Path(path).read_bytes())
    prog = getattr(prog, "program", prog)
    return dict(Counter(d.id for plan in prog.execution_plan for d in plan.delegates))


def check(backend: str, units: set, coverage: dict, n_layers: int, delegates: dict) -> list[str]:
    """What differs between the plan and the artifact (empty: it matches)."""
    acc = coverage.get(BACKEND_IDS[backend], {})
    problems = []
    for u in [*range(n_layers), "output"]:
        want = (LINEARS_PER_LAYER if u != "output" else 1) if u in units else 0
        if acc.get(str(u), 0) != want:
            problems.append(f"{u}: {acc.get(str(u), 0)} of its linears in {BACKEND_IDS[backend]}, planned {want}")
    if BACKEND_IDS[backend] not in delegates:
        problems.append(f"the written file holds no {BACKEND_IDS[backend]} delegate")
    return problems


def export_planned_pte(model: Model, path: Path, chosen: dict, max_seq_len: int = 256, step=lambda *_a: None) -> dict:
    """Lower one decode step of `model` the way the plan's chosen .pte candidate says and write it to `path`;
    returns the artifact entry, with the delegates found per layer and whether they match the plan."""
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from torch.export import export

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    from converters.pte_export import llm_metadata, write_program
    from converters.pte_options import PteOptions

    backend, units = planned_units(chosen)
    seq = min(max_seq_len, model.config.max_seq_len)
    step(f"exporting one decode step (max_seq_len {seq}) for {backend}")
    with torch.no_grad():
        example = (torch.tensor([[1]], dtype=torch.long), torch.tensor([0], dtype=torch.long))
        ep = export(StepModel(model.module, seq), example, strict=False)
    step(f"lowering {sorted(units, key=str)} with {backend}, the rest with XNNPACK")
    meta = llm_metadata(model, PteOptions("fp32", 0, "none", seq, fused_ops=False))
    meta["enable_dynamic_shape"] = False
    edge = to_edge_transform_and_lower(
        ep, partitioner=[layer_filter(accelerator_partitioner(backend), units), XnnpackPartitioner()],
        compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True), constant_methods=meta)
    coverage = delegate_coverage(edge)
    write_program(edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True)), path)
    delegates = file_delegates(path)
    problems = check(backend, units, coverage, model.config.num_layers, delegates)
    return {"file": path.name, "format": "pte", "quant": "fp32", "accelerator_backend": backend,
            "max_seq_len": seq, "decode_step_only": True, "planned_on_accelerator": sorted(units, key=str),
            "linears_per_delegate": coverage, "delegates_in_file": delegates, "matches_plan": not problems,
            "mismatches": problems, "run_here": False}


def export_accelerator_pte(model: Model, out_dir: Path, target_plan: dict, step=lambda *_a: None) -> dict:
    """For `convert --target`: the accelerator artifact of a .pte plan, named after its backend."""
    from converters.gguf_export import slug

    backend = target_plan["chosen"]["partitioners"][0]
    path = Path(out_dir) / f"{slug(model.name)}-fp32-{backend}.pte"
    art = export_planned_pte(model, path, target_plan["chosen"], target_plan["request"]["n_ctx"], step)
    if not art["matches_plan"]:
        raise EdgechatError(f"the {backend} artifact does not match the plan: {'; '.join(art['mismatches'])}")
    return art
