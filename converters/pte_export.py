"""PTE artifacts for ExecuTorch: torch.export of our Transformer with ExecuTorch's fused LLM ops, torchao
dynamic-activation quantization (8da8w / 8da4w) applied by ExecuTorch's own llama quantize() and quantized
embedding, linears delegated to XNNPACK, and the metadata methods ExecuTorch's LLM runner reads.

The flow follows ExecuTorch's export_llama (extension.llm.export.builder.LLMEdgeManager) step by step but
calls the pieces directly: LLMEdgeManager exports the model twice (once before and once inside
to_edge_transform_and_lower) and handles one method, while we lower `forward` (and, for evaluation,
`forward_all`) from one export, which matters on a 2-core machine where each whole-graph pass of a
30-layer model costs tens of seconds.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from pathlib import Path

import torch

from converters.pte_options import PteOptions
from edgechat.core.model import Model

EVAL_CHUNK = 256  # forward_all's longest call: bounds its planned memory (T x vocab logits)


def llm_metadata(model: Model, opts: PteOptions) -> dict:
    """The constant methods ExecuTorch's LLM runner reads (the same names export_llama writes), plus ours."""
    tok, cfg = model.tokenizer, model.config
    # with the template's end-of-turn tokens, so ExecuTorch's runner stops where a chat turn ends
    eos = list(dict.fromkeys([*tok.eos_ids, *sorted(model.chat_format().eog_ids)]))
    return {
        "get_max_seq_len": opts.max_seq_len,
        "get_max_context_len": opts.max_seq_len,
        "get_bos_id": tok.bos_id if tok.bos_id is not None else -1,
        "get_eos_ids": eos,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": opts.fused_ops,
        "enable_dynamic_shape": True,
        "get_vocab_size": cfg.vocab_size,
        "get_n_layers": cfg.num_layers,
        "edgechat_add_bos": bool(tok.add_bos),
    }


def linear_partitioner(quant: str):
    """XNNPACK for the linears only: fp32, or dynamically quantized activations with int8/int4 weights (the
    configs of ExecuTorch's XnnpackDynamicallyQuantizedPartitioner, restricted to linear). The rest (RMSNorm,
    RoPE, SwiGLU, the fused attention ops) runs on ExecuTorch's own kernels between the delegates.

    Two settings make lowering cheaper without changing the program (measured on SmolLM2 8da4w: logits
    bit-identical, the same decode speed, ~40% less export CPU time):
    - the per-node op check is skipped when choosing which ops to keep from decomposition, which saves two
      whole-graph decomposition passes; partitioning still checks every node, and build_program refuses a
      program with a linear left outside XNNPACK;
    - the `dqlinear_partitioner` compile spec, which XnnpackBackend.preprocess honours, runs only
      ConvertToLinearPass on each single-linear subgraph instead of all 17 XNNPACK passes, which rewrite
      convolutions, batch norms, pads, concatenations and layouts, none of which a linear subgraph has."""
    from executorch.backends.xnnpack.partition.config import LinearConfig
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.backend.compile_spec_schema import CompileSpec
    from executorch.exir.backend.partitioner import DelegationSpec

    class LinearPartitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep):
            ops, _check = super().ops_to_not_decompose(ep)
            return ops, None

    precision = ConfigPrecisionType.FP32 if quant == "fp32" else ConfigPrecisionType.DYNAMIC_QUANT
    part = LinearPartitioner(configs=[LinearConfig], config_precisions=precision)
    part.delegation_spec = DelegationSpec("XnnpackBackend", [CompileSpec("dqlinear_partitioner", b"")])
    return part


def module_plan(module, opts: PteOptions) -> dict[str, str]:
    """The per-module choices (converters.pte_mixed) of a program: a budget's plan, or the quant's uniform
    one (every linear at the quant and group, the head at its own bits, the embedding at its own)."""
    from converters.pte_mixed import uniform_plan

    if opts.plan:
        return opts.plan
    if opts.quant == "fp32":
        return {}
    group = f"-g{opts.group_size}" if opts.group_size else ""
    linear = f"{opts.quant}{group}"
    head = "8da8w" if opts.head_quant == "8w" and opts.quant == "8da4w" else linear
    emb = {"none": None, "8w": "8w", "4w": f"4w-g{opts.group_size}"}[opts.embedding_quant]
    return uniform_plan(module, linear, emb, head)


def quantize_module(module, opts: PteOptions):
    """torchao's quantize_ by the module plan (converters.pte_mixed.apply_plan): the embedding by ExecuTorch's
    quantized-embedding transform, each linear by the Int8DynamicActivationIntxWeightConfig ExecuTorch's llama
    quantize() builds; HQQ scale-only parameters when opts.hqq (ExecuTorch's default)."""
    from converters.pte_mixed import apply_plan

    return apply_plan(module, module_plan(module, opts), opts.hqq)


def build_program(model: Model, opts: PteOptions, step=lambda *_a, **_k: None, module=None, data_tag: str = "model"):
    """Model -> ExecutorchProgramManager (not yet written). ExecuTorch's export code warns about its own
    deprecated calls and prints from its quantizers: keep that out of the user's terminal and of --json.
    data_tag: the external data file's stem when opts.share_tied (converters.pte_tied)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return _build_program(model, opts, step, module, data_tag)


def _build_program(model: Model, opts: PteOptions, step, module=None, data_tag: str = "model"):
    import executorch.kernels.quantized  # noqa: F401  (quantized embedding ops, needed by const-prop)
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass
    from torch.export import Dim, export

    from converters.pte_modules import ExportModel

    seq = opts.max_seq_len
    with torch.no_grad():
        if module is None:
            from converters.pte_levers import prepare_module

            module, _ = prepare_module(model, opts, step=step)
        if opts.plan or opts.quant != "fp32" or opts.embedding_quant != "none":
            step(f"quantizing to {opts.quant}" + (" by the per-module plan" if opts.plan else
                 f" (embedding {opts.embedding_quant}{f', group {opts.group_size}' if opts.group_size else ''})")
                 + (", HQQ scales" if opts.hqq else ""))
            module = quantize_module(module, opts)
        if opts.share_tied:
            from converters.pte_tied import share_table

            share_table(module)
        step(f"torch.export ({'fused llama ops' if opts.fused_ops else 'plain ops'}, max_seq_len {seq})")
        methods = {"forward": (True, seq - 1)}
        if opts.eval_method:
            methods["forward_all"] = (False, min(seq - 1, EVAL_CHUNK))
        programs = {}
        for name, (last_only, max_t) in methods.items():
            example = (torch.tensor([[1, 2]], dtype=torch.long), torch.tensor([0], dtype=torch.long))
            dims = ({1: Dim("token_dim", min=1, max=max_t)}, None)
            programs[name] = export(ExportModel(module, seq, last_only=last_only), example,
                                    dynamic_shapes=dims, strict=False)
    step(f"lowering {' + '.join(programs)} to ExecuTorch, linears to XNNPACK")
    partitioner, external = linear_partitioner(opts.quant), False
    if opts.share_tied:  # the head's weights and the table into one data file, which keeps them once
        from converters.pte_tied import table_tag, tag_head

        partitioner, external = tag_head(partitioner, data_tag), table_tag(data_tag)
    edge = to_edge_transform_and_lower(
        programs, partitioner=[partitioner],
        compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
        constant_methods=llm_metadata(model, opts))
    leftover = [n for name in programs for n in edge.exported_program(name).graph.nodes
                if n.op == "call_function" and "linear" in str(n.target)]
    if leftover:
        raise RuntimeError(f"{len(leftover)} linear(s) were not delegated to XNNPACK (first: {leftover[0]})")
    step("writing the ExecuTorch program")
    return edge.to_executorch(ExecutorchBackendConfig(
        extract_delegate_segments=True,
        do_quant_fusion_and_const_prop=True,
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
        external_constants=external))


def write_program(program, path: Path) -> None:
    """Write to temporary names beside `path` and rename, so a failed write leaves nothing behind; a program
    with external data (--share-tied) gets its .ptd beside it (converters.pte_tied.data_file)."""
    from edgechat.core.files import pte_data_file

    tmp, ptd = path.with_name(f".{path.name}.partial"), pte_data_file(path)
    tmp_dir = path.with_name(f".{path.name}.data")
    try:
        with open(tmp, "wb") as f:
            program.write_to_file(f)
        data = getattr(program, "_tensor_data", None) or {}
        if data:
            tmp_dir.mkdir(exist_ok=True)
            program.write_tensor_data_to_file(str(tmp_dir))
            written = sorted(tmp_dir.iterdir())
            if [p.name for p in written] != [ptd.name]:
                raise RuntimeError(f"expected one data file {ptd.name}, ExecuTorch wrote {[p.name for p in written]}")
            os.replace(written[0], ptd)
        else:
            ptd.unlink(missing_ok=True)  # a stale data file from an earlier export would be loaded with this one
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if tmp_dir.exists():
            for p in tmp_dir.iterdir():
                p.unlink()
            tmp_dir.rmdir()


def export_pte_file(model: Model, path: Path, opts: PteOptions, step=lambda *_a, **_k: None, module=None,
                    levers: dict | None = None, calibration=None) -> dict:
    t0 = time.perf_counter()
    if module is None:
        from converters.pte_levers import prepare_module

        module, levers = prepare_module(model, opts, calibration, step=step)
    write_program(build_program(model, opts, step, module=module, data_tag=path.stem), path)
    art = {"file": path.name, "format": "pte", "quant": opts.quant, "group_size": opts.group_size,
           "embedding_quant": opts.embedding_quant, "head_quant": opts.head_quant, "max_seq_len": opts.max_seq_len,
           "fused_ops": opts.fused_ops, "fuse_qkv": opts.fuse_qkv, "fuse_mlp": opts.fuse_mlp,
           "methods": ["forward", "forward_all"] if opts.eval_method else ["forward"],
           "hqq": opts.hqq, "awq": opts.awq, "qat_steps": opts.qat_steps}
    if opts.share_tied:
        from edgechat.core.files import pte_data_file

        art["data_file"] = pte_data_file(path).name
    for key, value in (levers or {}).items():  # the levers' own records: AWQ's alphas, QAT's run
        art[key if key != "awq" else "awq_scales"] = value
    art["export_s"] = round(time.perf_counter() - t0, 1)
    return art
