"""Mixed precision for a size budget, by measurement: each weight matrix's sensitivity (how much the KL
divergence to the fp32 model grows on calibration text when that tensor alone is quantized to a candidate
type, by llama.cpp's own quantizer), then the per-tensor types that minimise the summed sensitivity under
the budget (exactly, by dynamic programming). llama.cpp's quantizer makes the file from the plan (converters.gguf_quantize tensor_types)."""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from edgechat.core import archs
from edgechat.core.errors import EdgechatError
from edgechat.core.gguf_sizes import tensor_bytes
from edgechat.core.model import Model

# llama.cpp's types that fit a row width, cheapest first (the first is the one measured, see sensitivity)
CANDIDATES_256 = ("Q4_K", "Q5_K", "Q6_K", "Q8_0")  # rows a multiple of 256: the K-quants
CANDIDATES_32 = ("Q4_0", "IQ4_NL", "Q5_0", "Q8_0")  # rows a multiple of 32 only (SmolLM2's 576)
ALIGN = 32  # GGUF's default data alignment: each tensor's data is padded to it
HEADER_SLACK = 4096  # bytes: a quantized file's header has a few more keys than the F32 file it comes from
MEASURE_ALL_MACS = 2e11  # below this many multiply-adds for measuring every candidate, every one is measured
# calibration of both formats' sensitivity passes, a batch of this many x this many tokens: on SmolLM2 the
# GGUF Q4_K_M-size plan from 2 x 64 scored 0.0291 WikiText-2 KLD, from 8 x 128 0.0201 (bench_sensitivity_calib.md);
# the .pte --share-tied plan of that size 0.0862 -> 0.0859 (bench_pte_tied_program-100.57-sens8x128.md)
SENS_SEQS, SENS_TOKENS = 8, 128
BATCH_SEQS, BATCH_TOKENS = 2, 64  # calibration_batch's default: AWQ's activation statistics (.pte)
DP_UNITS = 200_000  # byte steps of the plan's dynamic programme: its rounding wastes at most 1/DP_UNITS per tensor


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # GGUF name
    param: str  # the torch module's parameter name
    rows: int
    cols: int

    @property
    def weights(self) -> int:
        return self.rows * self.cols


def candidates(cols: int) -> tuple[str, ...]:
    if cols % 256 == 0:
        return CANDIDATES_256
    if cols % 32 == 0:
        return CANDIDATES_32
    return ("F16",)  # no quantized ggml type fits: llama.cpp itself falls back to F16


def type_bytes(t: PlannedTensor, ggml_type: str) -> int:
    return tensor_bytes([t.cols, t.rows], ggml_type)


def planned_tensors(model: Model) -> list[PlannedTensor]:
    """The weight matrices llama.cpp quantizes (a tied head is the embedding: one tensor)."""
    params = [(n, p) for n, p in model.module.named_parameters() if p.dim() == 2]  # shared weights listed once
    names = archs.get(model.config.arch).gguf_tensor_names(model.config, [n for n, _ in params])
    return [PlannedTensor(names[n], n, p.shape[0], p.shape[1]) for n, p in params]


# ---- the budget ----------------------------------------------------------------------------------------

def budget_tensor_bytes(budget: dict, base_header, tensors: list[PlannedTensor]) -> int:
    """Bytes the planned tensors may take for {"bpw": X} (the file's effective bits per weight, as
    edgechat.core.gguf_sizes counts it) or {"size_mib": N} (the whole file), given the F32 file's header."""
    planned = {t.name for t in tensors}
    fixed = {n: (dims, typ) for n, (dims, typ) in base_header.tensors.items() if n not in planned}
    fixed_bytes = sum(tensor_bytes(d, typ) for d, typ in fixed.values())
    if "bpw" in budget:
        return math.floor(budget["bpw"] * base_header.params / 8) - fixed_bytes
    padding = ALIGN * len(base_header.tensors)
    return math.floor(budget["size_mib"] * 2**20) - base_header.data_offset - HEADER_SLACK - padding - fixed_bytes


def budget_text(budget: dict) -> str:
    return f"{budget['bpw']:g} bits per weight" if "bpw" in budget else f"{budget['size_mib']:g} MiB"


def check_budget(budget: dict, base_header, tensors: list[PlannedTensor]) -> int:
    """The planned tensors' byte budget; a budget below what the smallest candidate types allow is refused
    with the smallest size possible, in both units."""
    allowed = budget_tensor_bytes(budget, base_header, tensors)
    smallest = sum(type_bytes(t, candidates(t.cols)[0]) for t in tensors)
    if allowed < smallest:
        need_bits = (smallest - budget_tensor_bytes({"bpw": 0}, base_header, tensors)) * 8 / base_header.params
        need_mib = (smallest - budget_tensor_bytes({"size_mib": 0}, base_header, tensors)) / 2**20
        raise EdgechatError(f"a budget of {budget_text(budget)} is below the smallest file llama.cpp's types allow "
                            f"for this model: {math.ceil(need_mib * 100) / 100:.2f} MiB "
                            f"({math.ceil(need_bits * 100) / 100:.2f} bits per weight); ask for at least that")
    return allowed


# ---- sensitivity ---------------------------------------------------------------------------------------

def calibration_batch(sequences: list[list[int]], n: int = BATCH_SEQS, tokens: int = BATCH_TOKENS) -> torch.Tensor:
    """The first n calibration sequences cut to the same length (at most `tokens`), as one batch."""
    seqs = sorted(sequences[: max(n * 4, n)], key=len, reverse=True)[:n] or [[0]]
    length = min(tokens, min(len(s) for s in seqs))
    return torch.tensor([s[:length] for s in seqs])


def _kld(module, ids: torch.Tensor, ref_logp: torch.Tensor) -> float:
    logp = torch.log_softmax(module(ids).float(), dim=-1)
    return float((ref_logp.exp() * (ref_logp - logp)).sum(-1).mean())


def sensitivity(model: Model, base_gguf: Path, sequences: list[list[int]], imatrix: dict | None = None,
                threads: int | None = None, measure_all: bool | None = None, on_step=None,
                calib_seqs: int = SENS_SEQS, calib_tokens: int = SENS_TOKENS) -> dict:
    """{"tensors": {gguf name: {"rows", "cols", "types": {type: {"bytes", "kld", "measured"}}}}, "method", ...}.

    Each candidate type is made once for every tensor it fits by llama.cpp's quantizer (with the importance
    matrix the final file gets) and read back dequantized with gguf-py. A tensor's KL growth is measured by
    swapping it alone into the fp32 model: for every candidate when that is cheap (measure_all, or a small
    model), else for its cheapest candidate only, the others scaled from it by their output-error energy
    (the sum over the weights' errors squared times their input channels' mean square, the importance
    matrix): to second order the KL growth is proportional to it for a given tensor."""
    from converters.imatrix import torch_threads

    with torch_threads(threads), torch.inference_mode():
        return _sensitivity(model, base_gguf, calibration_batch(sequences, calib_seqs, calib_tokens), imatrix,
                            threads, measure_all, on_step)


def scale_unmeasured(types: dict, low: str, energy) -> None:
    """One tensor's (or module's) unmeasured candidates: the measured cheapest one's KL growth, scaled by each
    candidate's output-error energy over the cheapest one's (energy(type))."""
    for typ, entry in types.items():
        if entry["kld"] is None:
            e_low = energy(low)
            entry["kld"] = types[low]["kld"] * (energy(typ) / e_low if e_low > 0 else 0.0)
        entry["kld"] = round(entry["kld"], 8)

def _sensitivity(model, base_gguf, ids, imatrix, threads, measure_all, on_step) -> dict:
    from converters.gguf_quantize import quantize
    from converters.imatrix import compute_imatrix
    from edgechat.core.load_gguf import load_gguf

    module = model.module
    tensors = planned_tensors(model)
    params = dict(module.named_parameters())
    activations = compute_imatrix(model, [row.tolist() for row in ids])  # input channels' mean squares
    ref_logp = torch.log_softmax(module(ids).float(), dim=-1)
    types = list(dict.fromkeys(c for t in tensors for c in candidates(t.cols) if c != "F16"))
    if measure_all is None:
        macs = model.config.param_count() * ids.numel() * sum(len(candidates(t.cols)) for t in tensors)
        measure_all = macs < MEASURE_ALL_MACS
    result = {t.name: {"rows": t.rows, "cols": t.cols, "types": {}} for t in tensors}
    energy: dict[tuple[str, str], float] = {}
    for t in tensors:
        if candidates(t.cols) == ("F16",):
            result[t.name]["types"]["F16"] = {"bytes": type_bytes(t, "F16"), "kld": 0.0, "measured": False}
    with tempfile.TemporaryDirectory(prefix="edgechat-sens-") as tmp:
        for typ in types:
            fits = [t for t in tensors if typ in candidates(t.cols)]
            path = quantize(base_gguf, Path(tmp) / f"{typ}.gguf", threads=threads, imatrix=imatrix,
                            tensor_types={t.name: typ for t in fits}).path
            state = load_gguf(path).module.state_dict()
            path.unlink()
            for t in fits:
                w = params[t.param]
                w_q = state[t.param].to(w.dtype)
                act = activations.get(t.name)
                err = (w_q - w).double().pow(2)
                energy[t.name, typ] = float((err * torch.from_numpy(act).double()).sum() if act is not None
                                            else err.sum())
                entry = {"bytes": type_bytes(t, typ), "kld": None, "measured": False}
                if measure_all or typ == candidates(t.cols)[0]:
                    saved = w.detach().clone()
                    w.copy_(w_q)
                    try:
                        entry["kld"], entry["measured"] = max(_kld(module, ids, ref_logp), 0.0), True
                    finally:
                        w.copy_(saved)
                    if on_step:
                        on_step()
                result[t.name]["types"][typ] = entry
            del state
    for t in tensors:
        scale_unmeasured(result[t.name]["types"], candidates(t.cols)[0], lambda typ, n=t.name: energy[n, typ])
    return {"tensors": result, "method": "measured" if measure_all else "measured at the cheapest type, scaled",
            "calibration": {"sequences": int(ids.shape[0]), "tokens": int(ids.numel())}}


def measurements(model: Model, measure_all: bool | None = None) -> int:
    """How many forward passes sensitivity() makes (its progress total)."""
    tensors = [t for t in planned_tensors(model) if candidates(t.cols) != ("F16",)]
    if measure_all is None:
        macs = model.config.param_count() * SENS_SEQS * SENS_TOKENS * sum(len(candidates(t.cols)) for t in tensors)
        measure_all = macs < MEASURE_ALL_MACS
    return sum(len(candidates(t.cols)) for t in tensors) if measure_all else len(tensors)


# ---- the plan ------------------------------------------------------------------------------------------

def choose_types(sens: dict, budget_bytes: int, units: int = DP_UNITS) -> dict[str, str]:
    """Per tensor the type that minimises the summed sensitivity with the tensors' bytes under budget_bytes: a
    multiple-choice knapsack solved exactly by dynamic programming over the bytes above the cheapest plan, in
    steps of ceil(range / units) bytes (each type's extra bytes rounded up, so the plan never passes the budget;
    a greedy by sensitivity saved per byte missed the optimum by 8% on small cases)."""
    import numpy as np

    names = list(sens["tensors"])
    opts = [sorted((e["bytes"], e["kld"], typ) for typ, e in sens["tensors"][n]["types"].items()) for n in names]
    base = sum(o[0][0] for o in opts)
    spare = budget_bytes - base
    if spare < 0:
        raise ValueError(f"budget {budget_bytes} is below the cheapest plan's {base} bytes")
    span = sum(o[-1][0] - o[0][0] for o in opts)
    step = max(1, -(-min(spare, span) // units))
    cap = min(spare, span) // step
    inf = float("inf")
    best = np.full(cap + 1, 0.0)  # best[u]: least summed sensitivity so far using at most u steps of extra bytes
    picks = np.zeros((len(names), cap + 1), dtype=np.int8)
    for i, o in enumerate(opts):
        new = np.full(cap + 1, inf)
        for j, (b, k, _typ) in enumerate(o):
            extra = -(-(b - o[0][0]) // step)
            if extra > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[extra:] = best[: cap + 1 - extra] + k
            better = cand < new
            new[better], picks[i, better] = cand[better], j
        best = new
    u, plan = cap, {}
    for i in range(len(names) - 1, -1, -1):  # walk the choices back from the full budget
        j = int(picks[i, u])
        plan[names[i]] = opts[i][j][2]
        u -= -(-(opts[i][j][0] - opts[i][0][0]) // step)
    return {n: plan[n] for n in names}


def plan_summary(sens: dict, plan: dict[str, str]) -> dict:
    """The plan as the manifest keeps it: types per tensor, their bytes and the summed sensitivity."""
    entries = {n: sens["tensors"][n]["types"][t] for n, t in plan.items()}
    return {"tensor_types": plan, "tensor_bytes": sum(e["bytes"] for e in entries.values()),
            "predicted_kld": round(sum(e["kld"] for e in entries.values()), 6)}
