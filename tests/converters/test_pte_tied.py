"""--share-tied (converters/pte_tied.py) on stories260K, which ties its embedding and head: the program and its
.ptd hold the tied matrix once, give the logits of the program that holds it twice, fit a budget with the head at
8 bits, and every way the pair can go wrong is one clear line."""
import json
import shutil

import numpy as np
import pytest

from converters.pte_program import program_layout
from runtimes.pte_engine import PteEngine
from tests.background import jobs
from tests.conftest import run_cli

BUDGET_MIB = 0.3


@pytest.fixture(scope="session")
def tied_out(tmp_path_factory, stories_dir):
    """`convert --quant 8da8w --size-mib 0.3 --share-tied` (tests/background.py)."""
    return jobs.wait("pte-tied", tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def apart_out(tmp_path_factory, stories_dir):
    """The same 8da8w program without --share-tied."""
    return jobs.wait("pte-apart", tmp_path_factory.getbasetemp())


def _arts(out):
    return {a["quant"]: a for a in json.loads((out / "edgechat.json").read_text())["artifacts"]}


def test_the_tied_matrix_is_held_once(tied_out, apart_out, stories_model):
    shared, apart = _arts(tied_out)["8da8w"], _arts(apart_out)["8da8w"]
    pte, ptd = tied_out / shared["file"], tied_out / shared["data_file"]
    assert ptd.name == pte.with_suffix(".ptd").name and ptd.exists() and not (apart_out / ptd.name).exists()
    assert shared["bytes"] == pte.stat().st_size + ptd.stat().st_size
    assert apart["bytes"] == (apart_out / apart["file"]).stat().st_size
    table = stories_model.config.vocab_size * stories_model.config.hidden_size  # int8 bytes of one copy
    # the pair is smaller by one copy of the table (its per-row scales aside), and the .ptd holds only one
    assert table <= apart["bytes"] - shared["bytes"] < table * 1.2
    assert table <= ptd.stat().st_size < 2 * table


def test_shared_program_gives_the_logits_of_the_program_holding_it_twice(tied_out, apart_out, stories_model):
    ids = stories_model.tokenizer.encode("Once upon a time, there was a little dog named Max.", add_bos=True)
    shared = PteEngine(tied_out / _arts(tied_out)["8da8w"]["file"], logits_all=True)
    apart = PteEngine(apart_out / _arts(apart_out)["8da8w"]["file"], logits_all=True)
    a, b = shared.logits_all(ids), apart.logits_all(ids)
    assert a.shape == (len(ids), stories_model.config.vocab_size)
    np.testing.assert_array_equal(a, b)


def test_budget_plan_holds_the_head_at_8_bits_and_fits_with_its_data_file(tied_out):
    art = _arts(tied_out)[f"mixed-{BUDGET_MIB:g}mib"]
    pte = tied_out / art["file"]
    assert art["data_file"] == pte.with_suffix(".ptd").name and (tied_out / art["data_file"]).exists()
    types = art["plan"]["tensor_types"]
    assert (types["lm_head"], types["model.embed_tokens"]) == ("8da8w", "8w")
    assert art["bytes"] == pte.stat().st_size + (tied_out / art["data_file"]).stat().st_size <= BUDGET_MIB * 2**20
    assert [x["choice"] for x in program_layout(pte)["linears"]] == \
        [c for n, c in types.items() if n != "model.embed_tokens"]
    info = json.loads(run_cli("inspect", str(pte), "--json", check=True).stdout)
    assert (info["bytes"], info["data_file"]) == (art["bytes"], art["data_file"])


def test_a_program_without_its_data_file_is_one_line(tied_out, tmp_path):
    out = tmp_path / "moved"
    shutil.copytree(tied_out, out)
    (out / _arts(out)["8da8w"]["data_file"]).unlink()
    r = run_cli("chat", str(out / _arts(out)["8da8w"]["file"]), "--prompt", "hi")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"edgechat: error: stories260k-8da8w.pte keeps its weights' shared part in stories260k-8da8w.ptd, which is "
        f"not beside it in {out}: copy the two files together")


def test_plan_as_is_reads_a_programs_own_types(tied_out):
    """`edgechat plan PTE --as-is`: the types the budget's plan gave each module, from the manifest beside the
    program (a .pte holds no model config of its own)."""
    art = _arts(tied_out)[f"mixed-{BUDGET_MIB:g}mib"]
    plan = art["plan"]["tensor_types"]
    d = json.loads(run_cli("plan", str(tied_out / art["file"]), "--target", "rpi5-8gb", "--as-is", "--json",
                           check=True).stdout)
    assert d["format"] == "pte" and d["quant"] in ("8da8w", "8da4w")
    slots = {s["name"]: s["types"] for s in d["chosen"]["slots"]}
    assert slots["output"] == "QC8W" and slots["token_embd"] == "QC8W"  # the 8da8w head, the 8w table
    layers = sorted({int(m.split("layers.")[1].split(".")[0]) for m in plan if "layers." in m})
    four = {int(m.split("layers.")[1].split(".")[0]) for m, c in plan.items() if c.startswith("8da4w")}
    assert four and [("QB4W" in slots[f"blk.{i}"]) for i in layers] == [i in four for i in layers], slots


@pytest.mark.parametrize("args, message", [
    (["--quant", "8da8w", "--embedding-quant", "none"], "--share-tied holds the head at 8 bits and the table as "
     "its 8-bit rows: use it with --bpw/--size-mib, or with an 8-bit head and table (--quant 8da8w, or 8da4w "
     "--head-quant 8w --embedding-quant 8w)"),
    (["--size-mib", "0.1"], "a budget of 0.1 MiB is below the smallest .pte --share-tied (an 8-bit head, the table "
     "its rows) allows for this model: 0.29 MiB (9.08 bits per weight); ask for at least that"),
    (["--quant", "fp32"], "--share-tied applies to quantized programs (8da8w, 8da4w --head-quant 8w "
     "--embedding-quant 8w, or --bpw/--size-mib plans), not to --quant fp32")])
def test_share_tied_where_the_table_cannot_be_the_heads_rows_is_refused(stories_dir, tmp_path, args, message):
    r = run_cli("convert", str(stories_dir), "-o", str(tmp_path / "o"), "--format", "pte", *args, "--share-tied",
                "--no-eval")
    assert r.returncode == 2 and not (tmp_path / "o").exists()
    assert r.stderr.strip().splitlines()[-1] == f"edgechat: error: {message}"


def test_share_tied_on_an_untied_model_is_refused(tiny_qwen2_dir, tmp_path):
    r = run_cli("convert", str(tiny_qwen2_dir), "-o", str(tmp_path / "o"), "--format", "pte", "--quant", "8da8w",
                "--share-tied", "--no-eval")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "edgechat: error: --share-tied: tiny-qwen2 does not tie its embedding and head; there is one matrix of "
        "each already")
