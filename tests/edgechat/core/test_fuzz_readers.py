"""Property-based fuzzing (hypothesis) of every reader of an outside file: mutated headers, lengths, offsets,
types and truncations of real files. Whatever the bytes, a reader either accepts the input or raises the
project's one error type, never anything else; a mutated GGUF that edgechat accepts is then loaded by llama.cpp
in a subprocess, which must not crash. benchmarks/fuzz_campaign.py runs the same mutators 20,000 times each."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests import fuzzing
from tests.conftest import ROOT, make_tokenizer_dir

EXAMPLES = 200
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.large_base_example, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def cases(stories_dir, stories_f32_gguf, tmp_path_factory):
    tok = tmp_path_factory.mktemp("tokjson")
    make_tokenizer_dir(tok)
    return fuzzing.Cases(stories_dir, stories_f32_gguf, tok, ROOT / "targets" / "profiles" / "rpi5-8gb.toml")


def fuzz(reader: str, cases, work: Path) -> list[Path]:
    """Run EXAMPLES mutated inputs through the reader; returns the accepted ones (kept as copies)."""
    read, allowed, accepted = fuzzing.reader(reader), fuzzing.expected_errors(reader), []
    counts = {"accepted": 0, "refused": 0}

    @SETTINGS
    @given(rng=st.randoms(use_true_random=False))
    def one(rng):
        path = cases.make(reader, rng, work)
        try:
            read(path)
        except allowed as e:
            assert str(e) and "\n" not in str(e), repr(e)  # one line
            counts["refused"] += 1
            return
        counts["accepted"] += 1
        if path.is_file() and len(accepted) < 12:
            keep = work / f"accepted-{len(accepted)}{path.suffix}"
            keep.write_bytes(path.read_bytes())
            accepted.append(keep)

    one()
    assert counts["accepted"] + counts["refused"] >= EXAMPLES, counts
    assert counts["refused"] > EXAMPLES // 4, counts  # the mutations reach the checks
    return accepted


LLAMA_LOADS = """
import sys
from runtimes import llama_lib
llama_cpp = llama_lib.load(sys.argv[1])  # the CPU variant, chosen on the intact file
for p in sys.argv[2:]:
    try:
        llm = llama_cpp.Llama(model_path=p, n_ctx=64, verbose=False)
        llm.eval(llm.tokenize(b"Once upon a time")[:8])
    except Exception as e:  # llama.cpp may refuse a file edgechat accepts: refusing is fine, crashing is not
        print("refused", p, type(e).__name__)
print("done")
"""


def test_fuzz_gguf_header(cases, stories_f32_gguf, tmp_path):
    accepted = fuzz("gguf", cases, tmp_path)
    assert accepted, "no mutated GGUF passed the checks: the llama.cpp half of the test ran on nothing"
    proc = subprocess.run([sys.executable, "-c", LLAMA_LOADS, str(stories_f32_gguf), *map(str, accepted)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "done" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("reader", ["safetensors", "config", "tokenizer", "recipe", "profile"])
def test_fuzz_reader(reader, cases, tmp_path):
    fuzz(reader, cases, tmp_path)


def test_mutated_gguf_string_is_one_line_for_inspect_and_chat(stories_f32_gguf, tmp_path):
    """The issue's case: bytes flipped inside a string of the metadata (general.name here)."""
    from tests.conftest import run_cli

    data = bytearray(stories_f32_gguf.read_bytes())
    at = data.index(b"general.name") + len(b"general.name") + 4 + 8  # the key, its type, the string's length
    data[at:at + 2] = b"\xff\xfe"
    bad = tmp_path / "flipped.gguf"
    bad.write_bytes(bytes(data))
    for args in (["inspect", str(bad)], ["chat", str(bad), "--prompt", "hi"]):
        proc = run_cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip() == f"edgechat: error: {bad} is corrupt: metadata general.name is not valid UTF-8"
