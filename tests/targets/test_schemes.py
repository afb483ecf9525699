"""The quant-scheme registry is the one table of quant names: its facts agree with gguf-py and ggml, and the
converters, the planner and the CLI all read their choices from it."""
from __future__ import annotations

import pytest

from targets import quants, schemes
from tests.conftest import run_cli


def test_names_are_unique_and_every_format_has_a_default():
    assert len(schemes.names()) == len(set(schemes.names()))
    for fmt, default in schemes.DEFAULTS.items():
        assert schemes.get(default).format == fmt and schemes.get(default).made


@pytest.mark.parametrize("name", schemes.names())
def test_nominal_bits_are_the_main_types_block_bits(name):
    s = schemes.get(name)
    assert quants.type_bytes(s.main_type, 1 << 20) * 8 / (1 << 20) == pytest.approx(s.bits)
    if s.format == "gguf":
        import gguf

        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[s.main_type]]
        assert (block, type_size) == quants.GGML_BLOCKS[s.main_type]
        assert s.block == block or (block == 1 and s.block == 1)
        assert s.llama_ftype == gguf.LlamaFileType[("ALL_" if name == "f32" else "MOSTLY_") + name.upper()]


def test_unknown_quant_names_the_choices():
    from targets.errors import TargetError

    with pytest.raises(TargetError, match="unknown quant 'q3_k': choose one of f32, f16, q8_0"):
        schemes.get("q3_k")


def test_converters_make_exactly_the_made_schemes():
    from converters import get_format

    assert get_format("gguf").quants == schemes.names("gguf", made=True)
    assert get_format("pte").quants == schemes.names("pte", made=True)
    assert get_format("gguf").default_quant == "q4_k_m" and get_format("pte").default_quant == "8da4w"


def test_planner_candidates_and_cli_help_come_from_the_table():
    from targets.plan_types import DEFAULT_QUANTS

    assert DEFAULT_QUANTS == {"gguf": ("q8_0", "q4_0", "q4_k_m"), "pte": ("8da8w", "8da4w")}
    out = " ".join(run_cli("convert", "--help", check=True).stdout.split())
    assert "gguf: f32, f16, q8_0, q4_0, q4_k_m (default q4_k_m); pte: fp32, 8da8w, 8da4w (default 8da4w)" in out
