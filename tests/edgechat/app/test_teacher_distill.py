"""Distillation on teacher-written data: the pruned stories260K student moves towards the teacher on
held-out conversations the teacher answered (prompts the training set never saw)."""
from converters.distill import DistillConfig, distill
from edgechat.app.evaluate import evaluate
from edgechat.app.teacher_data import teacher_conversations
from edgechat.core.data import HELD_OUT_START, EvalData
from runtimes.torch_engine import TorchEngine
from tests.converters.test_distill import pruned_student


def test_distillation_on_teacher_data_lowers_kl_on_held_out_teacher_replies(stories_model, tmp_path):
    train = teacher_conversations(stories_model, n=160, seed=0, magpie_share=0.25, reply_tokens=48, cache=tmp_path)
    held = teacher_conversations(stories_model, n=20, seed=1, magpie_share=0, reply_tokens=48,
                                 corpus_start=HELD_OUT_START, cache=tmp_path)
    seen = {c[0]["content"] for c in train.conversations}  # greetings ("Hello!") open many conversations
    unseen = [c for c in held.conversations if c[0]["content"] not in seen]
    assert len(unseen) >= 15
    data = EvalData("dialogues", "held-out teacher replies", dialogues=unseen)

    def kld(student):
        return evaluate(TorchEngine(student), TorchEngine(stories_model), data, n_ctx=256).mean_kld

    student = pruned_student(stories_model)
    before = kld(student)
    cfg = DistillConfig(steps=150, micro_batch=4, seq_len=128, lr=1e-3, seed=0, precision="fp32")  # as test_distill
    distill(stories_model, student, cfg, dataset=train.packed(cfg.seq_len))
    after = kld(student)
    assert cfg.log[-1][2] < cfg.log[0][2] / 2
    assert after < before * 0.7, (before, after)
