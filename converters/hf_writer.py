"""Write the in-memory model back as a Hugging Face checkpoint directory that transformers loads."""
from __future__ import annotations

import json
from pathlib import Path

from converters.formats import ExportOptions, register_format
from edgechat.core import archs
from edgechat.core.model import Model


@register_format("hf", quants=("fp32",), default="fp32")
def export_hf(model: Model, out_dir: Path, quants: list[str], options: ExportOptions, progress=None) -> list[dict]:
    if progress:
        progress.step("writing Hugging Face checkpoint")
    write_hf(model, out_dir)
    return [{"file": ".", "format": "hf", "quant": "fp32"}]


def write_hf(model: Model, out_dir: Path) -> list[str]:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = model.tokenizer
    eos = tok.eos_ids[0] if tok.eos_ids else None
    family = archs.get(model.config.arch)
    cfg = archs.config_to_hf(model.config, bos_id=tok.bos_id, eos_id=eos)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_ids if len(tok.eos_ids) > 1 else eos}
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    tensors = {k: v.detach().float().contiguous() for k, v in family.to_checkpoint(model.state_dict(), model.config).items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    files = ["config.json", "generation_config.json", "model.safetensors", *tok.save(out_dir)]
    tcfg = {"bos_token": tok.bos_text or None, "eos_token": tok.eos_text or None, "add_bos_token": tok.add_bos,
            "clean_up_tokenization_spaces": False, "model_max_length": model.config.max_seq_len,
            "tokenizer_class": "LlamaTokenizerFast" if files[-1] == "tokenizer.model" else "PreTrainedTokenizerFast"}
    if files[-1] == "tokenizer.model":
        tcfg.update(legacy=True, add_eos_token=False)
    if model.chat_template:
        tcfg["chat_template"] = model.chat_template
        (out_dir / "chat_template.jinja").write_text(model.chat_template)
        files.append("chat_template.jinja")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2) + "\n")
    return files + ["tokenizer_config.json"]
