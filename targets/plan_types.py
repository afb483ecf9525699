"""What the planner (targets.planner) is asked and what it answers: the Request, each Candidate with its
per-layer Slots, and the Plan that holds the choice, its reasons and the alternatives."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from targets import schemes
from targets.errors import TargetError
from targets.profile import GB
from targets.quants import FORMAT_QUANTS, format_of

# the candidates when none are named: every quantized scheme edgechat makes
DEFAULT_QUANTS = {f: tuple(q for q in schemes.names(f, made=True) if schemes.get(q).bits < 16) for f in schemes.formats()}


@dataclass
class Request:
    formats: tuple[str, ...] = ("gguf", "pte")
    quants: tuple[str, ...] | None = None  # None: DEFAULT_QUANTS of the formats
    n_ctx: int = 2048
    prompt_tokens: int = 128
    gen_tokens: int = 128
    min_decode_tok_s: float = 20.0  # the most faithful quant that reaches this wins
    kv_type: str | None = None  # f16 (llama.cpp default) or f32 (ExecuTorch)
    tensor_types: dict | None = None  # an existing artifact's own types (one quant only)
    accelerator: str | None = None  # force the placement: "cpu", or an accelerator's name (as much as fits on it)

    def quant_list(self) -> list[str]:
        for f in self.formats:
            if f not in FORMAT_QUANTS:
                raise TargetError(f"unknown format {f!r}: choose gguf or pte")
        if not self.quants:
            return [q for f in self.formats for q in DEFAULT_QUANTS[f]]
        for q in self.quants:
            if format_of(q) not in self.formats:
                raise TargetError(f"quant {q!r} is a {format_of(q)} quant, but the formats are {', '.join(self.formats)}")
        return list(self.quants)


@dataclass
class Slot:
    """One row of the layer table."""
    name: str
    device: str
    weight_bytes: float
    kv_bytes: float
    decode_ms: float
    types: str


@dataclass
class Candidate:
    format: str
    quant: str
    engine: str
    placement: str
    slots: list[Slot]
    memory: dict  # device label -> bytes resident there
    budgets: dict  # device label -> bytes allowed
    total_bytes: float
    app_budget_bytes: float
    decode_tok_s: float
    prefill_tok_s: float
    ttft_s: float
    n_gpu_layers: int | None = None
    tensor_placement: dict | None = None
    partitioners: list[str] | None = None
    short_bytes: float = 0.0
    short_where: str = ""
    resident: dict | None = None  # targets.memory's estimate (weights, kv_cache, compute, runtime, total)

    @property
    def fits(self) -> bool:
        return self.short_bytes <= 0

    def summary(self) -> str:
        return f"{self.quant} {self.placement}: {self.decode_tok_s:.1f} tok/s, {self.total_bytes / GB:.2f} GB"


@dataclass
class Plan:
    target: str
    model: str
    request: Request
    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self, slots: bool = True) -> dict:
        c = asdict(self.chosen)
        if not slots:
            c.pop("slots")
        others = [{k: v for k, v in asdict(x).items() if k != "slots"} for x in self.candidates if x is not self.chosen]
        req = asdict(self.request)
        req.pop("tensor_types")
        return {"target": self.target, "model": self.model, "request": req, "format": c["format"],
                "quant": c["quant"], "chosen": c, "reasons": self.reasons, "alternatives": others}
