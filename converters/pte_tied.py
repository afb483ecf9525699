"""A tied embedding/head held once (--share-tied): a program keeps the tied matrix twice, as the lookup table
(ExecuTorch's quantized embedding, a program constant) and as the head's XNNPACK weights (the delegate's named
data), where a GGUF keeps it once. Both can live in one external data file (.ptd, beside the .pte), whose
named-data store keeps identical buffers once: with the head at 8 bits per row (8da8w) and the table as those
same int8 rows and scales, the file holds the 49152 x 576 matrix of SmolLM2 once. ExecuTorch's runtime loads
the pair (Runtime.load_program(pte, data_path=ptd)); the logits are those of the program that holds it twice.

The budget plans take it into account: the head is held at 8 bits and the table costs nothing, so its bytes
go to the rest of the model (benchmarks/results/bench_pte_tied.md)."""
from __future__ import annotations

import copy

import torch

from edgechat.core.errors import EdgechatError

HEAD, TABLE = "lm_head", "model.embed_tokens"
HEAD_CHOICE, TABLE_CHOICE = "8da8w", "8w"


def check_tied(model, opts) -> None:
    """Refuse --share-tied where there is nothing to share, or where the table cannot be the head's rows."""
    if not opts.share_tied:
        return
    if not model.config.tie_word_embeddings:
        raise EdgechatError(f"--share-tied: {model.name} does not tie its embedding and head; there is one "
                            "matrix of each already")
    if opts.plan is None and opts.quant != "mixed" and (opts.head_quant, opts.embedding_quant) != ("8w", "8w"):
        raise EdgechatError("--share-tied holds the head at 8 bits and the table as its 8-bit rows: use it with "
                            "--bpw/--size-mib, or with an 8-bit head and table (--quant 8da8w, or 8da4w "
                            "--head-quant 8w --embedding-quant 8w)")


def tied_sensitivity(sens: dict, planned) -> dict:
    """The sensitivities a budget plans from when the matrix is held once: the head at 8 bits only, the
    table's int8 rows free (they are the head's); its fp32 per-row scales are still paid for, since XNNPACK
    keeps the head's scales in the program (SmolLM2: 192 KiB)."""
    out = copy.deepcopy(sens)
    tensors = out["tensors"]
    tensors[HEAD]["types"] = {HEAD_CHOICE: tensors[HEAD]["types"][HEAD_CHOICE]}
    tensors[TABLE]["types"] = {TABLE_CHOICE: {**tensors[TABLE]["types"][TABLE_CHOICE],
                                              "bytes": tied_least(planned)[TABLE]}}
    return out


def tied_least(planned) -> dict[str, int]:
    """The head's and the table's bytes when the matrix is held once (as tied_sensitivity counts them): what
    the smallest plan takes for those two."""
    from converters.pte_mixed import _aligned, module_bytes

    mods = {m.name: m for m in planned}
    return {HEAD: module_bytes(mods[HEAD], HEAD_CHOICE), TABLE: _aligned(4 * mods[TABLE].rows)}


def share_table(module) -> None:
    """Make the quantized table the head's int8 rows and per-row scales, bit for bit (what lets the data
    file keep one copy). Both quantize rows symmetrically, so this only removes rounding differences."""
    modules = dict(module.named_modules())
    emb, head = modules[TABLE], modules[HEAD].weight
    qdata, scale, zero = (getattr(head, n, None) for n in ("qdata", "scale", "zero_point"))
    if qdata is None or qdata.dtype != torch.int8 or tuple(qdata.shape) != tuple(emb.weight.shape) \
            or zero is None or bool(zero.any()):
        raise EdgechatError("--share-tied needs an 8-bit symmetric per-row head and an 8-bit table of its shape")
    emb.weight = qdata.detach().clone()
    emb.scales = scale.detach().reshape(-1).to(emb.scales.dtype).clone()


def tag_head(partitioner, tag: str):
    """Have XNNPACK put the head's weights in the external data file `tag` (its node visitor reads the tag
    from the weight's placeholder and its dequantize node)."""
    partition = partitioner.partition

    def tagged(ep):
        for node in ep.graph.nodes:
            if node.op == "placeholder" and node.name.startswith("p_lm_head"):
                for n in (node, *node.users):
                    n.meta.setdefault("custom", {})["delegate_constant_tag"] = tag
        return partition(ep)

    partitioner.partition = tagged
    return partitioner


def table_tag(tag: str):
    """The emitter's external-constant rule: the table's weights and scales go to the data file `tag`."""
    def rule(node):
        return tag if node.name.startswith("b_model_embed_tokens") else None
    return rule
