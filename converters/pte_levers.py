"""The levers that change a .pte's fp32 weights before quantization: quantization-aware training (converters.
pte_qat, on a copy of the model) and activation-aware scales folded into the norms (converters.pte_awq, on the
export module). What they did goes into the artifact's manifest entry."""
from __future__ import annotations

from converters.pte_options import DEFAULT_GROUP_SIZE  # the group the levers aim at when the options have none
from edgechat.core.model import Model


def calibration_for(model: Model, calibration=None) -> list[list[int]]:
    """The calibration sequences given, or the default chat-formatted ones."""
    if calibration:
        return calibration
    from edgechat.core.conversation import calibration_sequences

    return calibration_sequences(model, None)


def prepare_module(model: Model, opts, calibration=None, step=lambda *_a, **_k: None, plan=None):
    """The fp32 export module (converters.pte_modules) of `opts` (a PteOptions) with QAT (toward a budget's
    per-module `plan` where given) and the activation-aware scales applied; returns (module, the levers'
    manifest record)."""
    from converters.pte_modules import export_module

    record, source = {}, model
    group = opts.group_size or DEFAULT_GROUP_SIZE
    if opts.qat_steps:
        from converters.pte_qat import qat_train

        step(f"quantization-aware training: {opts.qat_steps} steps distilled from the fp32 model"
             + (", toward the budget's plan" if plan else ""))
        linear = "8da8w" if opts.quant == "8da8w" else f"8da4w-g{group}"
        head = "8da8w" if opts.head_quant in ("8w", "plan") or opts.quant == "8da8w" else linear
        source, record["qat"] = qat_train(model, opts.qat_steps, linear, head, device=opts.qat_device,
                                            plan=plan)
    module = export_module(source.module, opts.max_seq_len, fused_ops=opts.fused_ops, fuse_qkv=opts.fuse_qkv,
                           fuse_mlp=opts.fuse_mlp)
    if opts.awq:
        from converters import mixed_precision as mp
        from converters.pte_awq import apply_awq

        step("activation-aware scales on calibration text, folded into the norms")
        record["awq"] = apply_awq(module, mp.calibration_batch(calibration_for(model, calibration)), group,
                                  opts.max_seq_len)
    return module, record
