"""The distillation losses over the positions that count: KL divergence of temperature-softened logits (forward,
KL(teacher || student), or reverse, KL(student || teacher): GKD's mode-seeking choice), optionally mixed with
next-token cross-entropy, either on whole-batch logits (the reference) or fused with the final projection and
computed chunk by chunk over positions, so that the [positions, vocab] logits of teacher and student (49,152 wide
for SmolLM2) exist one chunk at a time instead of for the whole batch, in fp32."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgechat.core.errors import EdgechatError

DIVERGENCES = ("forward", "reverse")  # KL(teacher || student) | KL(student || teacher)


def check_divergence(divergence: str) -> None:
    if divergence not in DIVERGENCES:
        raise EdgechatError(f"unknown divergence {divergence!r}: use {' or '.join(DIVERGENCES)}")


def kd_loss(s_logits, t_logits, temperature: float, divergence: str = "forward") -> torch.Tensor:
    """Mean over positions of T^2 * KL(teacher || student) of the softened distributions, or with
    divergence="reverse" T^2 * KL(student || teacher)."""
    check_divergence(divergence)
    t = temperature
    log_p_t = F.log_softmax(t_logits.float() / t, dim=-1)
    log_p_s = F.log_softmax(s_logits.float() / t, dim=-1)
    if divergence == "reverse":
        return (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1).mean() * t * t
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * t * t


def unlikelihood(logits, tokens) -> torch.Tensor:
    """Mean over positions of -log(1 - p(token)) (unlikelihood, Welleck et al. 2019): pushes the given tokens
    down, e.g. the student's own repeats in a looping reply, where the teacher, shown the loop, would continue it
    too. log(1 - p) is computed as logsumexp over the other tokens - logsumexp over all, exact for p near 1."""
    logits = logits.float()
    others = logits.scatter(-1, tokens[:, None], float("-inf"))
    return (logits.logsumexp(-1) - others.logsumexp(-1)).mean()


def reference_loss(s_hidden, t_hidden, s_head, t_head, targets, temperature: float, alpha_ce: float,
                   divergence: str = "forward"):
    """Whole-batch logits (the fp32 trainer): hidden [N, D] at the chosen positions; targets [N], -1 where the
    next token is unknown (no cross-entropy there). Returns (loss, kl)."""
    s_logits, t_logits = s_head(s_hidden), t_head(t_hidden)
    kl = kd_loss(s_logits, t_logits, temperature, divergence)
    loss = kl
    ok = targets >= 0
    if alpha_ce and ok.any():  # none: every position's next token is unknown or the student's own
        loss = loss + alpha_ce * F.cross_entropy(s_logits[ok].float(), targets[ok])
    return loss, kl


def _log_softmax(logits, t: float) -> torch.Tensor:
    """fp32 log-softmax of logits / t; at t = 1 straight from bf16 logits (the upcast inside is exact)."""
    if t == 1:
        return F.log_softmax(logits, dim=-1, dtype=torch.float32)
    return F.log_softmax(logits.to(torch.float32, copy=True).div_(t), dim=-1)  # a copy: logits may be needed again


class FusedHeadKD(torch.autograd.Function):
    """The student's head + the loss, chunk by chunk over positions, with the gradient worked out in the forward
    pass (d loss / d logits = T (p_s - p_t) + alpha (softmax(s) - onehot), over the counted positions; reverse KL:
    T p_s (log p_s - log p_t - KL) in place of T (p_s - p_t)): backward only scales the stored gradients, so no
    chunk's logits are kept or recomputed. The matmuls run in `dtype` (bf16 when training in bf16), the softmaxes
    and sums in fp32."""

    @staticmethod
    def forward(ctx, h_s, w_s, h_t, w_t, targets, temperature, alpha_ce, chunk, dtype, reverse):
        with torch.autocast(h_s.device.type, enabled=False):
            n, t = h_s.shape[0], temperature
            n_ce = max(1, int((targets >= 0).sum())) if alpha_ce else 1
            ws, wt = w_s.detach().to(dtype), w_t.to(dtype)
            grad_h = torch.empty(h_s.shape, dtype=torch.float32, device=h_s.device)
            grad_w = torch.zeros(w_s.shape, dtype=torch.float32, device=w_s.device)
            kl_sum = torch.zeros((), dtype=torch.float32, device=h_s.device)
            ce_sum = torch.zeros((), dtype=torch.float32, device=h_s.device)
            for i in range(0, n, chunk):  # in place where it can: a fresh [chunk, vocab] tensor costs page faults
                hs = h_s[i:i + chunk].detach().to(dtype)
                s = hs @ ws.T
                with torch.no_grad():
                    log_pt = _log_softmax(h_t[i:i + chunk].to(dtype) @ wt.T, t)
                log_ps = _log_softmax(s, t)
                if alpha_ce:
                    tgt = targets[i:i + chunk]
                    rows = (tgt >= 0).nonzero().squeeze(1)
                    log_p1 = log_ps if t == 1 else _log_softmax(s, 1)
                    ce_sum -= log_p1[rows, tgt[rows]].sum()
                    p1_rows = log_p1[rows].exp()  # a copy: log_ps is overwritten below
                if reverse:  # log_pt becomes log p_s - log p_t, log_ps p_s
                    diff, p_s = log_pt.neg_().add_(log_ps), log_ps.exp_()
                    kl_rows = (p_s * diff).sum(-1, keepdim=True)
                    kl_sum += kl_rows.sum()
                    g = diff.sub_(kl_rows).mul_(p_s).mul_(t / n)
                else:
                    p_t = log_pt.exp()
                    kl_sum += log_pt.sub_(log_ps).mul_(p_t).sum()
                    g = log_ps.exp_().sub_(p_t).mul_(t / n)
                if alpha_ce:
                    g[rows] += p1_rows * (alpha_ce / n_ce)
                    g[rows, tgt[rows]] -= alpha_ce / n_ce
                g = g.to(dtype)
                grad_h[i:i + chunk].copy_(g @ ws)
                grad_w.add_(g.T @ hs)
            ctx.save_for_backward(grad_h, grad_w)
            ctx.dtypes = (h_s.dtype, w_s.dtype)
            kl = kl_sum * (t * t / n)
            loss = kl + alpha_ce * ce_sum / n_ce
        ctx.mark_non_differentiable(kl)
        return loss, kl

    @staticmethod
    def backward(ctx, g_loss, _g_kl):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (grad_h * g_loss).to(h_dtype), (grad_w * g_loss).to(w_dtype), *[None] * 8


def chunked_loss(s_hidden, t_hidden, s_head, t_head, targets, temperature: float, alpha_ce: float, chunk: int,
                 dtype=torch.float32, divergence: str = "forward"):
    """The reference loss, fused and chunked over positions (the same value to float rounding). Returns (loss, kl)."""
    check_divergence(divergence)
    return FusedHeadKD.apply(s_hidden, s_head.weight, t_hidden, t_head.weight, targets, float(temperature),
                             float(alpha_ce), int(chunk), dtype, divergence == "reverse")
