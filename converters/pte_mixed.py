""".pte mixed precision for a size budget: per-module configs (8da4w at group 32/64/128, 8da8w per channel, and
for the embedding 4-bit groups or 8-bit rows), chosen by each module's measured sensitivity (how much the KL
divergence to the fp32 model grows on calibration text when that module alone is quantized to a candidate)
with converters.mixed_precision's one dynamic programme, and applied by torchao's quantize_ with a filter per
module (the configs ExecuTorch's own llama quantize() uses, so XNNPACK takes every linear).

The modules are those of the export module (converters.pte_modules: q/k/v and gate/up fused when asked), so
a plan names the linears the program holds."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from converters import mixed_precision as mp
from edgechat.core.errors import EdgechatError
from edgechat.core.native_io import quiet_stderr
from targets.quants import parse_pte_choice as parse  # the planner reads the same choices (pte_choice_type)

LINEAR_CHOICES = ("8da4w-g32", "8da4w-g64", "8da4w-g128", "8da8w")
EMBEDDING_CHOICES = ("4w-g32", "4w-g64", "4w-g128", "8w")
ALIGN = 16  # XNNPACK's and ExecuTorch's constant data alignment (CONSTANT_TENSOR_ALIGNMENT)
PROGRAM_SLACK = 50 * 1024  # bytes: the flatbuffer program beyond its weights (stories260K: 45-48 KiB, by plan)
PER_MODULE_SLACK = 700  # bytes of program per delegated linear (its XNNPACK graph and tensor records)


@dataclass(frozen=True)
class PlannedModule:
    name: str  # the module's path in the export module: model.layers.0.self_attn.qkv_proj
    kind: str  # "linear" or "embedding"
    rows: int  # output features (an embedding's vocabulary)
    cols: int  # input features (an embedding's width)


def candidates(m: PlannedModule) -> tuple[str, ...]:
    """The choices whose group divides the module's input width, cheapest first."""
    choices = LINEAR_CHOICES if m.kind == "linear" else EMBEDDING_CHOICES
    fits = [c for c in choices if not parse(c)[1] or m.cols % parse(c)[1] == 0]
    return tuple(sorted(fits, key=lambda c: module_bytes(m, c)))


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def module_bytes(m: PlannedModule, choice: str) -> int:
    """The module's bytes in the program: XNNPACK packs 4-bit weights two a byte and keeps per-group scales
    in bf16 and per-channel scales in fp32 (backends/xnnpack/operators/node_visitor.py); ExecuTorch's
    quantized embedding keeps packed weights and fp32 scales per row or group."""
    bits, group, _ = parse(choice)
    weights = m.rows * m.cols * bits // 8
    scales = m.rows * (m.cols // group if group else 1)
    scale_bytes = (2 if group and m.kind == "linear" else 4) * scales
    return _aligned(weights) + _aligned(scale_bytes)


def planned_modules(module: nn.Module) -> list[PlannedModule]:
    """The export module's linears and embedding, in module order."""
    out = []
    for name, mod in module.named_modules():
        if isinstance(mod, nn.Linear):
            out.append(PlannedModule(name, "linear", mod.out_features, mod.in_features))
        elif isinstance(mod, nn.Embedding):
            out.append(PlannedModule(name, "embedding", mod.num_embeddings, mod.embedding_dim))
    return out


# ---- the budget ----------------------------------------------------------------------------------------

def fixed_bytes(module: nn.Module, planned: list[PlannedModule], seq_len: int) -> int:
    """What the program holds besides the planned modules: every other persistent constant (norm weights, RoPE
    tables for seq_len positions) in fp32, and the program itself."""
    from converters.pte_modules import ExportModel

    names = {m.name for m in planned}
    params = {id(p): p for n, p in module.named_parameters(remove_duplicate=False)
              if n.rsplit(".", 1)[0] not in names}
    consts = sum(_aligned(p.numel() * p.element_size()) for p in params.values())
    consts += sum(_aligned(b.numel() * b.element_size()) for n, b in ExportModel(module, seq_len).named_buffers()
                  if n.startswith("rope"))
    linears = sum(m.kind == "linear" for m in planned)
    return consts + PROGRAM_SLACK + PER_MODULE_SLACK * linears + 4 * seq_len  # an int32 position table


def budget_bytes(budget: dict, fixed: int, params: int) -> int:
    """Bytes the planned modules may take for {"bpw": X} (a .pte's bits per weight: its file's bits over the
    model's weights, as the manifest counts them) or {"size_mib": N} (the whole file)."""
    if "bpw" in budget:
        return math.floor(budget["bpw"] * params / 8) - fixed
    return math.floor(budget["size_mib"] * 2**20) - fixed


def plan_bytes(planned: list[PlannedModule], least: dict[str, int] | None = None, largest: bool = False) -> int:
    """The planned modules' bytes in the smallest plan (each at its cheapest candidate) or in the largest (each
    at its costliest); a module's `least` bytes, where given, are all it can take."""
    least = least or {}
    return sum(least.get(m.name, module_bytes(m, candidates(m)[-1 if largest else 0])) for m in planned)


def check_budget(budget: dict, fixed: int, params: int, planned: list[PlannedModule],
                 least: dict[str, int] | None = None, why: str = "the per-module types allow") -> int:
    """The planned modules' byte budget; a budget below the smallest candidates' (or a module's `least` bytes
    where given) is refused with the smallest size possible in both units."""
    allowed = budget_bytes(budget, fixed, params)
    smallest = plan_bytes(planned, least)
    if allowed < smallest:
        need = smallest + fixed
        raise EdgechatError(f"a budget of {mp.budget_text(budget)} is below the smallest .pte {why} "
                            f"for this model: {math.ceil(need / 2**20 * 100) / 100:.2f} MiB "
                            f"({math.ceil(need * 8 / params * 100) / 100:.2f} bits per weight); ask for at least that")
    return allowed


# ---- torchao configs and the plan applied --------------------------------------------------------------

def linear_config(choice: str, hqq: bool):
    """The config ExecuTorch's llama quantize() builds for 8da4w/8da8w (source_transformation/quantize.py)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    bits, group, _ = parse(choice)
    return Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4 if bits == 4 else torch.int8,
        weight_granularity=PerGroup(group) if group else PerAxis(0),
        intx_choose_qparams_algorithm="hqq_scale_only" if hqq else "affine")


def apply_plan(module: nn.Module, plan: dict[str, str], hqq: bool) -> nn.Module:
    """Quantize `module` in place by the plan: the embedding by ExecuTorch's quantized-embedding transform,
    then each group of linears sharing a choice by one quantize_ with a filter on their names."""
    from executorch.examples.models.llama.source_transformation.quantize import get_quant_embedding_transform
    from torchao.quantization import quantize_

    kinds = {m.name: m.kind for m in planned_modules(module)}
    emb = [c for n, c in plan.items() if kinds.get(n) == "embedding"]
    if emb:
        bits, group, _ = parse(emb[0])
        module = get_quant_embedding_transform(f"{bits},{group}", quantize_with_hqq=hqq)(module)
    for choice in dict.fromkeys(c for n, c in plan.items() if kinds.get(n) == "linear"):
        names = {n for n, c in plan.items() if c == choice and kinds.get(n) == "linear"}
        quantize_(module, linear_config(choice, hqq), filter_fn=lambda m, fqn, names=names: fqn in names)
    return module


def uniform_plan(module: nn.Module, linear: str, embedding: str | None, head: str | None = None) -> dict[str, str]:
    """Every linear at `linear` (the head at `head`), the embedding at `embedding` (None: kept fp32)."""
    plan = {}
    for m in planned_modules(module):
        if m.kind == "embedding":
            if embedding:
                plan[m.name] = embedding
        else:
            plan[m.name] = head if head and m.name == "lm_head" else linear
    return plan


# ---- sensitivity ---------------------------------------------------------------------------------------

def _set(module: nn.Module, name: str, child: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, child)


def _quantized_copy(m: PlannedModule, mod: nn.Module, choice: str, hqq: bool) -> tuple[nn.Module, torch.Tensor]:
    """The module alone quantized to `choice` (an embedding as a dequantized fp32 table: the same values
    ExecuTorch's quantized embedding looks up), and its dequantized weight."""
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    bits, group, _ = parse(choice)
    holder = nn.Sequential(copy.deepcopy(mod))
    if m.kind == "linear":
        quantize_(holder, linear_config(choice, hqq))
        return holder[0], holder[0].weight.dequantize().float()
    cfg = IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"),
                               granularity=PerGroup(group) if group else PerAxis(0),
                               intx_choose_qparams_algorithm="hqq_scale_only" if hqq else "affine")
    quantize_(holder, cfg, lambda x, _fqn: isinstance(x, nn.Embedding))
    w = holder[0].weight.dequantize().float()
    return nn.Embedding.from_pretrained(w, freeze=True), w


def measurements(planned: list[PlannedModule], measure_all: bool) -> int:
    return sum(len(candidates(m)) for m in planned) if measure_all else len(planned)


def sensitivity(module: nn.Module, seq_len: int, batch: torch.Tensor, hqq: bool, measure_all: bool | None = None,
                on_step=None) -> dict:
    """{"tensors": {module: {"rows", "cols", "types": {choice: {"bytes", "kld", "measured"}}}}, "method", ...}, in
    the form converters.mixed_precision.choose_types plans from. `module` is the fp32 export module (after any
    activation-aware scaling); each candidate is swapped in alone and the mean KL over `batch`'s positions
    measured. For a large model only each module's cheapest candidate is measured and the others scaled by
    their output-error energy (weights' error squared times their inputs' mean square), as the GGUF side does."""
    from converters.pte_modules import ExportModel

    with torch.inference_mode(), quiet_stderr():
        planned = planned_modules(module)
        if measure_all is None:
            measure_all = sum(p.numel() for p in module.parameters()) * batch.numel() * \
                sum(len(candidates(m)) for m in planned) < mp.MEASURE_ALL_MACS
        runner = ExportModel(module, seq_len, last_only=False)
        mods = dict(module.named_modules())
        squares: dict[str, torch.Tensor] = {}

        def hook(name):
            def record(_mod, args):
                x = args[0].detach().float().flatten(0, -2)
                squares[name] = squares.get(name, 0) + x.pow(2).sum(0)
            return record

        handles = [mods[m.name].register_forward_pre_hook(hook(m.name)) for m in planned if m.kind == "linear"]
        try:
            ref = torch.cat([torch.log_softmax(runner(row[None], torch.tensor([0])).float(), -1) for row in batch])
        finally:
            for h in handles:
                h.remove()

        def kld() -> float:
            logp = torch.cat([torch.log_softmax(runner(row[None], torch.tensor([0])).float(), -1) for row in batch])
            return max(float((ref.exp() * (ref - logp)).sum(-1).mean()), 0.0)

        result, energy = {}, {}
        for m in planned:
            orig = mods[m.name]
            cands = candidates(m)
            result[m.name] = {"rows": m.rows, "cols": m.cols, "kind": m.kind, "types": {}}
            for choice in cands:
                q, w = _quantized_copy(m, orig, choice, hqq)
                err = (w - orig.weight.float()).double().pow(2)
                act = squares.get(m.name)
                energy[m.name, choice] = float((err * act.double()).sum() if act is not None else err.sum())
                entry = {"bytes": module_bytes(m, choice), "kld": None, "measured": False}
                if measure_all or choice == cands[0]:
                    _set(module, m.name, q)
                    try:
                        entry["kld"], entry["measured"] = kld(), True
                    finally:
                        _set(module, m.name, orig)
                    if on_step:
                        on_step()
                result[m.name]["types"][choice] = entry
        for m in planned:
            mp.scale_unmeasured(result[m.name]["types"], candidates(m)[0], lambda c, n=m.name: energy[n, c])
    return {"tensors": result, "method": "measured" if measure_all else "measured at the cheapest type, scaled",
            "calibration": {"sequences": int(batch.shape[0]), "tokens": int(batch.numel())}, "hqq": hqq}
