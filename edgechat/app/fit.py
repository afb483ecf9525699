"""Memory fit before an engine loads: the artifact's resident-memory estimate (targets/memory.py) against the
target's app budget and this machine's free memory. A model that does not fit is refused with one line
saying by how much and what would fit; n_ctx="auto" becomes the largest context that fits."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgechat.core.errors import EdgechatError

ENGINE_FORMAT = {"llama.cpp": "gguf", "executorch": "pte"}


@dataclass
class Fit:
    """What was checked: the estimate, the limit it was held against and where that limit comes from."""
    name: str
    estimate: object  # targets.memory.MemoryEstimate
    budget: float
    limit: str  # "the app budget of rpi5-8gb" or "this machine's free memory"
    max_n_ctx: int  # the most the artifact holds (a .pte: its static cache)
    fixed_ctx: bool  # a .pte's cache is sized when it is exported
    spec: object = None
    quant: str | None = None

    @property
    def fits(self) -> bool:
        return self.estimate.total <= self.budget

    def to_dict(self) -> dict:
        return {**self.estimate.to_dict(), "budget": self.budget, "limit": self.limit, "fits": self.fits}


def free_bytes() -> float | None:
    """MemAvailable of this machine (what the kernel can hand out without swapping), or None off Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def _shape(path: Path, engine: str):
    """(ModelSpec, weight bytes, quant, the most positions it holds) of the artifact, or None where its shape
    cannot be read without loading it (a .pte with no edgechat manifest beside it)."""
    from targets import ModelSpec

    from edgechat.app.targeting import model_spec, spec_from_gguf, target_errors
    from edgechat.core.manifest import read_manifest

    if engine == "llama.cpp":  # the tensors' bytes, as the planner counts them (`plan --as-is` shows the same)
        from targets import memory

        spec, types, quant = spec_from_gguf(path)
        try:
            weights = memory.weight_bytes(spec, quant, types)
        except KeyError:  # a tensor the shape does not name: the file's size, a bound
            weights = path.stat().st_size
        return spec, weights, quant, spec.max_seq_len
    if engine == "executorch":
        m = read_manifest(path.parent)
        entry = next((a for a in (m or {}).get("artifacts", []) if a.get("file") == path.name), None)
        if entry is None:
            return None
        with target_errors():
            spec = ModelSpec.from_dict(m["model"], name=path.stem)
        from edgechat.core.files import artifact_bytes

        return spec, artifact_bytes(path), entry.get("quant"), int(entry.get("max_seq_len") or spec.max_seq_len)
    if engine == "torch":
        spec = model_spec(path)[0]
        return spec, 4.0 * spec.params(), None, spec.max_seq_len
    return None


def fit_for(path, engine: str, n_ctx, target: str = "host") -> Fit | None:
    """The estimate for opening `path` with `engine` at n_ctx (None: the engine's default, the model's own
    context; "auto": the largest that fits) on `target`, or None when the artifact's shape is unknown."""
    from targets import memory

    from edgechat.app.targeting import get_profile, target_errors

    path = Path(path)
    shape = _shape(path, engine)
    if shape is None:
        return None
    spec, weights, quant, max_ctx = shape
    profile = get_profile(target, measure=False)
    budget, limit = profile.memory.app_budget_gb * 1e9, f"the app budget of {profile.name}"
    free = free_bytes()
    if free is not None and free < budget:
        budget, limit = free, "this machine's free memory"
    fixed = engine == "executorch"
    with target_errors():
        if fixed or n_ctx is None:
            ctx = max_ctx
        elif n_ctx == "auto":
            ctx = memory.largest_n_ctx(spec, engine, weights, budget, max_ctx) or min(memory.STEP, max_ctx)
        else:
            ctx = min(int(n_ctx), max_ctx)
        est = memory.estimate(spec, engine, ctx, weights)
    return Fit(path.name, est, budget, limit, max_ctx, fixed, spec, quant)


def plan_fit(plan) -> dict:
    """The plan's chosen candidate's resident memory (the planner computes it with targets/memory.py, as the
    fit check does) against the target's app budget: what `edgechat plan` shows."""
    c = plan.chosen
    budget = c.app_budget_bytes
    return {**c.resident, "budget": budget, "limit": f"the app budget of {plan.target}",
            "fits": c.resident["total"] <= budget}


def refusal(fit: Fit, engine: str) -> str:
    """One line: how much is missing and what would fit (a shorter context, a smaller quant)."""
    from targets import memory, schemes

    e = fit.estimate
    line = (f"{fit.name} does not fit: it needs {memory.mib(e.total)} ({e.parts()}) but {fit.limit} is "
            f"{memory.mib(fit.budget)}, {memory.mib(e.total - fit.budget)} short")
    options = []
    ctx = memory.largest_n_ctx(fit.spec, engine, e.weights, fit.budget, fit.max_n_ctx)
    if ctx:
        options.append(f"re-export with --max-seq-len {ctx}" if fit.fixed_ctx
                       else f"--n-ctx {ctx} (--n-ctx auto picks the largest)")
    fmt = ENGINE_FORMAT.get(engine)
    if fmt:
        smaller = []
        for q in schemes.names(fmt, made=True):
            w = memory.weight_bytes(fit.spec, q)
            total = memory.estimate(fit.spec, engine, e.n_ctx, w).total
            if w < e.weights and total <= fit.budget:
                smaller.append((schemes.get(q).quality, q, total))
        if smaller:
            _, q, total = max(smaller)  # the most faithful of those that fit
            options.append(f"quant {q} ({memory.mib(total)} at n_ctx {e.n_ctx})")
    what = "; what fits: " + ", or ".join(options) if options else \
        "; nothing smaller of this model fits: prune it, or use a target with more memory"
    return line + what


def check_fit(path, engine: str, n_ctx, target: str = "host"):
    """The n_ctx to open the engine with ("auto" resolved); raises EdgechatError when it does not fit."""
    fit = fit_for(path, engine, n_ctx, target)
    if fit is None:
        if n_ctx == "auto":
            return None  # the engine's own context: nothing to size it by
        return n_ctx
    if not fit.fits:
        raise EdgechatError(refusal(fit, engine))
    if fit.fixed_ctx:  # a .pte's cache is its own; a given n_ctx only limits the conversation
        return None if n_ctx == "auto" else n_ctx
    return fit.estimate.n_ctx
