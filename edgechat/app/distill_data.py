"""The data a distillation config trains on: the teacher-written set (edgechat.app.teacher_data), optionally with
a share of its replies sampled from the student instead (on-policy, GKD-style: the teacher's logits then score
them) and without the conversations whose reply loops."""
from __future__ import annotations

import random
import tempfile
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
    cfg.student_share of the replies sampled from `student`."""
    check_config(cfg)
    data = teacher_conversations(teacher, gguf_path, n=cfg.teacher_data, seed=cfg.seed, prompts=cfg.prompts,
                                 magpie_share=cfg.magpie_share, reply_tokens=cfg.reply_tokens, progress=progress)
    if cfg.student_share and student is not None:
        data = with_student_replies(data, student, cfg.student_share, cfg.seed, cfg.reply_tokens, progress,
                                    greedy=bool(cfg.alpha_ul))
    return data.without_loops() if cfg.drop_looping else data


def with_student_replies(data: TeacherData, student: Model, share: float, seed: int, reply_tokens: int,
                         progress=None, greedy: bool = False) -> TeacherData:
    """On-policy data, GKD-style: round(share * n) of the replies re-sampled from the student (temperature 1,
    seeded), which the teacher's logits then score in training. Sampled once, from the student as it is before
    training (the converters cannot run an engine mid-training), and never cached: the student changes.
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
