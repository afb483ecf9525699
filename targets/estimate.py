"""Speed estimates for a placement of a model's layers on a target's devices. Decode (one token) is bound by
reading the layer's weights and KV cache from memory, or by the kernels' arithmetic when that is slower;
prefill (a batch of prompt tokens) is bound by arithmetic. Each graph node costs a fixed hand-off, each
device change per token a sync, and each token a fixed overhead (graph build, sampling, detokenizing)."""
from __future__ import annotations

from dataclasses import dataclass

from targets.model_spec import NODES_PER_LAYER, ModelSpec, Tensor
from targets.profile import Accelerator, Profile
from targets.quants import DOT_RATE, FLOAT_TYPES, INT8_RATE, type_bytes


@dataclass(frozen=True)
class Device:
    """A compute device as the estimator sees it: the CPU or one accelerator, reached through one backend."""
    name: str
    kind: str  # "cpu", "gpu", "npu"
    backend: str  # llama.cpp: cpu, metal, vulkan, ...; ExecuTorch: xnnpack, qnn, coreml, ...
    bandwidth_gbs: float
    int8_gops: float
    float_gflops: float
    op_overhead_us: float
    sync_overhead_ms: float = 0.0
    dot_gbs: float | None = None  # CPUs: decode kernels' limit in GB/s of weights (None: from int8_gops)

    @property
    def label(self) -> str:
        return "CPU" if self.kind == "cpu" else f"{self.name} ({self.backend})"

    def rate(self, ggml_type: str) -> float:
        """Operations per second this device's kernels reach on weights of this type."""
        if ggml_type in FLOAT_TYPES:
            return self.float_gflops * 1e9
        return self.int8_gops * 1e9 * INT8_RATE.get(ggml_type, 0.6)


def cpu_device(profile: Profile, backend: str) -> Device:
    c = profile.cpu
    return Device(c.name or "cpu", "cpu", backend, c.bandwidth_gbs, c.int8_gops, c.fp32_gflops, c.op_overhead_us,
                  dot_gbs=c.dot_gbs)


def accelerator_device(acc: Accelerator, backend: str) -> Device:
    return Device(acc.name, acc.kind, backend, acc.bandwidth_gbs, acc.int8_gops, acc.fp16_gflops,
                  acc.op_overhead_us, acc.sync_overhead_ms)


@dataclass
class Cost:
    weight_bytes: float
    kv_bytes: float  # the cache at the full context (memory)
    decode_s: float  # one token at the mean decode position
    prefill_s: float  # the whole prompt batch


def matrix_cost(dev: Device, tensors: list[Tensor], types: dict[str, str], tokens: int) -> tuple[float, float]:
    """(bytes of the weights, seconds of arithmetic for `tokens` tokens). One token on a CPU: the decode
    kernels' byte rate (dot_gbs); a batch, or an accelerator: matmul operations at the device's rate."""
    mats = [t for t in tensors if t.kind not in ("norm", "bias")]
    nbytes = sum(type_bytes(types[t.name], t.n) for t in tensors)
    if tokens == 1 and dev.dot_gbs:
        return nbytes, sum(type_bytes(types[t.name], t.n) / (dev.dot_gbs * 1e9 * DOT_RATE.get(types[t.name], 1.0))
                           for t in mats)
    return nbytes, sum(2 * t.n * tokens / dev.rate(types[t.name]) for t in mats)


def layer_cost(dev: Device, spec: ModelSpec, i: int, types: dict[str, str], kv_bytes: int, n_ctx: int,
               prompt: int, position: int) -> Cost:
    tensors = spec.layer_tensors(i)
    wbytes, ops1 = matrix_cost(dev, tensors, types, 1)
    _, ops_p = matrix_cost(dev, tensors, types, prompt)
    kv_tok = spec.kv_bytes_per_token(kv_bytes)
    attn_rate = dev.float_gflops * 1e9
    bw = dev.bandwidth_gbs * 1e9
    overhead = NODES_PER_LAYER * dev.op_overhead_us * 1e-6
    decode = max((wbytes + kv_tok * position) / bw, ops1 + 4 * position * spec.q_dim / attn_rate) + overhead
    attn_p = 4 * spec.q_dim * prompt * prompt / 2 / attn_rate  # causal: half the square
    prefill = max((wbytes + kv_tok * prompt) / bw, ops_p + attn_p) + overhead
    return Cost(wbytes, kv_tok * n_ctx, decode, prefill)


def head_cost(dev: Device, spec: ModelSpec, types: dict[str, str]) -> Cost:
    """The final norm and output matmul (llama.cpp computes logits for the batch's last token only)."""
    tensors = [t for t in spec.tensors() if t.layer is None and t.name != "token_embd.weight"]
    if spec.tie_word_embeddings and "output.weight" in types:  # a PTE holds the tied head as its own tensor
        tensors.append(Tensor("output.weight", spec.vocab_size, spec.hidden_size, None))
    head = [t for t in tensors if t.kind == "output"] or [Tensor("token_embd.weight", spec.vocab_size,
                                                                 spec.hidden_size, None)]
    own = [t for t in tensors if t.kind != "output"] + ([h for h in head if h.name == "output.weight"])
    wbytes = sum(type_bytes(types[t.name], t.n) for t in own)  # a tied GGUF head is token_embd: counted there
    read, ops = matrix_cost(dev, head, types, 1)
    t = max(read / (dev.bandwidth_gbs * 1e9), ops) + 3 * dev.op_overhead_us * 1e-6
    return Cost(wbytes, 0.0, t, t)


def embed_bytes(spec: ModelSpec, types: dict[str, str]) -> float:
    return type_bytes(types["token_embd.weight"], spec.vocab_size * spec.hidden_size)
