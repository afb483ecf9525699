"""`edgechat convert`: a checkpoint to GGUF / .pte / HF artifacts (edgechat/app/pipeline.py) from the command line."""
from __future__ import annotations

from pathlib import Path

import click

from converters import FORMAT_MODULES
from targets import schemes
from edgechat.cli.compress import compression_options, recipe_from_cli
from edgechat.cli.options import emit_json
from edgechat.core.errors import GateFailed


@click.command()
@click.argument("source", required=False)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output directory: artifacts, tokenizer, chat template and the edgechat.json manifest.")
@click.option("--format", "formats", multiple=True, default=["gguf"], show_default=True,
              help=f"{', '.join(FORMAT_MODULES)}: gguf for llama.cpp, pte for ExecuTorch, hf a Hugging Face "
              "checkpoint directory. Repeatable.")
@click.option("--quant", "quants", multiple=True,
              help=f"gguf: {schemes.help_text('gguf')}; pte: {schemes.help_text('pte')}. "
              "Repeatable: one load, many artifacts.")
@click.option("--group-size", type=int, help="pte: weights per quantization group, 32, 64 or 128 "
              "(default: 32 for 8da4w, per-channel for 8da8w).")
@click.option("--embedding-quant", help="pte: 8w, 4w or none (default: 4w with 8da4w, 8w with 8da8w, none with fp32).")
@click.option("--head-quant", help="pte: 8w or 4w weights for the output projection (default: those of the other "
              "linears; 8w keeps the head at 8 bits under 8da4w, as llama.cpp's Q4 types do).")
@click.option("--max-seq-len", type=int, help="pte: context length of the static KV cache "
              "(default: the model's, at most 2048).")
@click.option("--imatrix/--no-imatrix", default=True, show_default=True, help="Quantize Q4_0/Q4_K_M and --bpw/--size-mib "
              "plans with an importance matrix from chat-formatted --calib text.")
@click.option("--bpw", type=float, multiple=True, help="gguf/pte: mixed precision for this many effective bits per weight, "
              "per-tensor (gguf) or per-module (pte) types chosen by measured sensitivity. Repeatable.")
@click.option("--size-mib", type=float, multiple=True, help="gguf/pte: mixed precision for a file of at most N MiB. Repeatable.")
@click.option("--hqq/--no-hqq", default=None, help="pte: HQQ scale-only quantization parameters (ExecuTorch's "
              "default) instead of min/max scales (default: on for 8da4w and --bpw/--size-mib plans, off for 8da8w "
              "and with --qat-steps).")
@click.option("--awq/--no-awq", default=None, help="pte: activation-aware per-input-channel scales, searched on "
              "--calib text and folded into the RMSNorms before q/k/v and gate/up (default: off).")
@click.option("--qat-steps", type=int, help="pte: quantization-aware training, N steps of distillation from the "
              "fp32 model through torchao's fake quantization of the program's own configs (default: 0); with "
              "--bpw/--size-mib each budget's plan is chosen first and trained toward. On SmolLM2-135M, 100 "
              "steps took 23 min on 2 CPU cores and cut 8da4w's WikiText-2 mean KLD from 0.59 to 0.37.")
@click.option("--share-tied", is_flag=True, help="pte: for a model that ties its embedding and head, keep that "
              "matrix once, at 8 bits, in a .ptd file beside the .pte (the head's rows are the lookup table); "
              "--size-mib/--bpw plans spend the bytes saved on the rest (SmolLM2-135M at 100.57 MiB: WikiText-2 "
              "mean KLD 0.287 -> 0.086). Copy the .ptd with the .pte.")
@click.option("--calib", type=click.Path(), help="Calibration text for the importance matrix and the sensitivity pass "
              "(default: chit-chat dialogues).")
@click.option("--eval-data", type=click.Path(), help="Text for the manifest's quality figures "
              "(default: 20 held-out chit-chat dialogues). Raw text, DailyDialog or JSONL.")
@click.option("--no-eval", is_flag=True, help="Skip the quality measurement.")
@click.option("--threads", type=int, help="CPU threads (default: all cores of this machine).")
@click.option("--target", help="Plan for a device profile (`edgechat targets list`): it picks the format and quant "
              "(among any --format/--quant given) and the CPU/GPU/NPU split; the manifest records the plan.")
@click.option("--on", "accelerator", help="With --target: force the placement (cpu, or an accelerator's name). A .pte "
              "plan that puts layers on a Vulkan or Core ML accelerator also writes that accelerator's artifact.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@compression_options
def convert(source, out_dir, formats, quants, group_size, embedding_quant, head_quant, max_seq_len, imatrix, bpw,
            size_mib, hqq, awq, qat_steps, share_tied, calib, eval_data, no_eval, threads, target, accelerator, as_json, **compression):
    """Convert SOURCE into artifacts in OUTPUT, with quality figures vs the fp32 model."""
    from edgechat.app.pipeline import ConvertOptions, convert as run_convert
    from edgechat.reports.progress import Steps

    if target and click.get_current_context().get_parameter_source("formats").name == "DEFAULT":
        formats = []  # with --target and no --format, the plan picks the format
    opts = ConvertOptions(formats=list(formats), quants=[q.lower() for q in quants], imatrix=imatrix,
                          calib=calib, eval_data=eval_data, evaluate=not no_eval, threads=threads, target=target,
                          on=accelerator,
                          extra={k: v for k, v in (("group_size", group_size), ("max_seq_len", max_seq_len),
                                                   ("embedding_quant", embedding_quant and embedding_quant.lower()),
                                                   ("head_quant", head_quant and head_quant.lower()),
                                                   ("hqq", hqq), ("awq", awq), ("qat_steps", qat_steps),
                                                   ("share_tied", share_tied or None))
                                 if v is not None})
    opts.budgets = [{"bpw": x} for x in bpw] + [{"size_mib": n} for n in size_mib]
    opts.recipe = recipe_from_cli(**compression)
    if opts.recipe:
        set_by_user = {p: click.get_current_context().get_parameter_source(p).name != "DEFAULT" for p in ("formats", "quants")}
        opts.formats = opts.formats if set_by_user["formats"] else list(opts.recipe.export.formats)
        opts.quants = opts.quants if set_by_user["quants"] else list(opts.recipe.export.quants)
    with Steps(enabled=not as_json) as steps:
        try:
            manifest = run_convert(source, out_dir, opts, steps)
        except GateFailed as failed:
            from edgechat.reports.tables import artifact_table

            artifact_table(failed.manifest, out_dir)
            raise
    for note in manifest.get("notes", []):
        click.echo(note, err=True)
    if manifest.get("target_plan") and not as_json:
        tp = manifest["target_plan"]
        click.echo(f"plan for {tp['target']}: {tp['format']} {tp['quant']}, {tp['chosen']['placement']}, "
                   f"estimated {tp['chosen']['decode_tok_s']:.1f} tok/s decode"
                   + (f", measured here {tp['host_check']['measured_decode_tok_s']:.1f}" if tp.get("host_check") else ""),
                   err=True)
    if as_json:
        emit_json(manifest)
        return
    from edgechat.reports.tables import artifact_table

    artifact_table(manifest, out_dir)
