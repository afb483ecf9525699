"""Converting the same source with the same options twice gives byte-identical GGUF and .pte files, and
manifests that differ only in their timestamp and timings."""
import json

from tests.conftest import STORIES_SEQ, shared_export

TIME_KEYS = {"created"}  # when it ran; with every "*_s" (how long a step took): the only fields allowed to differ


def diff_keys(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in TIME_KEYS or k.endswith("_s"):
                continue
            out += diff_keys(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [k for i, (x, y) in enumerate(zip(a, b)) for k in diff_keys(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def test_same_source_same_options_same_bytes(stories_out, stories_dir, tmp_path_factory):
    again = shared_export(tmp_path_factory, "stories-again", stories_dir, ["f32", "fp32"], formats=("gguf", "pte"),
                          max_seq_len=STORIES_SEQ, eval_method=True)  # the options of the stories_out fixture
    first, second = (json.loads((d / "edgechat.json").read_text()) for d in (stories_out, again))
    assert diff_keys(first, second) == []
    assert {a["format"] for a in first["artifacts"]} == {"gguf", "pte"}
    for art in first["artifacts"]:
        assert (stories_out / art["file"]).read_bytes() == (again / art["file"]).read_bytes(), art["file"]
    for name in first["files"]:
        assert (stories_out / name).read_bytes() == (again / name).read_bytes(), name
