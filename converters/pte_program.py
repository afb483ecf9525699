"""What a written .pte holds, read back from the file: each XNNPACK-delegated linear's weight type and group
(from the delegate's own flatbuffer, decompiled with ExecuTorch's flatc against XNNPACK's schema) and the
quantized-embedding op, so a plan can be checked against the program and `inspect` can count its types."""
from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path

WEIGHT_TYPES = {"xnn_datatype_qbint4": "8da4w", "xnn_datatype_qcint4": "8da4w", "xnn_datatype_qcint8": "8da8w",
                "xnn_datatype_qbint8": "8da8w", "xnn_datatype_fp32": "fp32"}
EMBEDDING_OPS = {"quantized_decomposed::embedding_4bit": "4w", "quantized_decomposed::embedding_byte": "8w",
                 "aten::embedding": "fp32"}


def _xnn_graph(blob: bytes, schema: Path, tmp: Path) -> dict:
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    h = XNNHeader.from_bytes(blob[:XNNHeader.EXPECTED_LENGTH])
    (tmp / "g.bin").write_bytes(blob[h.flatbuffer_offset:h.flatbuffer_offset + h.flatbuffer_size])
    _flatc_decompile(str(tmp), str(schema), str(tmp / "g.bin"), ["--raw-binary"])
    return json.loads((tmp / "g.json").read_text())


def program_layout(path: Path, method: str = "forward") -> dict:
    """{"linears": [{"choice", "datatype", "out", "in", "group_size"}] in execution order, "embedding": its op's
    choice ("4w", "8w" or "fp32")}. Linears run in module order, so they pair with the plan's linears."""
    import executorch.backends.xnnpack.serialization as xnn_serialization
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(Path(path).read_bytes())
    prog = pte.program
    plan = next(p for p in prog.execution_plan if p.name == method)
    schema = Path(list(xnn_serialization.__path__)[0]) / "schema.fbs"
    linears = []
    with tempfile.TemporaryDirectory(prefix="edgechat-pte-") as tmp:
        for delegate in plan.delegates:
            if delegate.id != "XnnpackBackend":
                continue
            graph = _xnn_graph(prog.backend_delegate_data[delegate.processed.index].data, schema, Path(tmp))
            values = {}
            for v in graph["xvalues"]:
                u = v["xvalue_union"]
                t = u.get("tensor_value", u)
                values[t["id_out"]] = (t, u.get("quant_params") or {})
            for node in graph["xnodes"]:
                if node["xnode_union_type"] != "XNNFullyConnected":
                    continue
                t, q = values[node["xnode_union"]["filter_id"]]
                group = q.get("group_size", 0)
                kind = WEIGHT_TYPES.get(t["datatype"], t["datatype"])
                linears.append({"choice": f"{kind}-g{group}" if group else kind, "datatype": t["datatype"],
                                "out": t["dims"][0], "in": t["dims"][1], "group_size": group})
    ops = [f"{o.name}" for o in plan.operators]
    emb = next((EMBEDDING_OPS[o] for o in ops if o in EMBEDDING_OPS), None)
    return {"linears": linears, "embedding": emb}


def type_counts(layout: dict) -> dict[str, int]:
    """How many linears of each choice, the embedding's as 'embedding <choice>'."""
    counts = collections.Counter(x["choice"] for x in layout["linears"])
    if layout["embedding"]:
        counts[f"embedding {layout['embedding']}"] += 1
    return dict(counts)
