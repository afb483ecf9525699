"""On-policy distillation data, GKD-style: a share of the teacher-written set's replies sampled from the student
instead, which the teacher's logits then score in training (edgechat.app.teacher_data makes the set)."""
from __future__ import annotations

import random
import tempfile

from edgechat.app.sampling import SamplingParams
from edgechat.app.teacher_data import TeacherData, assistant_mask, open_teacher_engine, replies
from edgechat.core.errors import EdgechatError
from edgechat.core.model import Model


def with_student_replies(data: TeacherData, student: Model, share: float, seed: int, reply_tokens: int,
                         progress=None) -> TeacherData:
    """On-policy data, GKD-style: round(share * n) of the replies re-sampled from the student (temperature 1,
    seeded), which the teacher's logits then score in training. Sampled once, from the student as it is before
    training (the converters cannot run an engine mid-training), and never cached: the student changes."""
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
            params = [SamplingParams(temperature=1.0, seed=seed * 100003 + i) for i in pick]
            for i, text in zip(pick, replies(chat, prompts, reply_tokens, params, progress=advance)):
                if text is not None:
                    convos[i] = [convos[i][0], {"role": "assistant", "content": text}]
                    sources[i] += "+student"
        finally:
            engine.close()
    fmt = student.chat_format()
    encoded = [assistant_mask(fmt, c) for c in convos]
    return TeacherData(convos, sources, [e[0] for e in encoded], [e[1] for e in encoded], data.path, data.sha256,
                       {**data.options, "student_share": share}, data.cached,
                       sum(s.endswith("+student") for s in sources))
