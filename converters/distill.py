"""Logit knowledge distillation: the source model teaches the pruned student on chat-formatted dialogue (the
teacher's own replies, made by edgechat.app.teacher_data, the loss on the assistant's tokens only; or chit-chat /
a data file, every token counted). KL of temperature-softened logits (optionally with cross-entropy and a hidden-
state loss; chunked over positions, converters.distill_loss), bf16 autocast where the CPU or GPU has it, AdamW
with warm-up and cosine decay, gradient accumulation, a fixed seed, checkpoint/resume, and torch.distributed DDP
(gloo on CPU, nccl on GPUs) with the same result as one process for the same global batch."""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from converters.distill_loss import chunked_loss, kd_loss, reference_loss, unlikelihood  # noqa: F401 (kd_loss: public)
from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model


@dataclass
class DistillConfig:
    steps: int = 200
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.01
    micro_batch: int = 4  # sequences per process per forward
    grad_accum: int = 1
    seq_len: int = 256
    temperature: float = 1.0
    divergence: str = "forward"  # KL(teacher || student) | "reverse": KL(student || teacher) (GKD's on-policy pick)
    alpha_ce: float = 0.0  # weight of next-token cross-entropy on the data
    alpha_ul: float = 0.0  # weight of unlikelihood on the tokens the data marks to avoid (Packed.avoid), there
    # instead of the KL: the repeats in the student's own looping replies (needs student_share)
    beta_hidden: float = 0.0  # weight of the final hidden-state MSE (needs equal hidden sizes)
    seed: int = 0
    data: str | None = None  # text/JSONL/DailyDialog file; default: chit-chat conversations
    max_dialogues: int = 3000
    checkpoint: str | None = None
    checkpoint_every: int = 50
    device: str = "cpu"  # "cuda" trains on a GPU (one per process under torchrun); the student comes back on the CPU
    precision: str = "auto"  # fp32 | bf16 | auto: bf16 autocast where the GPU or the CPU (AVX512-BF16/AMX) has
    # it, on a CPU only for students at least BF16_MIN_HIDDEN wide
    loss_chunk: int = 256  # positions per chunk of the fused head + KL; 0: whole-batch logits (the reference)
    # Teacher-generated data (edgechat.app.teacher_data; converters only train on what it hands over):
    teacher_data: int = 0  # conversations whose replies the teacher writes; 0: train on `data` / chit-chat
    prompts: str | None = None  # user turns, one a line (or JSONL); default: chit-chat first turns
    magpie_share: float = 0.25  # share of prompts the teacher writes itself from the template's user prefix
    reply_tokens: int = 128  # most tokens per teacher reply
    student_share: float = 0.0  # share of replies sampled from the student instead, scored by the teacher (GKD)
    resample_every: int = 0  # with student_share: sample the student's replies again every N steps, from the
    # student as it trains (distill's `resample`); 0: once, before training
    student_greedy: bool = False  # with student_share: its greedy replies, not sampled at T=1 (alpha_ul implies it)
    drop_looping: bool = False  # leave out the conversations whose reply loops (edgechat.app.loops)
    log: list = field(default_factory=list)


def dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass
class Packed:
    """Training sequences [N, seq_len]; mask [N, seq_len] True on the tokens the loss counts (predicting them),
    None: every token; student [N, seq_len] True on tokens the student wrote (on-policy replies: the KL, no
    cross-entropy, whose target would be the student's own token); avoid [N, seq_len] True on tokens to push down
    (unlikelihood) rather than match."""
    tokens: torch.Tensor
    mask: torch.Tensor | None = None
    student: torch.Tensor | None = None
    avoid: torch.Tensor | None = None


def pack_sequences(seqs: list[list[int]], masks: list[list[bool]] | None, seq_len: int,
                   student: list[list[bool]] | None = None, avoid: list[list[bool]] | None = None) -> Packed:
    """Token sequences (and their per-token marks: loss mask, student-written, avoid) concatenated and cut into
    [N, seq_len] rows."""
    stream = [t for s in seqs for t in s]
    n = len(stream) // seq_len
    if n == 0:
        raise EdgechatError(f"the distillation data holds {len(stream)} tokens, fewer than one sequence of {seq_len}")

    def rows(marks):
        if marks is None:
            return None
        return torch.tensor([m for ms in marks for m in ms][: n * seq_len], dtype=torch.bool).view(n, seq_len)

    return Packed(torch.tensor(stream[: n * seq_len]).view(n, seq_len), rows(masks), rows(student), rows(avoid))


def training_tokens(teacher: Model, cfg: DistillConfig) -> Packed:
    """Chat-rendered dialogues (or raw text) packed into [N, seq_len] sequences, every token counted."""
    from edgechat.core.data import chitchat_dialogues, read_eval_data

    fmt = teacher.chat_format()
    data = read_eval_data(cfg.data, max_dialogues=cfg.max_dialogues) if cfg.data else None
    stream: list[int] = []
    if data is not None and data.kind == "text":
        stream = teacher.tokenizer.encode(data.text, add_bos=False)
    else:
        dialogues = data.dialogues if data else chitchat_dialogues(0, cfg.max_dialogues)
        for d in dialogues:
            stream += fmt.ids(d, add_generation_prompt=False)
    return pack_sequences([stream], None, cfg.seq_len)


def lr_at(step: int, cfg: DistillConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_indices(step: int, n: int, global_batch: int, seed: int) -> torch.Tensor:
    """The same global batch for every process count: a seeded permutation per epoch."""
    per_epoch = n // global_batch
    if per_epoch == 0:
        raise EdgechatError(f"the distillation data has {n} sequences, fewer than one global batch of {global_batch}")
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return perm[k * global_batch:(k + 1) * global_batch]


def train_device(cfg: DistillConfig) -> torch.device:
    if cfg.device.split(":")[0] not in ("cpu", "cuda"):
        raise EdgechatError(f"unknown distillation device {cfg.device!r}: use cpu or cuda")
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EdgechatError(f"distillation device {cfg.device!r} is not available: torch sees no CUDA GPU here")
        if dev.index is None:  # torchrun: one GPU per process
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16(root: str = "/") -> bool:
    """AVX512-BF16 (AMX-BF16 CPUs have it too) or Arm's BF16: where torch's bf16 matmuls beat fp32."""
    from targets.host import read_cpuinfo

    flags = read_cpuinfo(Path(root))[1]
    return "avx512_bf16" in flags or "bf16" in flags


# auto's smallest hidden size for bf16 on a CPU: narrower, casting costs as much as the bf16 matmuls save or more
# (benchmarks/results/bench_bf16_width.md, AMX Xeon: bf16 0.51x fp32 at width 64, 0.97x at 256, 1.28x at 384)
BF16_MIN_HIDDEN = 384


def train_precision(cfg: DistillConfig, dev: torch.device | None = None, hidden_size: int | None = None) -> str:
    """The precision the steps run in: fp32 or bf16 (autocast; the weights and optimizer stay fp32).
    hidden_size: the student's; auto keeps fp32 on a CPU for a model narrower than BF16_MIN_HIDDEN."""
    if cfg.precision not in PRECISIONS:
        raise EdgechatError(f"unknown distillation precision {cfg.precision!r}: use {', '.join(PRECISIONS)}")
    dev = dev or train_device(cfg)
    if cfg.precision == "fp32":
        return "fp32"
    gpu_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    if cfg.precision == "bf16":
        if dev.type == "cuda" and not gpu_bf16:
            raise EdgechatError(f"distillation precision bf16: the GPU {torch.cuda.get_device_name(dev)} has no bf16")
        return "bf16"
    wide = hidden_size is None or hidden_size >= BF16_MIN_HIDDEN
    return "bf16" if gpu_bf16 or (dev.type == "cpu" and cpu_has_bf16() and wide) else "fp32"


def loss_positions(packed_mask: torch.Tensor | None, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which positions' predictions count ([B, T] bool) and their next-token targets (-1: none). With a mask, a
    position counts when the token after it is one the mask holds (an assistant token); without, every one."""
    targets = torch.full_like(tokens, -1)
    targets[:, :-1] = tokens[:, 1:]
    if packed_mask is None:
        return torch.ones_like(tokens, dtype=torch.bool), targets
    sel = torch.zeros_like(packed_mask)
    sel[:, :-1] = packed_mask[:, 1:]
    return sel, targets


def distill(teacher: Model, student: Model, cfg: DistillConfig, progress=None, on_step=None,
            dataset: Packed | None = None, resample=None) -> Model:
    """Train student.module in place against teacher; returns the student. cfg.log gets (step, loss, kl);
    on_step(step, loss, kl), if given, is called after every optimizer step (on every rank). dataset: the
    packed sequences and loss mask to train on (teacher-generated conversations); default: training_tokens.
    resample(step) -> Packed: the data for the next cfg.resample_every steps, its student share sampled from the
    student as it is now (on-policy; the caller runs the engine, converters do not), called at the first step and
    every cfg.resample_every steps; every rank calls it, so it must give the same data on each (seeded)."""
    if teacher.config.vocab_size != student.config.vocab_size:
        raise EdgechatError(f"teacher and student vocabularies differ ({teacher.config.vocab_size} vs "
                            f"{student.config.vocab_size} tokens): distillation needs the same tokenizer")
    if cfg.beta_hidden and teacher.config.hidden_size != student.config.hidden_size:
        raise EdgechatError("the hidden-state loss needs equal hidden sizes; set beta_hidden = 0 after hidden pruning")
    rank, world = dist_info()
    dev = train_device(cfg)
    bf16 = train_precision(cfg, dev, student.config.hidden_size) == "bf16"
    autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    torch.manual_seed(cfg.seed)
    packed = dataset or training_tokens(teacher, cfg)
    data = packed.tokens
    global_batch = cfg.micro_batch * cfg.grad_accum * world
    module = student.module.to(dev).train().requires_grad_(True)
    model = module
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    params = [p for p in module.parameters() if p.requires_grad]
    # fused: one kernel per parameter instead of a dozen passes over 135M fp32 values (torch.profiler on one
    # SmolLM2 bf16 step on the 2-core Xeon: AdamW 0.48 -> 0.18 s)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95), fused=True)
    start = 0
    if cfg.checkpoint and Path(cfg.checkpoint).exists():
        state = torch.load(cfg.checkpoint, weights_only=False, map_location=dev)
        module.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        start, cfg.log[:] = state["step"], state["log"]
    teacher.module.to(dev).eval().requires_grad_(False)
    advance = progress.step("distilling", total=cfg.steps) if progress and rank == 0 else None
    for step in range(start, cfg.steps):
        if resample and cfg.resample_every and (step % cfg.resample_every == 0 or step == start):
            if advance:
                progress.describe(f"distilling: sampling the student's replies again (step {step})")
            module.eval()
            with torch.no_grad():
                packed = resample(step)
            data = packed.tokens
            module.train()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        idx = batch_indices(step, len(data), global_batch, cfg.seed)
        mine = idx[rank * cfg.micro_batch * cfg.grad_accum:(rank + 1) * cfg.micro_batch * cfg.grad_accum]
        loss_sum, kl_sum = torch.zeros((), device=dev), torch.zeros((), device=dev)
        for a in range(cfg.grad_accum):
            rows = mine[a * cfg.micro_batch:(a + 1) * cfg.micro_batch]
            tokens = data[rows].to(dev)
            sel, targets = loss_positions(packed.mask[rows].to(dev) if packed.mask is not None else None, tokens)
            ul = None
            if cfg.alpha_ul and packed.avoid is not None:  # the avoided tokens get unlikelihood, not the KL
                ul = loss_positions(packed.avoid[rows].to(dev), tokens)[0]
                sel, avoided = sel & ~ul, targets[ul]
            if packed.student is not None:  # no cross-entropy towards the student's own tokens
                targets[loss_positions(packed.student[rows].to(dev), tokens)[0]] = -1
            with torch.no_grad(), autocast():
                t_hidden = teacher.module(tokens, hidden=True)
            sync = a == cfg.grad_accum - 1 or world == 1
            ctx = model.no_sync() if (world > 1 and not sync) else contextlib.nullcontext()
            with ctx, autocast():
                s_hidden = model(tokens, hidden=True)
                args = (s_hidden[sel], t_hidden[sel], module.lm_head, teacher.module.lm_head, targets[sel],
                        cfg.temperature, cfg.alpha_ce)
                if cfg.loss_chunk:
                    loss, kl = chunked_loss(*args, cfg.loss_chunk, torch.bfloat16 if bf16 else torch.float32, cfg.divergence)
                else:
                    loss, kl = reference_loss(*args, divergence=cfg.divergence)
                if ul is not None and ul.any():
                    loss = loss + cfg.alpha_ul * unlikelihood(module.lm_head(s_hidden[ul]), avoided)
                if cfg.beta_hidden:
                    loss = loss + cfg.beta_hidden * F.mse_loss(s_hidden.float(), t_hidden.float())
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach() / cfg.grad_accum
            kl_sum += kl.detach() / cfg.grad_accum
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if world > 1:  # report the global mean, identical on every rank
            stats = torch.stack([loss_sum, kl_sum])
            torch.distributed.all_reduce(stats)
            loss_sum, kl_sum = stats / world
        cfg.log.append((step, float(loss_sum), float(kl_sum)))
        if on_step:
            on_step(*cfg.log[-1])
        if advance:
            progress.describe(f"distilling: loss {float(loss_sum):.4f} KL {float(kl_sum):.4f}")
            advance(step + 1)
        if cfg.checkpoint and rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(Path(cfg.checkpoint), module, opt, step + 1, cfg.log)
    module.to("cpu").eval().requires_grad_(False)
    teacher.module.to("cpu")
    return student


def save_checkpoint(path: Path, module, opt, step: int, log: list) -> None:
    """Write beside, then rename: an interrupt at any moment leaves the previous checkpoint whole for --resume."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save({"student": module.state_dict(), "optimizer": opt.state_dict(), "step": step, "log": list(log)}, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def config_dict(cfg: DistillConfig) -> dict:
    d = asdict(cfg)
    d.pop("log")
    return d
