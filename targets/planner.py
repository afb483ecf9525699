"""The planner: for a model and a target, every candidate (format x quant x placement) with its memory per
device and estimated prefill/decode speed, and the choice with the reasons. GGUF placements are llama.cpp's
n_gpu_layers (the output head first, then the last layers) on each accelerator a llama.cpp backend reaches;
.pte placements are ordered ExecuTorch partitioners (an accelerator's first, XNNPACK for the rest)."""
from __future__ import annotations

from dataclasses import replace

from targets import memory as resident
from targets.errors import PlanError, TargetError
from targets.estimate import Device, accelerator_device, cpu_device, embed_bytes, head_cost, layer_cost
from targets.model_spec import ModelSpec
from targets.plan_types import Candidate, Plan, Request, Slot
from targets.profile import GB, Accelerator, Profile
from targets.quants import QUALITY, format_of, kv_type_bytes, tensor_types

CPU_BACKEND = {"gguf": "cpu", "pte": "xnnpack"}
ENGINE = {"gguf": "llama.cpp", "pte": "executorch"}
NEAR = 0.9  # estimates closer than 10% are within their error: a tie


def gib(x: float) -> str:
    return f"{x / GB:.2f} GB"


def _ranges(ids: list[int]) -> str:
    return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])


def build(spec: ModelSpec, profile: Profile, req: Request, quant: str, accel: Accelerator | None, backend: str,
          k: int) -> Candidate:
    """A candidate with `k` units on the accelerator: GGUF counts the head as unit L (offloaded first, as
    llama.cpp's n_gpu_layers does); a PTE gives the accelerator the first k layers (the head after all L)."""
    fmt = format_of(quant)
    types = req.tensor_types or tensor_types(quant, spec)
    kvb = kv_type_bytes(fmt, req.kv_type)
    n_ctx = min(req.n_ctx, spec.max_seq_len)
    pos = req.prompt_tokens + req.gen_tokens // 2
    L = spec.num_layers
    cpu = cpu_device(profile, CPU_BACKEND[fmt])
    acc = accelerator_device(accel, backend) if accel else None
    if fmt == "gguf":
        on_acc = {i for i in range(L + 1) if acc and i >= L + 1 - k}
    else:
        on_acc = {i for i in range(L) if acc and i < k} | ({L} if acc and k > L else set())
    dev = lambda i: acc if i in on_acc else cpu  # noqa: E731
    slots, seq = [], [cpu]
    emb = embed_bytes(spec, types)
    slots.append(Slot("token_embd", "CPU", emb, 0.0, 0.0, types["token_embd.weight"]))
    decode_s = prefill_s = 0.0
    for i in range(L + 1):
        d: Device = dev(i)
        if i < L:
            c = layer_cost(d, spec, i, types, kvb, n_ctx, req.prompt_tokens, pos)
            ts = sorted({types[t.name] for t in spec.layer_tensors(i) if t.kind not in ("norm", "bias")})
            name = f"blk.{i}"
        else:
            c = head_cost(d, spec, types)
            tied = "output.weight" not in types  # a tied GGUF head reads token_embd (counted on its row)
            ts, name = [f"{types['token_embd.weight']} (tied)" if tied else types["output.weight"]], "output"
        slots.append(Slot(name, d.label, c.weight_bytes, c.kv_bytes, c.decode_s * 1e3, "/".join(ts)))
        decode_s += c.decode_s
        prefill_s += c.prefill_s
        seq.append(d)
    seq.append(cpu)  # logits come back to the CPU for sampling
    syncs = sum(max(a.sync_overhead_ms, b.sync_overhead_ms) for a, b in zip(seq, seq[1:]) if a is not b) * 1e-3
    decode_s += syncs + profile.cpu.token_overhead_us * 1e-6
    prefill_s += syncs
    # targets/memory.py's arithmetic (the fit check's): the slots' weights and KV cache where they live, the
    # runtime on the CPU, a compute buffer on each device that runs layers (each backend allocates its own)
    est = resident.estimate(spec, ENGINE[fmt], n_ctx, sum(s.weight_bytes for s in slots), kvb)
    runs = [d for d in (cpu, acc) if d and any(dev(i) is d for i in range(L + 1))]
    memory = {"CPU": est.runtime}
    for s in slots:
        memory[s.device] = memory.get(s.device, 0.0) + s.weight_bytes + s.kv_bytes
    for d in runs:
        memory[d.label] = memory.get(d.label, 0.0) + est.compute
    est = replace(est, compute=len(runs) * est.compute)
    total = est.total
    budgets = {"CPU": profile.memory.app_budget_gb * GB}
    short, where = total - budgets["CPU"], "app budget"
    if acc:
        budgets[acc.label] = accel.memory_budget_gb * GB
        acc_short = memory.get(acc.label, 0.0) - budgets[acc.label]
        if acc_short > short:
            short, where = acc_short, f"{acc.label} budget"
    if not acc:
        placement = f"all on CPU ({cpu.backend})"
    elif len(on_acc) == L + 1:
        placement = f"all on {acc.label}"
    else:
        placement = f"{len(on_acc)}/{L + 1} on {acc.label}, rest on CPU ({cpu.backend})"
    cand = Candidate(fmt, quant, ENGINE[fmt], placement, slots, memory, budgets, total, budgets["CPU"],
                     1.0 / decode_s, req.prompt_tokens / prefill_s, prefill_s + profile.cpu.token_overhead_us * 1e-6,
                     short_bytes=short, short_where=where, resident=est.to_dict())
    if fmt == "gguf":
        cand.n_gpu_layers = len(on_acc)
        gpu_layers = sorted(i for i in on_acc if i < L)
        cpu_layers = [i for i in range(L) if i not in on_acc]
        placement_map = {"token_embd.weight": "CPU"}
        if cpu_layers:
            placement_map[f"blk.{_ranges(cpu_layers)}.*"] = "CPU"
        if gpu_layers:
            placement_map[f"blk.{_ranges(gpu_layers)}.*"] = f"{backend.upper()}0"
        placement_map["output.weight"] = f"{backend.upper()}0" if L in on_acc else "CPU"
        cand.tensor_placement = placement_map
    else:
        cand.partitioners = ([backend] if on_acc else []) + ["xnnpack"]
    return cand


def max_units(spec, profile, req, quant, accel, backend) -> int:
    """The most units (layers, and the head) the accelerator's budget holds."""
    L = spec.num_layers
    lo, hi = 0, L + 1
    while lo < hi:  # memory on the accelerator grows with k
        mid = (lo + hi + 1) // 2
        if _acc_bytes(build(spec, profile, req, quant, accel, backend, mid)) <= accel.memory_budget_gb * GB:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _acc_bytes(c: Candidate) -> float:
    return sum(v for k, v in c.memory.items() if k != "CPU")


def candidates_for(spec: ModelSpec, profile: Profile, req: Request, quant: str) -> tuple[list[Candidate], list[str]]:
    fmt = format_of(quant)
    engine = ENGINE[fmt]
    forced = req.accelerator
    if forced and forced != "cpu" and forced not in [a.name for a in profile.accelerators]:
        raise TargetError(f"{profile.name} has no accelerator {forced!r}: choose cpu or one of "
                          f"{', '.join(a.name for a in profile.accelerators) or '(none)'}")
    out, notes = ([] if forced and forced != "cpu" else [build(spec, profile, req, quant, None, "", 0)]), []
    for acc in profile.accelerators if forced != "cpu" else ():
        if forced and acc.name != forced:
            continue
        backends = acc.reached_by(engine)
        if not backends:
            notes.append(f"{acc.name}: no {engine} backend reaches it")
            continue
        if not acc.takes(engine, quant):
            notes.append(f"{acc.name} ({backends[0]}): its kernels do not take {quant} "
                         f"(they take {', '.join(acc.quants[engine])})")
            continue
        k = max_units(spec, profile, req, quant, acc, backends[0])
        if k == 0:
            notes.append(f"{acc.name} ({backends[0]}): its {acc.memory_budget_gb:g} GB budget holds no layer")
            continue
        out.append(build(spec, profile, req, quant, acc, backends[0], k))
    return out, notes


def plan(spec: ModelSpec, profile: Profile, req: Request | None = None) -> Plan:
    req = req or Request()
    quants = req.quant_list()
    if req.tensor_types and len(quants) != 1:
        raise TargetError("tensor_types describe one artifact: give exactly one quant with them")
    cands, notes = [], []
    for q in quants:
        cs, ns = candidates_for(spec, profile, req, q)
        cands += cs
        notes += [n for n in ns if n not in notes]
    if not cands:
        raise PlanError(f"nothing can run on {req.accelerator} of {profile.name}: " + "; ".join(notes))
    fitting = [c for c in cands if c.fits]
    n_ctx = min(req.n_ctx, spec.max_seq_len)
    if not fitting:
        best = min(cands, key=lambda c: c.short_bytes)
        kv = sum(s.kv_bytes for s in best.slots)
        raise PlanError(
            f"{spec.name} does not fit {profile.name}: the smallest candidate ({best.quant}, {best.placement}) "
            f"needs {gib(best.total_bytes)} (weights {gib(sum(s.weight_bytes for s in best.slots))}, KV cache "
            f"{gib(kv)} at n_ctx {n_ctx}) and is short by {gib(best.short_bytes)} of the {best.short_where} "
            f"({gib(best.budgets['CPU'])} for an app): use a shorter context, a smaller quant, prune the model, "
            f"or a larger target", short_bytes=int(best.short_bytes))
    # per quant, the fastest placement that fits
    per_quant = {}
    for c in fitting:
        if c.quant not in per_quant or c.decode_tok_s > per_quant[c.quant].decode_tok_s:
            per_quant[c.quant] = c
    reasons = []
    for q in quants:
        qc = [c for c in cands if c.quant == q]
        best = per_quant.get(q)
        if best is None:
            worst = min(qc, key=lambda c: c.short_bytes)
            reasons.append(f"{q}: does not fit ({worst.placement} is short by {gib(worst.short_bytes)} "
                           f"of the {worst.short_where})")
            continue
        others = [c for c in qc if c is not best]
        alt = "; ".join(f"{c.placement} {c.decode_tok_s:.1f} tok/s" + ("" if c.fits else " (does not fit)")
                        for c in others)
        reasons.append(f"{q}: {best.placement} is fastest at {best.decode_tok_s:.1f} tok/s decode, "
                       f"{best.prefill_tok_s:.0f} tok/s prefill, {gib(best.total_bytes)} of {gib(best.app_budget_bytes)}"
                       + (f" (vs {alt})" if alt else ""))
    # estimates within NEAR of each other are a tie: the more faithful quant, then the earlier format wins
    order = lambda c: (QUALITY[c.quant], -req.formats.index(c.format), c.decode_tok_s)  # noqa: E731
    meets = [c for c in per_quant.values() if c.decode_tok_s >= req.min_decode_tok_s]
    if meets:
        top = max(QUALITY[c.quant] for c in meets)
        group = [c for c in meets if QUALITY[c.quant] == top]
        fastest = max(c.decode_tok_s for c in group)
        chosen = max((c for c in group if c.decode_tok_s >= NEAR * fastest), key=order)
        slower = [c for c in per_quant.values() if QUALITY[c.quant] > QUALITY[chosen.quant]]
        why = (f"chose {chosen.format} {chosen.quant}: the most faithful quant estimated to decode at >= "
               f"{req.min_decode_tok_s:g} tok/s"
               + (f" ({', '.join(f'{c.quant} reaches only {c.decode_tok_s:.1f}' for c in slower)})" if slower else ""))
    else:
        fastest = max(c.decode_tok_s for c in per_quant.values())
        chosen = max((c for c in per_quant.values() if c.decode_tok_s >= NEAR * fastest), key=order)
        why = (f"chose {chosen.format} {chosen.quant}: no candidate reaches {req.min_decode_tok_s:g} tok/s; it is the "
               f"most faithful within {100 * (1 - NEAR):.0f}% of the fastest ({chosen.decode_tok_s:.1f} of "
               f"{fastest:.1f} tok/s)")
    ties = [c for c in per_quant.values() if c is not chosen and QUALITY[c.quant] == QUALITY[chosen.quant]
            and c.decode_tok_s >= NEAR * chosen.decode_tok_s and c.format != chosen.format]
    if ties:
        why += (f"; {', '.join(c.format + ' ' + c.quant for c in ties)} is within {100 * (1 - NEAR):.0f}%, a tie "
                f"the format order ({', '.join(req.formats)}) breaks")
    reasons.append(why)
    reasons += [f"not used: {n}" for n in notes]
    if req.n_ctx > spec.max_seq_len:
        reasons.append(f"n_ctx {req.n_ctx} is beyond the model's {spec.max_seq_len}: planned for {spec.max_seq_len}")
    return Plan(profile.name, spec.name, req, chosen, cands, reasons)
