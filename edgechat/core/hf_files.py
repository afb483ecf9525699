"""A Hugging Face checkpoint's JSON and tokenizer files, each checked as it is read: a malformed one is one
EdgechatError naming it (the tokenizer libraries' own exceptions, even a Rust panic, included)."""
from __future__ import annotations

import json
from pathlib import Path

from edgechat.core.errors import EdgechatError
from edgechat.core.tokenizer import HFTokenizer, SPTokenizer, Tokenizer


def load_tokenizer_dir(path: Path, config: dict) -> Tokenizer | None:
    """Tokenizer from an HF checkpoint directory: tokenizer.json (preferred) or tokenizer.model. Every file is
    checked as it is read: a malformed one is an EdgechatError naming it."""
    tcfg = read_json(path / "tokenizer_config.json")
    gen = read_json(path / "generation_config.json")
    _check_tokenizer_config(tcfg, gen, path)
    if (path / "tokenizer.json").exists():
        from tokenizers import Tokenizer as _Tok

        tok = guarded(path / "tokenizer.json", "is not a valid tokenizer.json", _Tok.from_file, str(path / "tokenizer.json"))
        bos = _token_id(tok, tcfg.get("bos_token"), config.get("bos_token_id"))
        eos_cfg = gen.get("eos_token_id", config.get("eos_token_id"))
        eos = [_token_id(tok, tcfg.get("eos_token"), None)]
        eos += eos_cfg if isinstance(eos_cfg, list) else [eos_cfg]
        add_bos = bool(tcfg.get("add_bos_token", False))
        return guarded(path / "tokenizer.json", "is not a valid tokenizer.json", HFTokenizer, tok, bos_id=bos,
                       eos_ids=[e for e in dict.fromkeys(eos) if e is not None], add_bos=add_bos)
    if (path / "tokenizer.model").exists():
        proto = (path / "tokenizer.model").read_bytes()
        return guarded(path / "tokenizer.model", "is not a valid SentencePiece model", SPTokenizer, proto,
                       add_bos=tcfg.get("add_bos_token", True))
    return None


def guarded(path: Path, what: str, fn, *args, **kwargs):
    """Call a tokenizer library on a file; its exceptions (even a Rust panic, a BaseException) become one
    EdgechatError naming the file."""
    try:
        return fn(*args, **kwargs)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: B036 -- pyo3's PanicException derives from BaseException
        raise EdgechatError(f"{path} {what}: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None


def _check_tokenizer_config(tcfg: dict, gen: dict, path: Path) -> None:
    for key in ("bos_token", "eos_token"):
        v = tcfg.get(key)
        if not (v is None or isinstance(v, str) or (isinstance(v, dict) and isinstance(v.get("content", ""), str))):
            raise EdgechatError(f"{path / 'tokenizer_config.json'}: {key} must be a string, got {v!r:.80}")
    if not isinstance(tcfg.get("add_bos_token", False), bool):
        raise EdgechatError(f"{path / 'tokenizer_config.json'}: add_bos_token must be true or false")
    tpl = tcfg.get("chat_template")
    if not (tpl is None or isinstance(tpl, str) or (isinstance(tpl, list) and all(
            isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str) for t in tpl))):
        raise EdgechatError(f"{path / 'tokenizer_config.json'}: chat_template must be a string or a list of "
                            "{name, template}")
    eos = gen.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos]
    if not all(i is None or (isinstance(i, int) and not isinstance(i, bool) and i >= 0) for i in ids):
        raise EdgechatError(f"{path / 'generation_config.json'}: eos_token_id must be a token id or a list of them")


def _token_id(tok, token, default):
    if isinstance(token, dict):
        token = token.get("content")
    if token:
        found = tok.token_to_id(token)
        if found is not None:
            return found
    return default if isinstance(default, int) and not isinstance(default, bool) else None


def read_json(path: Path) -> dict:
    """A JSON object from a file, {} when the file is absent; an EdgechatError naming it when it is malformed."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise EdgechatError(f"{path} is not valid JSON (truncated?): {e}") from None
    if not isinstance(data, dict):
        raise EdgechatError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data
