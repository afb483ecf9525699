"""convert: load -> (compress) -> (imatrix) -> export each format/quant -> quality vs the fp32 model -> manifest,
written into a staging directory that is moved into place only when everything succeeded."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from converters import ExportOptions, get_format, plan_exports
from edgechat.core.conversation import calibration_sequences
from edgechat.core.data import read_eval_data
from edgechat.app.compress import check_gate
from edgechat.core.errors import GateFailed
from edgechat.core.errors import EdgechatError
from edgechat.core.files import artifact_bytes, file_sha256, staging
from edgechat.core.manifest import write_manifest
from edgechat.reports.progress import Steps
from edgechat.core.sources import load_model
from targets import schemes


@dataclass
class ConvertOptions:
    formats: list[str] = field(default_factory=lambda: ["gguf"])
    quants: list[str] = field(default_factory=list)
    imatrix: bool = True  # for the quants llama.cpp weights by one (Q4_0, K-quants) and budget plans
    calib: str | None = None  # calibration text for the importance matrix (default: chit-chat dialogues)
    budgets: list = field(default_factory=list)  # GGUF mixed precision: [{"bpw": X} | {"size_mib": N}]
    eval_data: str | None = None  # quality text (default: held-out chit-chat dialogues)
    evaluate: bool = True
    eval_n_ctx: int = 512
    threads: int | None = None
    target: str | None = None  # a device profile: its plan picks format, quant and split (targets/)
    on: str | None = None  # with target: force the placement ("cpu" or an accelerator's name)
    extra: dict = field(default_factory=dict)  # format options, e.g. pte: group_size, embedding_quant, max_seq_len
    recipe: object = None  # edgechat.app.recipe.Recipe: prune -> distill before export, and the quality gate


def measure_quality(model, artifact: Path, data, n_ctx: int, threads, steps: Steps) -> dict:
    from edgechat.app.api import open_engine
    from edgechat.app.evaluate import evaluate
    from runtimes.torch_engine import TorchEngine

    engine = open_engine(artifact, n_ctx=n_ctx, threads=threads, logits_all=True)
    try:
        n = len(data.dialogues) if data.kind == "dialogues" else None
        advance = steps.step(f"quality of {artifact.name} vs fp32", total=n)
        return evaluate(engine, TorchEngine(model, n_ctx=n_ctx, threads=threads), data, n_ctx=n_ctx,
                        on_sequence=advance).as_dict()
    finally:
        engine.close()


def convert(source, out_dir: str | Path, opts: ConvertOptions, steps: Steps) -> dict:
    target_plan = None
    if opts.target:  # the device plan picks format and quant among those asked for (formats=[]: any)
        from edgechat.app.targeting import convert_plan

        steps.step(f"planning for {opts.target}")
        target_plan = convert_plan(source, opts.target, opts.formats or None, opts.quants, opts.on)
        opts = replace(opts, formats=[target_plan["format"]], quants=[target_plan["quant"]])
    plan = plan_exports(opts.formats, opts.quants)  # bad options fail before any loading
    if opts.budgets:
        if not {"gguf", "pte"} & set(plan):
            raise EdgechatError("--bpw/--size-mib choose per-tensor GGUF types or per-module .pte types: "
                                "add --format gguf or --format pte")
        if not opts.quants:
            plan = {f: ([] if f in ("gguf", "pte") else q) for f, q in plan.items()}  # the budgets' files only
    if "pte" in plan:
        from converters.pte_options import check_options

        check_options(plan["pte"], opts.extra)
    if opts.recipe:
        from edgechat.app.compress import check_inputs

        check_inputs(opts.recipe)
    out_dir = Path(out_dir)
    with staging(out_dir) as tmp:
        steps.step(f"loading {source or 'the default model (SmolLM2-135M-Instruct)'}")
        model = load_model(source)
        teacher, compression = model, None
        if opts.recipe and (opts.recipe.prune.active or opts.recipe.distill):
            from edgechat.app.compress import compress

            stage_data = read_eval_data(opts.eval_data or opts.recipe.export.eval_data)
            model, compression = compress(teacher, opts.recipe, stage_data, steps, n_ctx=opts.eval_n_ctx)
            if opts.recipe.export.hf:
                from converters.hf_writer import write_hf

                steps.step("writing the student as a Hugging Face checkpoint")
                write_hf(model, tmp / "hf")
        # the importance matrix and the sensitivity pass see the model that is exported (after any pruning)
        wants_imatrix = opts.imatrix and ((opts.budgets and "gguf" in plan) or any(schemes.get(q).imatrix for q in plan.get("gguf", [])))
        seqs = calibration_sequences(model, opts.calib) if wants_imatrix or opts.budgets or opts.extra.get("awq") else None
        imatrix = None
        if wants_imatrix:
            from converters.imatrix import compute_imatrix

            advance = steps.step("importance matrix from chat-formatted calibration text", total=len(seqs))
            imatrix = compute_imatrix(model, seqs, on_sequence=advance, threads=opts.threads)
        export_opts = ExportOptions(threads=opts.threads, imatrix=imatrix, extra=dict(opts.extra))
        if opts.budgets or opts.extra.get("awq"):  # the sensitivity pass and the AWQ search read --calib text
            export_opts.extra.update(budgets=list(opts.budgets), calibration=seqs)
        artifacts = []
        for fmt, quants in plan.items():
            artifacts += get_format(fmt).export(model, tmp, quants, export_opts, steps)
        if target_plan and (target_plan["chosen"].get("partitioners") or ["xnnpack"])[0] in ("vulkan", "coreml"):
            from converters.pte_partition import export_accelerator_pte  # the plan's GPU/NPU layers, lowered

            artifacts.append(export_accelerator_pte(model, tmp, target_plan, steps.step))
        extra_files = [] if "hf" in plan else model.tokenizer.save(tmp)
        if model.chat_template and "hf" not in plan:
            (tmp / "chat_template.jinja").write_text(model.chat_template)
            extra_files.append("chat_template.jinja")
        gate = opts.recipe.gate if opts.recipe else None
        if gate and gate.active and not opts.evaluate:
            raise EdgechatError("the quality gate needs the quality measurement: drop --no-eval")
        eval_source = opts.eval_data or (opts.recipe.export.eval_data if opts.recipe else None)
        data = read_eval_data(eval_source) if opts.evaluate else None
        notes = []
        for art in artifacts:
            path = tmp / art["file"]
            if art["format"] != "hf":
                art["bytes"] = artifact_bytes(path)  # a .pte's external data (--share-tied) included
                art["sha256"] = file_sha256(path)
                if art.get("data_file"):
                    art["data_sha256"] = file_sha256(tmp / art["data_file"])
                art["size"] = artifact_size(art, path, model)
                note = artifact_note(art)
                if note:
                    notes.append(note)
                if data is not None and art.get("run_here", True):  # an accelerator artifact cannot run here
                    art["quality"] = measure_quality(teacher, path, data, opts.eval_n_ctx, opts.threads, steps)
        if target_plan and opts.target == "host":  # the estimate, checked against a run here
            steps.step("checking the plan's speed estimate with a run here")
            target_plan["host_check"] = check_on_host(target_plan, tmp / artifacts[0]["file"], opts.threads)
        steps.step("writing manifest")  # closes the last export step, so its time is in timings_s
        manifest = {
            "source": {**model.source, "name": model.name},
            "model": {**asdict(model.config), "params": model.config.param_count()},
            "options": {**{f.name: getattr(opts, f.name) for f in fields(opts) if f.name != "recipe"}, "plan": plan},
            "target_plan": target_plan,
            "imatrix": ({"calib": opts.calib or "chitchat[0:64]", "chat_formatted": True, "sequences": len(seqs),
                         "tokens": sum(map(len, seqs)), "tensors": len(imatrix)} if imatrix else
                        {"used": False, "why": "--no-imatrix" if not opts.imatrix else "no quant here uses one"}),
            "notes": notes,
            "artifacts": artifacts,
            "files": extra_files,
            "recipe": {"path": opts.recipe.path, "sha256": opts.recipe.sha256} if opts.recipe else None,
            "compression": compression,
            "gate": check_gate(gate, artifacts) if gate and gate.active else None,
            "timings_s": {k: round(v, 3) for k, v in steps.timings.items()},
        }
        if manifest["gate"]:
            manifest["status"] = "ok" if manifest["gate"]["passed"] else "failed"
        write_manifest(tmp, manifest)
    if manifest["gate"] and not manifest["gate"]["passed"]:
        raise GateFailed(f"quality gate failed: {'; '.join(manifest['gate']['reasons'])} "
                         f"(artifacts kept in {out_dir}, manifest marked failed)", manifest)
    return manifest


def artifact_size(art: dict, path: Path, model) -> dict:
    """Effective bits per weight and per-type shares (GGUF: from the header); a .pte's bits are its file's
    bytes over the model's weights (its tensor types are not listed outside the program)."""
    if art["format"] == "gguf":
        from edgechat.core.gguf_sizes import size_report

        report = size_report(path)
        report.pop("file_bytes")
        return report
    params = model.config.param_count()
    return {"bpw": round(artifact_bytes(path) * 8 / params, 3), "weights": params, "from": "file bytes"}


def artifact_note(art: dict) -> str | None:
    """The one-line note for a file whose effective bits differ from its quant's nominal bits."""
    if art["format"] != "gguf" or art["quant"] not in schemes.SCHEMES:
        return None
    from edgechat.core.gguf_sizes import size_note

    return size_note(art["file"], art["quant"], schemes.get(art["quant"]).bits, art["size"], art.get("fallbacks"))


def check_on_host(plan_dict: dict, artifact: Path, threads: int | None = None, tokens: int = 64) -> dict:
    """Run the artifact here on a fixed prompt and set the measured decode/prefill speed beside the plan's
    estimate (the estimate is only ever checked on `host`)."""
    from edgechat.app.api import load

    chat = load(artifact, threads=threads, max_tokens=tokens, n_ctx=512)
    chat.probes = True
    try:
        chat.complete("Once upon a time", max_tokens=8)  # warm-up
        chat.reset()
        stats = chat.send("Tell me a long story about a robot who learns to paint.", max_tokens=tokens).stats
    finally:
        chat.engine.close()
    est = plan_dict["chosen"]
    return {"measured_decode_tok_s": round(stats.decode_tok_s, 2), "estimated_decode_tok_s": round(est["decode_tok_s"], 2),
            "decode_ratio": round(stats.decode_tok_s / est["decode_tok_s"], 3) if est["decode_tok_s"] else None,
            "measured_prefill_tok_s": round(stats.prefill_tok_s, 1),
            "estimated_prefill_tok_s": round(est["prefill_tok_s"], 1), "tokens": stats.completion_tokens}
