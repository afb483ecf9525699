"""Activation-aware scales (AWQ-style) for the .pte's 4-bit linears, folded into the RMSNorm before them.

A norm's output x feeds q/k/v (input_layernorm) or gate/up (the MLP's input norm). Scaling input channel j
of those weights by s_j and dividing the norm's weight by s_j leaves the fp32 function unchanged (the norm's
output is x * w elementwise), but moves quantization error away from the channels whose activations are
large: those get finer steps. s = mean|x|^alpha (normalised to a geometric mean of 1), alpha searched on a
grid per group on calibration activations, scoring the output error of the quantized weights, the dynamic
int8 per-token activations included, as 8da4w computes them."""
from __future__ import annotations

import torch
from torch import nn

ALPHAS = tuple(i / 10 for i in range(11))
MAX_ROWS = 2048  # calibration positions each group's search scores (its inputs, subsampled)


def _groups(layer) -> list[tuple[str, list[nn.Linear]]]:
    """(norm attribute, the linears reading its output) for one decoder layer, fused or not."""
    attn, mlp = layer.self_attn, layer.mlp
    qkv = [attn.qkv_proj] if hasattr(attn, "qkv_proj") else [attn.q_proj, attn.k_proj, attn.v_proj]
    gate_up = [mlp.gate_up_proj] if hasattr(mlp, "gate_up_proj") else [mlp.gate_proj, mlp.up_proj]
    mlp_norm = "pre_feedforward_layernorm" if getattr(layer, "sandwich", False) else "post_attention_layernorm"
    return [("input_layernorm", qkv), (mlp_norm, gate_up)]


def fake_quant_weight(w: torch.Tensor, group: int, bits: int = 4) -> torch.Tensor:
    """Symmetric per-group quantize-dequantize, as torchao's affine int4/int8 choose_qparams does."""
    rows, cols = w.shape
    g = w.reshape(rows, cols // group, group) if group else w.reshape(rows, 1, cols)
    qmax = 2 ** (bits - 1) - 1
    scale = (g.abs().amax(-1, keepdim=True) / ((2 * qmax + 1) / 2)).clamp(min=1e-9)
    q = (g / scale).round().clamp(-qmax - 1, qmax)
    return (q * scale).reshape(rows, cols)


def fake_quant_tokens(x: torch.Tensor) -> torch.Tensor:
    """Asymmetric per-token int8 quantize-dequantize (8da's dynamic activations)."""
    lo, hi = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / 255).clamp(min=1e-9)
    zero = (-128 - lo / scale).round()
    q = (x / scale + zero).round().clamp(-128, 127)
    return (q - zero) * scale


def search_scales(x: torch.Tensor, weight: torch.Tensor, group: int) -> tuple[torch.Tensor, float, float]:
    """The per-input-channel scales that minimise the quantized output's squared error on x [N, in]:
    (scales, alpha, error relative to alpha = 0's)."""
    ref = x @ weight.T
    mean_abs = x.abs().mean(0).clamp(min=1e-5)
    best = None
    for alpha in ALPHAS:
        s = mean_abs.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        out = fake_quant_tokens(x / s) @ fake_quant_weight(weight * s, group).T
        err = float((out - ref).pow(2).mean())
        if alpha == 0:
            base = err
        if best is None or err < best[2]:
            best = (s, alpha, err)
    return best[0], best[1], best[2] / base if base > 0 else 1.0


def _fold(norm, linears: list[nn.Linear], s: torch.Tensor) -> None:
    with torch.no_grad():
        if getattr(norm, "unit_offset", False):  # Gemma: x * (1 + w)
            norm.weight.copy_((1.0 + norm.weight) / s - 1.0)
        else:
            norm.weight.div_(s)
        for lin in linears:
            lin.weight.mul_(s)


def apply_awq(module: nn.Module, batch: torch.Tensor, group: int, seq_len: int) -> dict:
    """Search and fold, layer by layer, in place on an fp32 export module; returns the manifest's record
    (alpha and relative output error per group), from one pass of the calibration batch."""
    from edgechat.core.native_io import quiet_stderr
    from converters.pte_modules import ExportModel

    runner = ExportModel(module, seq_len, last_only=False)
    groups = [(i, layer, norm_name, linears) for i, layer in enumerate(module.model.layers)
              for norm_name, linears in _groups(layer)]
    captured: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(groups))}
    record = {}
    with torch.inference_mode(), quiet_stderr():
        # one pass captures every group's input: a fold keeps the fp32 function, so no later input changes
        handles = [g[3][0].register_forward_pre_hook(
            lambda _m, args, k=k: captured[k].append(args[0].detach().flatten(0, -2).float()))
            for k, g in enumerate(groups)]
        try:
            for row in batch:
                runner(row[None], torch.tensor([0]))
        finally:
            for h in handles:
                h.remove()
        for k, (i, layer, norm_name, linears) in enumerate(groups):
            x = torch.cat(captured.pop(k))
            if x.shape[0] > MAX_ROWS:
                x = x[torch.linspace(0, x.shape[0] - 1, MAX_ROWS).long()]
            weight = torch.cat([lin.weight.float() for lin in linears])
            g = group if group and weight.shape[1] % group == 0 else 0
            s, alpha, rel = search_scales(x, weight, g)
            if alpha > 0:
                _fold(getattr(layer, norm_name), linears, s)
            record[f"layers.{i}.{norm_name}"] = {"alpha": alpha, "rel_error": round(rel, 4)}
    return record
