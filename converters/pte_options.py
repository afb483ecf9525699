"""The options of a .pte export: which quant, group, embedding and head bits, sequence length and levers,
their defaults per quant, and every refusal that can be made before any work (check_options: before the
model loads; resolve_options: against its shapes)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model

EMBEDDING_QUANTS = ("8w", "4w", "none")
HEAD_QUANTS = ("8w", "4w")
GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 32  # the block size of llama.cpp's Q4_0, so the two 4-bit formats compare like for like
DEFAULT_MAX_SEQ_LEN = 2048


@dataclass
class PteOptions:
    quant: str
    group_size: int  # 0: per output channel
    embedding_quant: str
    max_seq_len: int
    head_quant: str = ""  # the output projection's weights: "8w" or "4w" ("": fp32 program)
    fused_ops: bool = True  # llama::custom_sdpa + llama::update_cache (False: the plain-op baseline)
    fuse_qkv: bool = True
    fuse_mlp: bool = True
    # Also lower `forward_all` (logits at every position) so quality figures score at prefill speed. Off by
    # default: it doubles the lowering time, more than stepping `forward` costs for the pipeline's quality
    # check (the engine falls back to that).
    eval_method: bool = False
    hqq: bool = False  # HQQ scale-only parameters (ExecuTorch's default) instead of plain affine min/max scales
    awq: bool = False  # activation-aware per-input-channel scales folded into the preceding norms (pte_awq)
    qat_steps: int = 0  # quantization-aware training steps, distilled from the fp32 model (pte_qat)
    qat_device: str = "cpu"
    plan: dict | None = None  # per-module choices (converters.pte_mixed), e.g. a budget's plan
    share_tied: bool = False  # a tied embedding/head held once, in a .ptd beside the program (pte_tied)


def check_options(quants: list[str], extra: dict) -> None:
    """What can be refused before the model is loaded: an unsupported quant/embedding/group combination."""
    group, emb, seq = extra.get("group_size"), extra.get("embedding_quant"), extra.get("max_seq_len")
    if group is not None and group not in GROUP_SIZES:
        raise EdgechatError(f"--group-size {group} is not supported: choose one of {', '.join(map(str, GROUP_SIZES))}")
    if emb is not None and emb not in EMBEDDING_QUANTS:
        raise EdgechatError(f"--embedding-quant {emb} is not supported: choose one of {', '.join(EMBEDDING_QUANTS)}")
    head = extra.get("head_quant")
    if head is not None and head not in HEAD_QUANTS:
        raise EdgechatError(f"--head-quant {head} is not supported: choose one of {', '.join(HEAD_QUANTS)}")
    if quants == ["fp32"] and head is not None:
        raise EdgechatError("--head-quant applies to 8da4w and 8da8w, not to --quant fp32")
    if quants == ["8da8w"] and head == "4w":
        raise EdgechatError("--head-quant 4w with --quant 8da8w is not supported: an 8da8w head has 8-bit weights")
    if seq is not None and seq < 2:
        raise EdgechatError(f"--max-seq-len {seq} is too small: give at least 2")
    if quants == ["fp32"] and emb not in (None, "none"):
        raise EdgechatError(f"--embedding-quant {emb} with --quant fp32 is not supported: an fp32 program keeps "
                            "an fp32 embedding; quantize it with 8da8w or 8da4w")
    if quants == ["fp32"] and group is not None:
        raise EdgechatError("--group-size applies to 8da4w and 8da8w, not to --quant fp32")
    if extra.get("qat_steps") and extra.get("hqq"):
        raise EdgechatError("--hqq with --qat-steps is not supported: quantization-aware training learns the "
                            "affine grid the program is then quantized with; drop --hqq")
    if extra.get("qat_steps") is not None and extra["qat_steps"] < 0:
        raise EdgechatError(f"--qat-steps {extra['qat_steps']} is negative: give 0 (no training) or more")
    if extra.get("share_tied") and quants and not extra.get("budgets") and "fp32" in quants:
        raise EdgechatError("--share-tied applies to quantized programs (8da8w, 8da4w --head-quant 8w "
                            "--embedding-quant 8w, or --bpw/--size-mib plans), not to --quant fp32")
    if quants == ["fp32"] and (extra.get("awq") or extra.get("qat_steps") or extra.get("hqq")) \
            and not extra.get("budgets"):
        raise EdgechatError("--hqq, --awq and --qat-steps apply to 8da4w and 8da8w, not to --quant fp32")
    if "8da8w" in quants and emb == "4w" and "8da4w" not in quants:
        raise EdgechatError("--embedding-quant 4w with --quant 8da8w is not supported: use 8w (the default) "
                            "or none, or choose --quant 8da4w")


def hqq_default(extra: dict, four_bit: bool) -> bool:
    """--hqq/--no-hqq as given; unset: on where weights go to 4 bits (ExecuTorch's own default; SmolLM2's 8da4w
    program: WikiText-2 mean KLD 0.556 -> 0.504, bench_pte_hqq.md), off with --qat-steps (QAT learns the affine grid instead)."""
    if extra.get("hqq") is not None:
        return bool(extra["hqq"])
    return four_bit and not extra.get("qat_steps")


def resolve_options(model: Model, quant: str, extra: dict) -> PteOptions:
    """Defaults per quant type, and the checks that need the model's shapes."""
    cfg = model.config
    group = extra.get("group_size")
    emb = extra.get("embedding_quant")
    if quant == "fp32":
        group, emb = 0, "none"
    elif quant == "8da4w":
        group = group or DEFAULT_GROUP_SIZE
        emb = emb or "4w"
    else:  # 8da8w: per-channel unless a group size was asked for
        group = group or 0
        emb = emb or "8w"
    if quant == "8da8w" and emb == "4w":
        emb = "8w"  # a mixed 8da8w+8da4w request: the 4-bit embedding belongs to the 8da4w program
    head = "" if quant == "fp32" else "8w" if quant == "8da8w" else extra.get("head_quant") or "4w"
    in_dims = {"hidden size": cfg.hidden_size, "intermediate size": cfg.intermediate_size,
               "attention width": cfg.num_heads * cfg.head_dim}
    bad = [(what, dim) for what, dim in in_dims.items() if group and dim % group]
    if bad:
        ok = [str(g) for g in GROUP_SIZES if all(d % g == 0 for d in in_dims.values())]
        raise EdgechatError(f"--group-size {group} does not divide {model.name}'s {bad[0][0]} ({bad[0][1]}): "
                            + (f"choose {' or '.join(ok)}" if ok else "use --quant 8da8w (per-channel)"))
    emb_group = group if emb == "4w" else 0
    if emb == "4w" and cfg.hidden_size % (emb_group or 1):
        raise EdgechatError(f"a 4-bit embedding groups by {emb_group}, which does not divide the hidden size {cfg.hidden_size}")
    seq = extra.get("max_seq_len") or min(cfg.max_seq_len, DEFAULT_MAX_SEQ_LEN)
    if seq > cfg.max_seq_len:
        raise EdgechatError(f"--max-seq-len {seq} is beyond {model.name}'s {cfg.max_seq_len} positions")
    return PteOptions(quant=quant, group_size=group, embedding_quant=emb, max_seq_len=seq, head_quant=head,
                      fused_ops=extra.get("fused_ops", True), fuse_qkv=extra.get("fuse_qkv", True),
                      fuse_mlp=extra.get("fuse_mlp", True), eval_method=extra.get("eval_method", False),
                      hqq=hqq_default(extra, quant == "8da4w"), awq=bool(extra.get("awq", False)) and quant != "fp32",
                      qat_steps=int(extra.get("qat_steps") or 0) if quant != "fp32" else 0,
                      qat_device=extra.get("qat_device", "cpu"), share_tied=bool(extra.get("share_tied")))


def budget_options(model: Model, extra: dict) -> PteOptions:
    """The options every budget's program shares: the fp32 ones (sequence length, fused ops) plus the levers."""
    base = resolve_options(model, "fp32", {k: v for k, v in extra.items()
                                           if k in ("max_seq_len", "fused_ops", "fuse_qkv", "fuse_mlp", "eval_method")})
    return replace(base, quant="mixed", group_size=extra.get("group_size") or 0, embedding_quant="plan",
                   head_quant="plan", hqq=hqq_default(extra, True), awq=bool(extra.get("awq", False)),
                   qat_steps=int(extra.get("qat_steps") or 0), qat_device=extra.get("qat_device", "cpu"),
                   share_tied=bool(extra.get("share_tied")))
