"""The .pte export's options (converters.pte_options): the defaults per quant and every refusal, made before
any work as one line with exit code 2."""
import pytest

from tests.conftest import run_cli


def test_hqq_is_the_default_for_4bit_weights_but_not_with_qat():
    from converters.pte_options import hqq_default

    assert hqq_default({}, four_bit=True) and not hqq_default({}, four_bit=False)
    assert not hqq_default({"qat_steps": 4}, four_bit=True)  # QAT learns the affine grid
    assert not hqq_default({"hqq": False}, four_bit=True) and hqq_default({"hqq": True}, four_bit=False)


# -- bad input: one line, exit code 2, nothing written ------------------------------------------------------------

def convert_refused(tmp_path, source, message, *args):
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli("convert", str(source), "-o", str(tmp_path / "out"), "--format", "pte", "--no-eval", *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("edgechat: error: ") and message in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("args, message", [
    (["--quant", "fp32", "--embedding-quant", "4w"], "--embedding-quant 4w with --quant fp32 is not supported"),
    (["--quant", "8da8w", "--embedding-quant", "4w"], "--embedding-quant 4w with --quant 8da8w is not supported"),
    (["--quant", "8da4w", "--group-size", "48"], "--group-size 48 is not supported"),
    (["--quant", "8da4w", "--embedding-quant", "2w"], "--embedding-quant 2w is not supported"),
    (["--quant", "8da4w", "--head-quant", "2w"], "--head-quant 2w is not supported: choose one of 8w, 4w"),
    (["--quant", "fp32", "--head-quant", "8w"], "--head-quant applies to 8da4w and 8da8w, not to --quant fp32"),
    (["--quant", "8da8w", "--head-quant", "4w"], "--head-quant 4w with --quant 8da8w is not supported"),
    (["--quant", "q4_0"], "unknown quant type 'q4_0' for format pte"),
])
def test_unsupported_options_refused_before_loading(tmp_path, stories_dir, args, message):
    convert_refused(tmp_path, stories_dir, message, *args)


@pytest.mark.parametrize("args, message", [
    (["--quant", "8da4w", "--group-size", "128"], "--group-size 128 does not divide stories260K's hidden size (64)"),
    (["--quant", "fp32", "--max-seq-len", "4096"], "--max-seq-len 4096 is beyond stories260K's 512 positions"),
])
def test_options_the_model_cannot_take_refused(tmp_path, stories_dir, args, message):
    convert_refused(tmp_path, stories_dir, message, *args)
