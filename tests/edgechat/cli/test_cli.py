"""The CLI's help and inspect output."""
import json

from tests.conftest import run_cli


def test_help_lists_commands():
    out = run_cli("--help", check=True).stdout
    for command in ("convert", "chat", "eval", "inspect", "profile"):
        assert command in out


def test_convert_help_explains_options():
    out = run_cli("convert", "--help", check=True).stdout
    for option in ("--format", "--quant", "--imatrix", "--calib", "--no-eval", "q4_k_m"):
        assert option in out


def test_inspect_json(smollm_out):
    info = json.loads(run_cli("inspect", str(smollm_out / "smollm2-135m-instruct-q8_0.gguf"), "--json", check=True).stdout)
    assert info["architecture"] == "llama" and info["layers"] == 30 and info["chat_template"] is True
    assert info["tokenizer"] == "gpt2 (smollm), 49152 tokens" and "Q8_0" in info["tensor_types"]
    assert info["manifest"]["source"]["kind"] == "default"
    # the CPU variant llama.cpp runs it with here: the one the engine loads, shown without loading llama.cpp
    from runtimes.llama_cpp_engine import LlamaCppEngine
    from targets.host import physical_cores

    e = LlamaCppEngine(smollm_out / "smollm2-135m-instruct-q8_0.gguf", n_ctx=64)
    run = info["runs_on"]
    assert run["cpu_variant"] == e.describe()["cpu_backend"]["variant"] and run["threads"] == physical_cores()
    assert run["engine"] == "llama.cpp" and run["how"] in ("cached", "not yet probed")
    e.close()
    text = run_cli("inspect", str(smollm_out / "smollm2-135m-instruct-q8_0.gguf"), check=True).stdout
    assert f"llama.cpp CPU variant {run['cpu_variant']} (" in text
