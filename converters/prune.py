"""Structured pruning, uniform across layers so the result is still a standard config of its family:
depth (whole decoder blocks) and width (MLP channels, attention heads as whole KV groups, hidden size).
Widths are ranked by activation importance on calibration text, as in NVIDIA's Minitron recipe; blocks are
removed by measured loss: iteratively, the block whose removal raises the calibration loss least."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from edgechat.core import archs
from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model, build_module

ALIGN = 32  # pruned widths stay multiples of 32: GGUF Q8_0/Q4_0 blocks and 8da4w groups need it
# calibration sequences the layer-removal loss is measured on: dropping k of L blocks runs about k x L
# forward passes over them, so a few suffice (the order is what matters, and it is stable on 8 dialogues)
LOSS_SEQS = 8


@dataclass
class Importance:
    layers: list[float]  # block influence: 1 - cos(hidden in, hidden out), mean over tokens
    ffn: list[torch.Tensor]  # per layer [intermediate]: mean square of the down_proj input
    groups: list[torch.Tensor]  # per layer [num_kv_heads]: norm of the heads' attention output, per KV group
    hidden: torch.Tensor  # [hidden]: mean |x| of every RMSNorm output
    calib: list[list[int]] | None = None  # sequences for the layer-removal loss (None: block influence decides)


@dataclass
class PrunePlan:
    drop_layers: int = 0
    ffn_keep: int | None = None
    kv_groups_keep: int | None = None
    hidden_keep: int | None = None
    chosen: dict = field(default_factory=dict)  # what was kept, for the manifest


@torch.inference_mode()
def measure_importance(model: Model, sequences: list[list[int]], on_sequence=None) -> Importance:
    cfg, m = model.config, model.module
    n = cfg.num_layers
    layer_sum, tokens = [0.0] * n, 0
    ffn = [torch.zeros(cfg.intermediate_size, dtype=torch.float64) for _ in range(n)]
    heads = [torch.zeros(cfg.num_heads, dtype=torch.float64) for _ in range(n)]
    hidden = torch.zeros(cfg.hidden_size, dtype=torch.float64)
    hooks = []

    def on_layer(i):
        def fn(_mod, args, out):
            x, y = args[0][0], out[0]
            layer_sum[i] += float((1 - torch.nn.functional.cosine_similarity(x, y, dim=-1)).sum())
        return fn

    def on_down(i):
        def fn(_mod, args, _out):
            ffn[i] += args[0][0].double().pow(2).sum(0)
        return fn

    def on_o(i):
        def fn(_mod, args, _out):
            a = args[0][0].double().view(-1, cfg.num_heads, cfg.head_dim)
            heads[i] += a.norm(dim=-1).sum(0)
        return fn

    def on_norm(_mod, _args, out):
        hidden.add_(out[0].double().abs().sum(0))

    for i, layer in enumerate(m.model.layers):
        hooks += [layer.register_forward_hook(on_layer(i)), layer.mlp.down_proj.register_forward_hook(on_down(i)),
                  layer.self_attn.o_proj.register_forward_hook(on_o(i)),
                  layer.input_layernorm.register_forward_hook(on_norm),
                  layer.post_attention_layernorm.register_forward_hook(on_norm)]
    hooks.append(m.model.norm.register_forward_hook(on_norm))
    try:
        for i, ids in enumerate(sequences):
            m(torch.tensor([ids]))
            tokens += len(ids)
            if on_sequence:
                on_sequence(i + 1)
    finally:
        for h in hooks:
            h.remove()
    if tokens == 0:
        raise EdgechatError("no calibration tokens to measure importance on")
    groups = [h.view(cfg.num_kv_heads, cfg.n_rep).sum(-1) / tokens for h in heads]
    return Importance(layers=[s / tokens for s in layer_sum], ffn=[f / tokens for f in ffn], groups=groups,
                      hidden=hidden / tokens, calib=[list(s) for s in sequences[:LOSS_SEQS]])


def _token_loss(logits, t) -> float:
    """Summed next-token cross-entropy of one sequence's logits."""
    return float(torch.nn.functional.cross_entropy(logits[0, :-1].float(), t[0, 1:], reduction="sum"))


def _mean(total: float, n: int) -> float:
    if n == 0:
        raise EdgechatError("no calibration tokens to measure the layer-removal loss on")
    return total / n


@torch.inference_mode()
def calibration_loss(module, sequences: list[list[int]]) -> float:
    """Mean next-token cross-entropy over every token of the sequences."""
    total, n = 0.0, 0
    for ids in sequences:
        t = torch.tensor([ids])
        total += _token_loss(module(t), t)
        n += len(ids) - 1
    return _mean(total, n)


@torch.inference_mode()
def removal_losses(module, sequences: list[list[int]], keep: list[int]) -> dict[int, float]:
    """For each block in `keep`, the calibration loss of the model made of the other blocks of `keep`. A block's
    input does not depend on the blocks after it, so every block's input is computed once per sequence and each
    trial runs only the blocks after the one it leaves out: half the work of running every trial model whole."""
    layers = module.model.layers
    total, n = dict.fromkeys(keep, 0.0), 0
    for ids in sequences:
        t = torch.tensor([ids])
        x, rope = module.embed_and_rope(t)
        inputs = [x]  # inputs[k]: the input of block keep[k] (the last block's output is never needed)
        for j in keep[:-1]:
            inputs.append(layers[j](inputs[-1], rope, None))
        for k, i in enumerate(keep):
            y = inputs[k]
            for j in keep[k + 1:]:
                y = layers[j](y, rope, None)
            total[i] += _token_loss(module.lm_head(module.model.norm(y)), t)
        n += len(ids) - 1
    return {i: _mean(v, n) for i, v in total.items()}


def layers_by_loss(model: Model, sequences: list[list[int]], n_drop: int) -> list[dict]:
    """Remove n_drop blocks one at a time: each round measures the calibration loss of the model without each
    remaining block and removes the one whose removal raises it least, then measures again with that block
    gone (a block's cost depends on which others are left). Returns [{"layer", "loss_without"}] in order."""
    keep, removed = list(range(len(model.module.model.layers))), []
    for _ in range(n_drop):
        losses = removal_losses(model.module, sequences, keep)
        best = min(keep, key=lambda i: (losses[i], i))  # ties: the earlier block, as the trial order had it
        keep.remove(best)
        removed.append({"layer": best, "loss_without": round(losses[best], 6)})
    return removed


def aligned(keep: int, full: int, step: int = ALIGN) -> int:
    if full <= step:
        return max(1, keep)
    return max(step, keep // step * step)


def plan_from_options(cfg, layers: int = 0, ffn_frac: float = 0.0, heads: int = 0, hidden_frac: float = 0.0) -> PrunePlan:
    """--prune-layers N, --prune-ffn FRAC, --prune-heads N (attention heads, whole KV groups), --prune-hidden FRAC."""
    if not 0 <= layers < cfg.num_layers:
        raise EdgechatError(f"cannot prune {layers} layers: the model has {cfg.num_layers} (at least one must stay)")
    for name, frac in (("--prune-ffn", ffn_frac), ("--prune-hidden", hidden_frac)):
        if not 0 <= frac < 1:
            raise EdgechatError(f"{name} {frac} is out of range: give a fraction in [0, 1)")
    if heads % cfg.n_rep:
        raise EdgechatError(f"cannot prune {heads} heads: heads go in KV groups of {cfg.n_rep}, give a multiple of {cfg.n_rep}")
    if heads >= cfg.num_heads:
        raise EdgechatError(f"cannot prune {heads} heads: the model has {cfg.num_heads} per layer (at least one group must stay)")
    hidden_keep = None
    if hidden_frac:
        # transformers wants hidden_size % num_heads == 0, quant blocks want multiples of 32
        step = math.lcm(ALIGN, cfg.num_heads - heads)
        hidden_keep = round(cfg.hidden_size * (1 - hidden_frac)) // step * step
        if hidden_keep < step:
            raise EdgechatError(f"cannot prune the hidden size to {1 - hidden_frac:.0%}: it must stay a multiple of "
                                f"{step} (32 and the {cfg.num_heads - heads} heads) and at least {step}")
    new_hidden = hidden_keep or cfg.hidden_size
    if archs.get(cfg.arch).heads_span_hidden and (cfg.num_heads - heads) * cfg.head_dim != new_hidden:
        raise EdgechatError(f"llama.cpp's {cfg.arch} needs heads x head_dim == hidden size: with {cfg.num_heads - heads} "
                            f"heads of {cfg.head_dim}, prune the hidden size to {(cfg.num_heads - heads) * cfg.head_dim} too")
    return PrunePlan(
        drop_layers=layers,
        ffn_keep=aligned(round(cfg.intermediate_size * (1 - ffn_frac)), cfg.intermediate_size) if ffn_frac else None,
        kv_groups_keep=cfg.num_kv_heads - heads // cfg.n_rep if heads else None,
        hidden_keep=hidden_keep)


def plan_for_target(cfg, target_frac: float, strategy: str = "width") -> PrunePlan:
    """The plan whose parameter count comes closest to target_frac of the model's (not above it):
    width (Minitron's preference: MLP and hidden first, heads last), depth (whole blocks) or mixed."""
    if not 0 < target_frac < 1:
        raise EdgechatError(f"--target-params {target_frac} is out of range: give a fraction in (0, 1)")
    full, target = cfg.param_count(), target_frac * cfg.param_count()
    fracs = [i / 16 for i in range(0, 14)]
    layer_opts = range(cfg.num_layers) if strategy in ("depth", "mixed") else [0]
    width = strategy in ("width", "mixed")
    best = None
    for layers in layer_opts:
        for ffn in fracs if width else [0.0]:
            for hid in fracs[:9] if width else [0.0]:
                for groups in range(0, cfg.num_kv_heads) if width else [0]:
                    try:
                        plan = plan_from_options(cfg, layers, ffn, groups * cfg.n_rep, hid)
                    except EdgechatError:  # a hidden size the remaining heads cannot divide
                        continue
                    params = pruned_config(cfg, plan).param_count()
                    if params > target:
                        continue
                    # closest to the target; then fewer heads removed; then fewer layers removed
                    key = (target - params, groups, layers)
                    if best is None or key < best[0]:
                        best = (key, plan, params)
    if best is None:
        raise EdgechatError(f"no {strategy} pruning reaches {target_frac:.0%} of {full / 1e6:.1f}M parameters")
    best[1].chosen["strategy"] = strategy
    return best[1]


def pruned_config(cfg, plan: PrunePlan):
    """The pruned shape (the first layers' per-layer patterns: prune() sets the kept layers' own)."""
    cfg = cfg.keep_layers(list(range(cfg.num_layers - plan.drop_layers)))
    changes = {}
    if plan.ffn_keep:
        changes["intermediate_size"] = plan.ffn_keep
    if plan.kv_groups_keep:
        changes.update(num_kv_heads=plan.kv_groups_keep, num_heads=plan.kv_groups_keep * cfg.n_rep)
    if plan.hidden_keep:
        changes["hidden_size"] = plan.hidden_keep
    return cfg.replace(**changes)


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, k).indices).values  # keep the original order


def prune(model: Model, plan: PrunePlan, imp: Importance, chosen_before: dict | None = None) -> Model:
    """Apply the plan; every layer keeps the same widths, so the config stays standard. `chosen_before`: an
    earlier run's plan.chosen for the same model and calibration, whose measured block removal is reused: the
    removal is greedy, so the first k blocks of a longer one are exactly what measuring k would remove."""
    cfg = model.config
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    reuse = bool(chosen_before) and len(chosen_before.get("layer_removal", [])) >= plan.drop_layers
    if plan.drop_layers and (reuse or imp.calib):
        if reuse:
            plan.chosen.update(layer_removal=chosen_before["layer_removal"][:plan.drop_layers],
                               calib_loss_full=chosen_before["calib_loss_full"])
        else:
            plan.chosen.update(layer_removal=layers_by_loss(model, imp.calib, plan.drop_layers),
                               calib_loss_full=round(calibration_loss(model.module, imp.calib), 6))
        keep_layers = sorted(set(range(cfg.num_layers)) - {r["layer"] for r in plan.chosen["layer_removal"]})
    else:  # no calibration sequences kept: the least influential blocks (1 - cos of their input and output)
        keep_layers = sorted(sorted(range(cfg.num_layers), key=lambda i: -imp.layers[i])[:cfg.num_layers - plan.drop_layers])
    hd = cfg.head_dim
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        if plan.ffn_keep:
            idx = top(imp.ffn[i], plan.ffn_keep)
            for n in ("gate_proj", "up_proj"):
                sd[p + f"mlp.{n}.weight"] = sd[p + f"mlp.{n}.weight"][idx]
            sd[p + "mlp.down_proj.weight"] = sd[p + "mlp.down_proj.weight"][:, idx]
        if plan.kv_groups_keep:
            g = top(imp.groups[i], plan.kv_groups_keep)
            kv_rows = torch.cat([torch.arange(j * hd, (j + 1) * hd) for j in g.tolist()])
            q_rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for j in g.tolist()
                                for h in range(j * cfg.n_rep, (j + 1) * cfg.n_rep)])
            for n, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
                for kind in ("weight", "bias"):
                    key = p + f"self_attn.{n}.{kind}"
                    if key in sd:
                        sd[key] = sd[key][rows]
            sd[p + "self_attn.o_proj.weight"] = sd[p + "self_attn.o_proj.weight"][:, q_rows]
    if plan.hidden_keep:
        idx = top(imp.hidden, plan.hidden_keep)
        for key, w in list(sd.items()):
            if key.endswith(("q_norm.weight", "k_norm.weight")):  # per head: head_dim wide, untouched
                continue
            if key.endswith("norm.weight"):  # every hidden-wide norm, Gemma 3's extra ones too
                sd[key] = w[idx]
            elif key in ("model.embed_tokens.weight", "lm_head.weight") or any(
                    s in key for s in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj", "up_proj")):
                sd[key] = w[:, idx]
            elif "o_proj.weight" in key or "down_proj.weight" in key:
                sd[key] = w[idx]
    renumbered = {}
    for key, w in sd.items():
        if key.startswith("model.layers."):
            i = int(key.split(".")[2])
            if i not in keep_layers:
                continue
            key = key.replace(f"model.layers.{i}.", f"model.layers.{keep_layers.index(i)}.", 1)
        renumbered[key] = w
    kept = cfg.keep_layers(keep_layers)  # per-layer patterns follow the kept layers (of the source, not the first N)
    new_cfg = pruned_config(cfg, plan).replace(num_layers=kept.num_layers, layer_types=kept.layer_types,
                                               no_rope_layers=kept.no_rope_layers)
    plan.chosen.update(kept_layers=keep_layers, config=vars(new_cfg).copy(),
                       params_before=cfg.param_count(), params_after=new_cfg.param_count(),
                       layer_importance=[round(x, 6) for x in imp.layers])
    module = build_module(new_cfg, renumbered, "pruned model")
    return Model(new_cfg, module, model.tokenizer, model.chat_template, dict(model.source), name=model.name)
