"""Logit knowledge distillation: the source model teaches the pruned student on chat-formatted dialogue.
KL divergence of temperature-softened logits (optionally mixed with cross-entropy and a hidden-state loss),
AdamW with warm-up and cosine decay, gradient accumulation, a fixed seed, checkpoint/resume, and
torch.distributed DDP (gloo on CPU, nccl on GPUs) with the same result as one process for the same global batch."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

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
    alpha_ce: float = 0.0  # weight of next-token cross-entropy on the data
    beta_hidden: float = 0.0  # weight of the final hidden-state MSE (needs equal hidden sizes)
    seed: int = 0
    data: str | None = None  # text/JSONL/DailyDialog file; default: chit-chat conversations
    max_dialogues: int = 3000
    checkpoint: str | None = None
    checkpoint_every: int = 50
    device: str = "cpu"  # "cuda" trains on a GPU (one per process under torchrun); the student comes back on the CPU
    log: list = field(default_factory=list)


def dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def training_tokens(teacher: Model, cfg: DistillConfig) -> torch.Tensor:
    """Chat-rendered dialogues (or raw text) packed into [N, seq_len] sequences."""
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
    n = len(stream) // cfg.seq_len
    if n == 0:
        raise EdgechatError(f"the distillation data holds {len(stream)} tokens, fewer than one sequence of {cfg.seq_len}")
    return torch.tensor(stream[: n * cfg.seq_len]).view(n, cfg.seq_len)


def lr_at(step: int, cfg: DistillConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def kd_loss(s_logits, t_logits, temperature: float) -> torch.Tensor:
    t = temperature
    log_p_t = F.log_softmax(t_logits / t, dim=-1)
    log_p_s = F.log_softmax(s_logits / t, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * t * t


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


def distill(teacher: Model, student: Model, cfg: DistillConfig, progress=None, on_step=None) -> Model:
    """Train student.module in place against teacher; returns the student. cfg.log gets (step, loss, kl);
    on_step(step, loss, kl), if given, is called after every optimizer step (on every rank)."""
    if teacher.config.vocab_size != student.config.vocab_size:
        raise EdgechatError(f"teacher and student vocabularies differ ({teacher.config.vocab_size} vs "
                            f"{student.config.vocab_size} tokens): distillation needs the same tokenizer")
    if cfg.beta_hidden and teacher.config.hidden_size != student.config.hidden_size:
        raise EdgechatError("the hidden-state loss needs equal hidden sizes; set beta_hidden = 0 after hidden pruning")
    rank, world = dist_info()
    dev = train_device(cfg)
    torch.manual_seed(cfg.seed)
    data = training_tokens(teacher, cfg)
    global_batch = cfg.micro_batch * cfg.grad_accum * world
    module = student.module.to(dev).train().requires_grad_(True)
    model = module
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    start = 0
    if cfg.checkpoint and Path(cfg.checkpoint).exists():
        state = torch.load(cfg.checkpoint, weights_only=False, map_location=dev)
        module.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        start, cfg.log[:] = state["step"], state["log"]
    teacher.module.to(dev).eval().requires_grad_(False)
    advance = progress.step("distilling", total=cfg.steps) if progress and rank == 0 else None
    for step in range(start, cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        idx = batch_indices(step, len(data), global_batch, cfg.seed)
        mine = idx[rank * cfg.micro_batch * cfg.grad_accum:(rank + 1) * cfg.micro_batch * cfg.grad_accum]
        loss_sum, kl_sum = torch.zeros((), device=dev), torch.zeros((), device=dev)
        for a in range(cfg.grad_accum):
            tokens = data[mine[a * cfg.micro_batch:(a + 1) * cfg.micro_batch]].to(dev)
            with torch.no_grad():
                t_hidden = teacher.module(tokens, hidden=True)
                t_logits = teacher.module.lm_head(t_hidden)
            sync = a == cfg.grad_accum - 1 or world == 1
            ctx = model.no_sync() if (world > 1 and not sync) else _null()
            with ctx:
                s_hidden = model(tokens, hidden=True)
                s_logits = module.lm_head(s_hidden)
                kl = kd_loss(s_logits, t_logits, cfg.temperature)
                loss = kl
                if cfg.alpha_ce:
                    loss = loss + cfg.alpha_ce * F.cross_entropy(s_logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
                if cfg.beta_hidden:
                    loss = loss + cfg.beta_hidden * F.mse_loss(s_hidden, t_hidden)
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
            advance(step + 1)
            progress.progress.update(progress._task, description=f"distilling: loss {float(loss_sum):.4f} KL {float(kl_sum):.4f}")
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


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def config_dict(cfg: DistillConfig) -> dict:
    d = asdict(cfg)
    d.pop("log")
    return d
