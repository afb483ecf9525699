"""The data a distillation config trains on: the teacher-written set (edgechat.app.teacher_data), optionally with
a share of its replies sampled from the student instead (on-policy, GKD-style: the teacher's logits then score
them; sampled once, or again as the student trains) and without the conversations whose reply loops."""
from __future__ import annotations

import copy
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edgechat.app.loops import loops, repeats
from edgechat.app.sampling import SamplingParams
from edgechat.app.teacher_data import (TeacherData, assistant_mask, check_config, open_teacher_engine, replies,
                                      teacher_conversations)
from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model


def for_config(teacher: Model, cfg, gguf_path: str | Path | None = None, progress=None,
               student: Model | None = None) -> TeacherData:
    """The set a converters.distill.DistillConfig asks for (cfg.teacher_data conversations), with
    cfg.student_share of the replies sampled from `student` (unless cfg.resample_every: then `resampler` does)."""
    check_config(cfg)
    data = teacher_conversations(teacher, gguf_path, n=cfg.teacher_data, seed=cfg.seed, prompts=cfg.prompts,
                                 magpie_share=cfg.magpie_share, reply_tokens=cfg.reply_tokens, progress=progress)
    return on_policy(data, cfg, None if cfg.resample_every else student, cfg.seed, progress)


def on_policy(data: TeacherData, cfg, student: Model | None, seed: int, progress=None) -> TeacherData:
    """The teacher's set with cfg.student_share of its replies the student's (when a student is given), without
    the looping teacher replies when cfg.drop_looping."""
    if cfg.student_share and student is not None:
        data = with_student_replies(data, student, cfg.student_share, seed, cfg.reply_tokens, progress,
                                    greedy=cfg.student_greedy or bool(cfg.alpha_ul))
    return data.without_loops() if cfg.drop_looping else data


def round_subset(data: TeacherData, tokens: int, seed: int) -> TeacherData:
    """Conversations drawn at random (seeded) until they hold `tokens` tokens and a tenth more (the packing cuts
    the last sequence), or the whole set: what one round of re-sampled training reads, so that each reply the
    student writes is trained on rather than diluted in the whole set."""
    order = list(range(len(data.conversations)))
    random.Random(seed).shuffle(order)
    keep, held = [], 0
    for i in order:
        if held >= tokens * 1.1:
            break
        keep.append(i)
        held += len(data.sequences[i])
    return data.subset(sorted(keep))


def resampler(data: TeacherData, cfg, student: Model, seed: int | None = None, world: int | None = None):
    """converters.distill's `resample` for cfg.resample_every over `data` (for_config's set, or a set the caller
    made): at step S, the conversations the next cfg.resample_every steps read (round_subset, seed + S, seed
    default cfg.seed), cfg.student_share of their replies sampled from the student as it is then; None when the
    config samples once. The student's weights are read on the CPU (a copy when it trains on a GPU). Its .stats
    count the rounds, the student's replies and the seconds spent writing them (for the manifest)."""
    if not (cfg.student_share and cfg.resample_every):
        return None
    if world is None:
        from converters.distill import dist_info

        world = dist_info()[1]
    seed = cfg.seed if seed is None else seed
    tokens = cfg.resample_every * cfg.micro_batch * cfg.grad_accum * world * cfg.seq_len

    def resample(step: int):
        t = time.perf_counter()
        now = student
        if next(student.module.parameters()).device.type != "cpu":
            now = replace(student, module=copy.deepcopy(student.module).cpu())
        round_data = on_policy(round_subset(data, tokens, seed + step), cfg, now, seed + step)
        stats = resample.stats
        stats["rounds"] += 1
        stats["student_replies"] += round_data.student_replies
        stats["seconds"] = round(stats["seconds"] + time.perf_counter() - t, 1)
        return round_data.packed(cfg.seq_len)

    resample.stats = {"rounds": 0, "student_replies": 0, "seconds": 0.0}
    return resample


def with_student_replies(data: TeacherData, student: Model, share: float, seed: int, reply_tokens: int,
                         progress=None, greedy: bool = False) -> TeacherData:
    """On-policy data, GKD-style: round(share * n) of the replies re-sampled from the student (temperature 1,
    seeded), which the teacher's logits then score in training. Sampled from the student as it is now (before
    training; again every cfg.resample_every steps through `resampler`), never cached: the student changes.
    greedy: the student's greedy replies instead (loops are a failure of greedy decoding), the tokens that carry
    a looping reply's repeats marked to avoid (TeacherData.avoid, for unlikelihood)."""
    from edgechat.app.chat import Chat

    if not 0 <= share <= 1:
        raise EdgechatError(f"--student-share must be between 0 and 1, got {share}")
    n = len(data.conversations)
    pick = sorted(random.Random(seed).sample(range(n), round(n * share)))
    convos, sources = [list(c) for c in data.conversations], list(data.sources)
    advance = progress.step("student replies (on-policy)", total=len(pick)) if progress else None
    with tempfile.TemporaryDirectory(prefix="edgechat-student-") as tmp:
        engine = open_teacher_engine(student, None, tmp, own_file=False)
        try:
            chat = Chat(engine)
            chat.probes = False
            prompts = [chat.prompt_ids([convos[i][0]]) for i in pick]
            params = [SamplingParams(temperature=0.0 if greedy else 1.0, seed=seed * 100003 + i) for i in pick]
            for i, text in zip(pick, replies(chat, prompts, reply_tokens, params, progress=advance)):
                if text is not None:
                    convos[i] = [convos[i][0], {"role": "assistant", "content": text}]
                    sources[i] += "+student"
        finally:
            engine.close()
    fmt = student.chat_format()
    encoded = [assistant_mask(fmt, c) for c in convos]
    avoid = None
    if greedy:
        avoid = [repeats(ids, mask) if src.endswith("+student") and loops(c[1]["content"]) else [False] * len(ids)
                 for (ids, mask), src, c in zip(encoded, sources, convos)]
    return TeacherData(convos, sources, [e[0] for e in encoded], [e[1] for e in encoded], data.path, data.sha256,
                       {**data.options, "student_share": share, **({"student_greedy": True} if greedy else {})},
                       data.cached, sum(s.endswith("+student") for s in sources), avoid=avoid)
