"""Resident memory of one model opened by one engine, before it is opened: the weights (mapped or loaded),
the KV cache at the context, the compute buffers a full context touches, and the engine's own runtime.
The figures predict peak RSS (pages actually touched), not the address space an engine reserves: llama.cpp
reserves a compute buffer sized for a batch of logits it never writes when only the last token is output.
Engines are named as edgechat's engine registry names them; nothing here imports edgechat."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from targets.errors import TargetError
from targets.model_spec import ModelSpec
from targets.quants import tensor_types, type_bytes

MiB = 2**20
UBATCH = 512  # the most prompt tokens one engine call runs (llama.cpp's n_ubatch; edgechat's engines' batches)
# Per engine: KV cache bytes per value, and runtime bytes (engine code touched, thread pools, the Python
# objects of edgechat's engine, allocator slack). Calibrated against peak RSS measured on this project's
# hosts (benchmarks/bench_serve_memory.py): llama.cpp on SmolLM2-135M Q4_K_M, ExecuTorch on its 8da4w.
ENGINES = {
    "llama.cpp": {"kv_bytes": 2, "runtime": 16 * MiB},  # F16 cache, llama.cpp's default
    "executorch": {"kv_bytes": 4, "runtime": 40 * MiB},  # the exported static fp32 cache
    "torch": {"kv_bytes": 4, "runtime": 64 * MiB},  # the fp32 reference
}
STEP = 256  # contexts are offered in multiples of this (llama.cpp pads its cache to 256 cells)


@dataclass(frozen=True)
class MemoryEstimate:
    engine: str
    n_ctx: int
    weights: float
    kv_cache: float
    compute: float
    runtime: float

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.compute + self.runtime

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def parts(self) -> str:
        return (f"weights {mib(self.weights)}, KV cache {mib(self.kv_cache)} at n_ctx {self.n_ctx}, "
                f"compute {mib(self.compute)}, runtime {mib(self.runtime)}")


def mib(x: float) -> str:
    return f"{x / MiB:.1f} MiB"


def _engine(engine: str) -> dict:
    if engine not in ENGINES:
        raise TargetError(f"no memory figures for engine {engine!r}: one of {', '.join(ENGINES)}")
    return ENGINES[engine]


def kv_cache_bytes(spec: ModelSpec, engine: str, n_ctx: int, kv_bytes: int | None = None) -> float:
    """K and V of every layer at n_ctx positions; kv_bytes per value overrides the engine's default type."""
    return spec.num_layers * spec.kv_bytes_per_token(kv_bytes or _engine(engine)["kv_bytes"]) * n_ctx


def runtime_bytes(engine: str) -> float:
    return float(_engine(engine)["runtime"])


def compute_bytes(spec: ModelSpec, engine: str, n_ctx: int) -> float:
    """What a prompt batch at a full context touches: attention scores of the batch against every cached
    position (fp32, the f16 copy llama.cpp's CPU kernels convert them to, the mask) and the batch's hidden
    states and FFN activations (fp32). Only the last token's logits are computed."""
    ub = min(UBATCH, n_ctx)
    score_bytes = 6 * spec.num_heads + 4 if engine == "llama.cpp" else 4 * spec.num_heads + 4
    activations = 4 * (8 * spec.hidden_size + 3 * spec.intermediate_size)
    return ub * (n_ctx * score_bytes + activations) + 4 * spec.vocab_size


def weight_bytes(spec: ModelSpec, quant: str, types: dict | None = None) -> float:
    """The weights of the model at a quant, or with an artifact's own tensor types (for artifacts not yet
    made; a made one's file size is exact)."""
    types = types or tensor_types(quant, spec)
    return sum(type_bytes(types[t.name], t.n) for t in spec.tensors())


def estimate(spec: ModelSpec, engine: str, n_ctx: int, weights: float, kv_bytes: int | None = None) -> MemoryEstimate:
    """The one estimate: the fit check before loading and the planner's per-device memory both come from here."""
    return MemoryEstimate(engine, n_ctx, float(weights), kv_cache_bytes(spec, engine, n_ctx, kv_bytes),
                          compute_bytes(spec, engine, n_ctx), runtime_bytes(engine))


def largest_n_ctx(spec: ModelSpec, engine: str, weights: float, budget: float, max_n_ctx: int) -> int | None:
    """The largest context (a multiple of STEP, or max_n_ctx itself) whose estimate fits `budget` bytes;
    None when not even STEP tokens fit. The estimate grows with n_ctx, so a bisection finds it."""
    if estimate(spec, engine, max_n_ctx, weights).total <= budget:
        return max_n_ctx
    lo, hi = 0, max_n_ctx // STEP + 1  # in units of STEP: lo fits (or is 0), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if estimate(spec, engine, mid * STEP, weights).total <= budget:
            lo = mid
        else:
            hi = mid
    return lo * STEP or None
