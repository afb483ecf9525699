"""convert: load -> (imatrix) -> export each format/quant -> quality vs the fp32 model -> manifest,
written into a staging directory that is moved into place only when everything succeeded."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from converters import FORMATS, ExportOptions, plan_exports
from edgechat.data import chitchat_dialogues, read_eval_data
from edgechat.errors import EdgechatError
from edgechat.manifest import file_sha256, write_manifest
from edgechat.progress import Steps
from edgechat.sources import load_model


@dataclass
class ConvertOptions:
    formats: list[str] = field(default_factory=lambda: ["gguf"])
    quants: list[str] = field(default_factory=list)
    imatrix: bool = False
    calib: str | None = None  # calibration text for the importance matrix (default: chit-chat dialogues)
    eval_data: str | None = None  # quality text (default: held-out chit-chat dialogues)
    evaluate: bool = True
    eval_n_ctx: int = 512
    threads: int | None = None


@contextmanager
def staging(out_dir: Path):
    """Yield a hidden sibling directory; on success move its contents into out_dir, else delete it all."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgechatError(f"cannot write to {out_dir}: it exists and is not a directory")
    created = next((p for p in [out_dir.parent, *out_dir.parent.parents][::-1] if not p.exists()), None)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result should look like any new directory
    except OSError as e:
        raise EdgechatError(f"cannot write to {out_dir}: {e.strerror or e}") from None
    ok = False
    try:
        yield tmp
        if out_dir.exists():
            for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "edgechat.json"):  # manifest last
                os.replace(entry, out_dir / entry.name)
        else:
            tmp.rename(out_dir)
        ok = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok and created is not None:
            shutil.rmtree(created, ignore_errors=True)


def calibration_sequences(model, path: str | None, n_ctx: int = 512, limit: int = 64) -> list[list[int]]:
    from edgechat.chat import Chat
    from runtimes.torch_engine import TorchEngine

    data = read_eval_data(path) if path else None
    chat = Chat(TorchEngine(model, n_ctx=n_ctx))
    if data is None or data.kind == "dialogues":
        dialogues = data.dialogues if data else chitchat_dialogues(0, limit)
        seqs = [chat.encode(chat.render(d, add_generation_prompt=False))[:n_ctx] for d in dialogues]
    else:
        ids = chat.engine.tokenize(data.text, add_bos=False)
        seqs = [ids[i:i + n_ctx] for i in range(0, len(ids), n_ctx)]
    return [s for s in seqs if len(s) > 1][:limit]


def measure_quality(model, artifact: Path, data, n_ctx: int, threads, steps: Steps) -> dict:
    from edgechat.api import open_engine
    from edgechat.evaluate import evaluate
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
    plan = plan_exports(opts.formats, opts.quants)  # bad options fail before any loading
    out_dir = Path(out_dir)
    with staging(out_dir) as tmp:
        steps.step(f"loading {source or 'the default model (SmolLM2-135M-Instruct)'}")
        model = load_model(source)
        imatrix = None
        if opts.imatrix:
            from converters.imatrix import compute_imatrix

            seqs = calibration_sequences(model, opts.calib)
            advance = steps.step("importance matrix from calibration text", total=len(seqs))
            imatrix = compute_imatrix(model, seqs, on_sequence=advance)
        export_opts = ExportOptions(threads=opts.threads, imatrix=imatrix)
        artifacts = []
        for fmt, quants in plan.items():
            artifacts += FORMATS[fmt].export(model, tmp, quants, export_opts, steps)
        extra_files = [] if "hf" in plan else model.tokenizer.save(tmp)
        if model.chat_template and "hf" not in plan:
            (tmp / "chat_template.jinja").write_text(model.chat_template)
            extra_files.append("chat_template.jinja")
        data = read_eval_data(opts.eval_data) if opts.evaluate else None
        for art in artifacts:
            path = tmp / art["file"]
            if art["format"] != "hf":
                art["bytes"] = path.stat().st_size
                art["sha256"] = file_sha256(path)
                if data is not None:
                    art["quality"] = measure_quality(model, path, data, opts.eval_n_ctx, opts.threads, steps)
        manifest = {
            "source": {**model.source, "name": model.name},
            "model": {**asdict(model.config), "params": model.config.param_count()},
            "options": {**asdict(opts), "plan": plan},
            "imatrix": {"calib": opts.calib or "chitchat[0:64]", "tensors": len(imatrix)} if imatrix else None,
            "artifacts": artifacts,
            "files": extra_files,
            "timings_s": {k: round(v, 3) for k, v in steps.timings.items()},
        }
        steps.step("writing manifest")
        write_manifest(tmp, manifest)
    return manifest
