"""Honest sizes: a model whose rows are not a multiple of 256 (stories260K: 64 wide, ffn_down 172) converted to
Q4_K_M says which tensors fell back and why, and its effective bits per weight, in the manifest, on stderr and
in `inspect --json`, the same numbers as a direct read of the file with gguf-py. The importance matrix is on
by default and the manifest says so."""
import json
import math

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def stories_out(stories_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sizes") / "out"
    proc = run_cli("convert", str(stories_dir), "-o", str(out), "--quant", "q4_k_m", "--quant", "q4_0", "--no-eval",
                   "--threads", "1", check=True)
    return out, json.loads((out / "edgechat.json").read_text()), proc.stderr


def gguf_py_sizes(path) -> dict:
    """Bits per weight and per-type weights/bytes, straight from gguf-py's reader."""
    from gguf import GGUFReader

    types = {}
    for t in GGUFReader(path).tensors:
        e = types.setdefault(t.tensor_type.name, {"weights": 0, "bytes": 0, "tensors": 0})
        e["weights"] += int(t.n_elements)
        e["bytes"] += int(t.n_bytes)
        e["tensors"] += 1
    weights = sum(e["weights"] for e in types.values())
    return {"bpw": round(sum(e["bytes"] for e in types.values()) * 8 / weights, 3), "weights": weights, "types": types}


def artifact(manifest, quant):
    return next(a for a in manifest["artifacts"] if a["quant"] == quant)


def test_q4_k_m_fallbacks_and_effective_bits(stories_out):
    out, manifest, stderr = stories_out
    art = artifact(manifest, "q4_k_m")
    direct = gguf_py_sizes(out / art["file"])
    assert art["size"]["bpw"] == direct["bpw"] and art["size"]["weights"] == direct["weights"]
    for t, e in direct["types"].items():
        assert {k: art["size"]["types"][t][k] for k in e} == e
        assert art["size"]["types"][t]["share"] == round(e["weights"] / direct["weights"], 4)
    assert direct["bpw"] > 8  # asked for 4.5 bits, the rows allow no K-quant: the file is twice that
    by_name = {f["tensor"]: f for f in art["fallbacks"]}
    assert by_name["blk.0.attn_q.weight"] == {
        "tensor": "blk.0.attn_q.weight", "requested": "Q4_K", "type": "Q5_0", "cols": 64,
        "reason": "row length 64 is not a multiple of Q4_K's block of 256"}
    assert by_name["blk.0.ffn_down.weight"]["type"] == "F16"
    assert by_name["blk.0.ffn_down.weight"]["reason"] == ("row length 172 is not a multiple of Q4_K's block of 256, "
                                                          "nor of 32 (llama.cpp's last resort is F16)")
    from gguf import GGUFReader

    file_types = {t.name: t.tensor_type.name for t in GGUFReader(out / art["file"]).tensors}
    assert all(file_types[f["tensor"]] == f["type"] for f in art["fallbacks"])
    assert {n for n, t in file_types.items() if t in ("Q5_0", "F16")} <= set(by_name)  # every fallback is listed
    note = next(n for n in manifest["notes"] if n.startswith("note: stories260k-q4_k_m.gguf"))
    assert note in stderr
    assert note.startswith(f"note: stories260k-q4_k_m.gguf (q4_k_m) is {direct['bpw']:.2f} bits per weight, not the "
                           f"nominal 4.5: Q5_0 64%, F16 21%, Q8_0 14% of the weights; {len(art['fallbacks'])} tensors "
                           "fell back to other types (row width 64, 172 does not fit the requested type's block)")


def test_inspect_json_shows_the_same_numbers(stories_out):
    out, manifest, _ = stories_out
    art = artifact(manifest, "q4_k_m")
    info = json.loads(run_cli("inspect", str(out / art["file"]), "--json", check=True).stdout)
    direct = gguf_py_sizes(out / art["file"])
    assert info["size"]["bpw"] == direct["bpw"]
    assert {t: v["bytes"] for t, v in info["size"]["types"].items()} == {t: v["bytes"] for t, v in direct["types"].items()}
    assert info["manifest"]["artifact"]["fallbacks"] == art["fallbacks"]
    text = run_cli("inspect", str(out / art["file"]), check=True).stdout
    assert f"{direct['bpw']:.2f} (Q5_0 64%, F16 21%, Q8_0 14%" in text
    assert f"{len(art['fallbacks'])} tensors (Q4_K->F16, Q4_K->Q5_0, Q6_K->F16, Q6_K->Q8_0)" in text


def test_importance_matrix_on_by_default_and_off_with_no_imatrix(stories_dir, stories_out, tmp_path):
    out, manifest, _ = stories_out
    assert manifest["imatrix"]["chat_formatted"] and manifest["imatrix"]["sequences"] == 64
    assert artifact(manifest, "q4_0")["imatrix"] and artifact(manifest, "q4_k_m")["imatrix"]
    plain = tmp_path / "plain"
    run_cli("convert", str(stories_dir), "-o", str(plain), "--quant", "q4_0", "--no-imatrix", "--no-eval",
            "--threads", "1", check=True)
    m = json.loads((plain / "edgechat.json").read_text())
    assert m["imatrix"] == {"used": False, "why": "--no-imatrix"} and not artifact(m, "q4_0")["imatrix"]
    weighted = out / artifact(manifest, "q4_0")["file"]
    assert (plain / artifact(m, "q4_0")["file"]).read_bytes() != weighted.read_bytes()


def test_size_report_of_the_embedded_q4_1_model():
    """SmolLM2's own Q4_1 file: bits per weight as llama.cpp counts them (tensor data bits / weights)."""
    from edgechat.core.gguf_sizes import size_report
    from edgechat.core.sources import default_model_path

    path = default_model_path()
    direct, rep = gguf_py_sizes(path), size_report(path)
    assert rep["bpw"] == direct["bpw"] and math.isclose(sum(t["share"] for t in rep["types"].values()), 1, abs_tol=1e-3)
