"""GGUF files that lie in their header: inspect and chat refuse each with one line naming the field, before
llama.cpp reads the file (the README's bad-input table; the fields as tests/fuzz_mutators.py lays them out)."""
import pytest

from tests.conftest import run_cli
from tests.edgechat.cli.test_cli_errors import assert_user_error


def gguf_with(src, dest, field_kind, index, fmt, value):
    """A copy of a GGUF with one header field (by kind and occurrence, from tests/fuzz_mutators.py's layout) set."""
    import struct

    from tests.fuzz_mutators import gguf_fields

    data = bytearray(src.read_bytes())
    at = [f for f in gguf_fields(bytes(data)) if f[2] == field_kind][index][0] if field_kind else index
    struct.pack_into(fmt, data, at, value)
    dest.write_bytes(bytes(data))
    return dest


def gguf_value_at(src, key):
    data = src.read_bytes()
    return data.index(key.encode()) + len(key) + 4  # after the key and its value type


@pytest.mark.parametrize("name, field, index, fmt, value, message", [
    ("v1", None, 4, "<I", 1, "is corrupt: GGUF version 1 is not supported (llama.cpp reads versions 2 and 3; "
                             "a big-endian file also shows a huge version)"),
    ("ttype", "ttype", 0, "<I", 99, "is corrupt: tensor token_embd.weight has unknown type 99"),
    ("ndims", "ndims", 0, "<I", 7, "is corrupt: tensor token_embd.weight has 7 dimensions (1 to 4 allowed)"),
    ("offset", "offset", 1, "<Q", 4, "is corrupt: tensor blk.0.attn_norm.weight has data offset 4, expected 131072"),
    ("nkv", None, 16, "<Q", 2**40, "is truncated or corrupt: its header cannot be read (1099511627776 metadata keys "
                                   "and 47 tensors cannot fit in"),
])
def test_malformed_gguf_header(stories_f32_gguf, tmp_path, name, field, index, fmt, value, message):
    bad = gguf_with(stories_f32_gguf, tmp_path / f"{name}.gguf", field, index, fmt, value)
    assert_user_error(run_cli("inspect", str(bad)), f"{bad} {message}")
    assert_user_error(run_cli("chat", str(bad), "--prompt", "hi"), f"{bad} {message}")  # before llama.cpp reads it


def test_gguf_zero_heads(stories_f32_gguf, tmp_path):
    bad = gguf_with(stories_f32_gguf, tmp_path / "h0.gguf", None, gguf_value_at(stories_f32_gguf,
                    "llama.attention.head_count"), "<I", 0)
    assert_user_error(run_cli("inspect", str(bad)),
                      f"{bad} is corrupt: GGUF metadata llama.attention.head_count must be a positive uint32, got 0")


def test_gguf_absurd_context_length(stories_f32_gguf, tmp_path):
    """Found by the fuzz campaign: llama.cpp spent 38 s opening this file, with n_ctx 64."""
    bad = gguf_with(stories_f32_gguf, tmp_path / "ctx.gguf", None, gguf_value_at(stories_f32_gguf,
                    "llama.context_length"), "<I", 1995459017)
    assert_user_error(run_cli("chat", str(bad), "--prompt", "hi"), f"{bad} is corrupt: GGUF metadata llama.context_length "
                      "1995459017 is beyond any model's context (at most 16777216)")
