"""Rich output for `edgechat targets` and `edgechat plan`: the profiles, and the layer-to-device table with
memory, estimated speed and the reasons for the choice."""
from __future__ import annotations

from edgechat.reports.tables import console, emit_pairs, emit_table


def _accels(p) -> str:
    out = []
    for a in p.accelerators:
        routes = "; ".join(f"{e}: {', '.join(b)}" for e, b in a.backends.items()) or "no engine reaches it"
        out.append(f"{a.name} ({a.kind}, {a.memory_budget_gb:g} GB; {routes})")
    return "\n".join(out) or "-"


def targets_table(profiles: list, out=None) -> None:
    """The figures first (they fit beside the name), the long text columns after, moved to a second table on
    a narrow terminal."""
    rows = [[p.name, f"{p.cpu.cores}/{p.cpu.threads}", f"{p.memory.app_budget_gb:.1f} / {p.memory.total_gb:.1f}",
             f"{p.cpu.bandwidth_gbs:.1f}", p.description, _accels(p)] for p in profiles]
    emit_table("edgechat targets (targets/profiles/*.toml; host is measured at run time)",
               ["name", "cores/threads", "app budget / RAM GB", "CPU GB/s", "device", "accelerators"], rows,
               right=("cores/threads", "app budget / RAM GB", "CPU GB/s"), out=out)


class _Pairs(list):
    """Rows of a key/value view, collected and then printed by emit_pairs."""

    def add_row(self, k, v):
        self.append((k, v))


def profile_view(p) -> None:
    t = _Pairs()
    c, m, w = p.cpu, p.memory, p.power
    t.add_row("file", p.path)
    t.add_row("CPU", f"{c.name}: {c.cores} cores, {c.threads} threads; {', '.join(c.isa) or '-'}")
    t.add_row("CPU compute", f"{c.fp32_gflops:.0f} GFLOP/s fp32, {c.int8_gops:.0f} GOP/s int8 dot")
    t.add_row("memory", f"{m.total_gb:.1f} GB {m.type}; an app may use {m.app_budget_gb:.1f} GB")
    t.add_row("bandwidth", f"{m.bandwidth_gbs:.1f} GB/s peak; the CPU reaches {c.bandwidth_gbs:.1f} GB/s")
    t.add_row("power", f"idle {w.idle_w:g} W, CPU busy {w.cpu_active_w:g} W"
                       f"{' (assumed)' if w.assumed else ''}; {w.per_core_w(c.threads):.2f} W per busy core")
    for a in p.accelerators:
        routes = "; ".join(f"{e}: {', '.join(b)}" for e, b in a.backends.items()) or "no engine reaches it"
        quants = "; ".join(f"{e} takes {', '.join(q)}" for e, q in a.quants.items())
        t.add_row(f"{a.kind.upper()} {a.name}",
                  f"{a.memory_budget_gb:g} GB budget{' (shared)' if a.shared_memory else ''}, {a.bandwidth_gbs:g} GB/s, "
                  f"{a.int8_gops:.0f} GOP/s int8, {a.fp16_gflops:.0f} GFLOP/s fp16, {a.active_w:g} W; {routes}"
                  + (f"; {quants}" if quants else ""))
    for k, v in p.measured.items():
        t.add_row(f"measured {k}", str(v))
    emit_pairs(f"{p.name}: {p.description}", t)


def mib(x: float) -> str:
    return f"{x / 2**20:.1f}"


def plan_view(plan, all_layers: bool = False, fit: dict | None = None) -> None:
    """fit: the chosen candidate's resident memory against the budget (edgechat.app.fit.plan_fit): the same
    targets/memory.py estimate the fit check makes before loading."""
    c = plan.chosen
    title = (f"{plan.model} on {plan.target}: {c.format} {c.quant}, {c.placement} "
             f"(n_ctx {plan.request.n_ctx})")
    cols = ["layer", "device", "types", "weights MiB", "KV MiB", "decode ms/token"]
    slots = c.slots if all_layers else _fold(c.slots)  # default: runs of identical layers in one row
    rows = [[s.name, s.device, s.types, mib(s.weight_bytes), mib(s.kv_bytes), f"{s.decode_ms:.3f}"] for s in slots]
    emit_table(title, cols, rows, right=tuple(cols[3:]))
    if fit:
        console.print(f"resident memory when loaded (the fit check's estimate): {mib(fit['total'])} MiB = weights "
                      f"{mib(fit['weights'])} + KV cache {mib(fit['kv_cache'])} at n_ctx {fit['n_ctx']} + compute "
                      f"{mib(fit['compute'])} + runtime {mib(fit['runtime'])} MiB; {fit['limit']} is "
                      f"{mib(fit['budget'])} MiB: {'fits' if fit['fits'] else 'does not fit'}", highlight=False)
    if len(c.memory) > 1:  # the same total, split over the devices that hold it
        console.print("per device: " + ", ".join(f"{d} {mib(v)} of {mib(c.budgets.get(d, 0))} MiB"
                                                 for d, v in c.memory.items()), highlight=False)
    console.print(f"estimated: decode {c.decode_tok_s:.1f} tok/s, prefill {c.prefill_tok_s:.0f} tok/s "
                  f"({plan.request.prompt_tokens}-token prompt), TTFT {c.ttft_s * 1e3:.0f} ms")
    if c.n_gpu_layers is not None:
        console.print(f"llama.cpp: n_gpu_layers={c.n_gpu_layers}; tensors: "
                      + ", ".join(f"{k} -> {v}" for k, v in (c.tensor_placement or {}).items()))
    if c.partitioners:
        console.print(f"ExecuTorch partitioners, in order: {', '.join(c.partitioners)}")
    console.print("why:")
    for r in plan.reasons:
        console.print(f"  - {r}", highlight=False)


def _fold(slots):
    out = []
    for s in slots:
        prev = out[-1] if out else None
        if (prev and s.name.startswith("blk.") and prev[0].name.startswith("blk.") and prev[0].device == s.device
                and prev[0].types == s.types and abs(prev[0].weight_bytes - s.weight_bytes) < 1):
            prev.append(s)
        else:
            out.append([s])
    rows = []
    for group in out:
        s = group[0]
        if len(group) == 1:
            rows.append(s)
        else:
            last = group[-1].name.split(".")[1]
            rows.append(type(s)(f"{s.name}-{last} (x{len(group)}, each)", s.device, s.weight_bytes, s.kv_bytes,
                                s.decode_ms, s.types))
    return rows
