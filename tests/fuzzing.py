"""Fuzz inputs and the readers under test, shared by the fuzz tests (hypothesis drives them through a seeded
`random.Random`) and benchmarks/fuzz_campaign.py (20,000 inputs per reader, in a watched subprocess): `Cases`
writes one mutated copy of a real file (tests/fuzz_mutators.py) where its reader looks, `reader(name)` reads it,
and `expected_errors(name)` is the one error type that reader may raise."""
from __future__ import annotations

import json
import random
from pathlib import Path

from tests.fuzz_mutators import (gguf_fields, mutate_bytes, mutate_gguf, mutate_json_obj, mutate_safetensors,
                                 mutate_text, mutate_toml)


# -- one input: a mutated copy of a real file, written where its reader looks --------------------------------
class Cases:
    """Base files read once (real ones from ../shared/data and the project); `make(reader, rng, workdir)` writes
    one mutated input and returns the path its reader takes."""

    def __init__(self, stories_dir: Path, gguf_path: Path, tokenizer_json_dir: Path, profile_path: Path):
        self.stories = stories_dir
        self.gguf = gguf_path.read_bytes()
        self.gguf_fields = gguf_fields(self.gguf)
        self.safetensors = (stories_dir / "model.safetensors").read_bytes()
        self.config = json.loads((stories_dir / "config.json").read_text())
        self.sp_model = (stories_dir / "tokenizer.model").read_bytes()
        self.tok_json = json.loads((tokenizer_json_dir / "tokenizer.json").read_text())
        self.tok_config = json.loads((tokenizer_json_dir / "tokenizer_config.json").read_text())
        self.profile_name = profile_path.name
        self.profile = profile_path.read_text()

    def make(self, reader: str, rng: random.Random, work: Path) -> Path:
        return getattr(self, f"_{reader}")(rng, work)

    def _gguf(self, rng, work):
        (work / "m.gguf").write_bytes(mutate_gguf(self.gguf, self.gguf_fields, rng))
        return work / "m.gguf"

    def _safetensors(self, rng, work):
        (work / "model.safetensors").write_bytes(mutate_safetensors(self.safetensors, rng))
        return work / "model.safetensors"

    def _config(self, rng, work):
        d = work / "cfg"
        d.mkdir(exist_ok=True)
        if not (d / "tokenizer.model").exists():
            (d / "tokenizer.model").write_bytes(self.sp_model)
        text = json.dumps(self.config, indent=1)
        data = json.dumps(mutate_json_obj(self.config, rng)).encode() if rng.random() < 0.8 else mutate_text(text, rng)
        (d / "config.json").write_bytes(data)
        return d

    def _tokenizer(self, rng, work):
        d = work / "tok"
        d.mkdir(exist_ok=True)
        for f in d.iterdir():
            f.unlink()
        which = rng.choice(["sp", "sp", "json", "json", "config"])
        if which == "sp":
            (d / "tokenizer.model").write_bytes(mutate_bytes(self.sp_model, rng))
        else:
            tok = mutate_json_obj(self.tok_json, rng) if which == "json" else self.tok_json
            data = json.dumps(tok).encode()
            if which == "json" and rng.random() < 0.3:
                data = mutate_bytes(json.dumps(self.tok_json).encode(), rng)
            (d / "tokenizer.json").write_bytes(data)
            cfg = mutate_json_obj(self.tok_config, rng) if which == "config" else self.tok_config
            (d / "tokenizer_config.json").write_text(json.dumps(cfg))
        return d

    def _recipe(self, rng, work):
        (work / "recipe.toml").write_bytes(mutate_toml(SAMPLE_RECIPE, rng))
        return work / "recipe.toml"

    def _profile(self, rng, work):
        (work / self.profile_name).write_bytes(mutate_toml(self.profile, rng))
        return work / self.profile_name


READERS = ("gguf", "safetensors", "config", "tokenizer", "recipe", "profile")


def reader(name: str):
    return {"gguf": read_gguf, "safetensors": read_safetensors_file, "config": read_config_dir,
            "tokenizer": read_tokenizer_dir, "recipe": read_recipe, "profile": read_profile}[name]


# -- the readers under test: each returns normally (input accepted) or raises the project's error type ------
def read_gguf(path: Path):
    """The header check, then the whole loader (gguf-py, tokenizer, weights) on what passed it."""
    from edgechat.core.gguf_file import read_header
    from edgechat.core.load_gguf import load_gguf

    read_header(path)
    return load_gguf(path)


def read_safetensors_file(path: Path):
    from edgechat.core.load_hf import read_safetensors

    return read_safetensors([path])


def read_config_dir(path: Path):
    from edgechat.core.load_hf import read_hf_config
    from edgechat.core.hf_files import load_tokenizer_dir
    from edgechat.core.validate import check_vocab

    raw, _, cfg = read_hf_config(path)
    tok = load_tokenizer_dir(path, raw)
    check_vocab(cfg, tok, str(path))
    return cfg


def read_tokenizer_dir(path: Path):
    from edgechat.core.chat_template import render, template_from_tokenizer_config
    from edgechat.core.hf_files import load_tokenizer_dir, read_json

    tok = load_tokenizer_dir(path, {})
    ids = tok.encode("Once upon a time, hello!")
    tok.decode(ids)
    tpl = template_from_tokenizer_config(read_json(path / "tokenizer_config.json"))
    if tpl:
        render(tpl, [{"role": "user", "content": "hi"}], bos_token=tok.bos_text, eos_token=tok.eos_text)
    return tok


def read_recipe(path: Path):
    from edgechat.app.recipe import load_recipe

    return load_recipe(path)


def read_profile(path: Path):
    from targets.profile import read_profile_file

    return read_profile_file(path)


def expected_errors(reader: str) -> tuple[type, ...]:
    """The one error type a reader may raise: EdgechatError, or for device profiles (targets/ imports nothing of
    edgechat) TargetError, which edgechat turns into its own one-line error at the boundary."""
    if reader == "profile":
        from targets.errors import TargetError

        return (TargetError,)
    from edgechat.core.errors import EdgechatError

    return (EdgechatError,)


SAMPLE_RECIPE = """[prune]
ffn = 0.5
layers = 2
strategy = "width"
[distill]
steps = 1000
lr = 0.0003
micro_batch = 4
seq_len = 256
device = "cpu"
[export]
formats = ["gguf"]
quants = ["q4_k_m"]
hf = true
[gate]
max_ppl_ratio = 1.3
max_kld = 0.5
"""
