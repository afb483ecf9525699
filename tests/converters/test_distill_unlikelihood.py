"""Unlikelihood in distillation: the tokens a dataset marks to avoid (the repeats of the student's own looping
replies) are pushed down instead of matched to the teacher, and the student's own tokens get no cross-entropy."""
import pytest
import torch

from converters.distill import DistillConfig, Packed, distill, loss_positions
from converters.distill_loss import kd_loss, unlikelihood
from tests.converters.test_distill import pruned_student


def test_unlikelihood_is_minus_log_one_minus_p():
    torch.manual_seed(0)
    logits, tokens = torch.randn(5, 50), torch.randint(0, 50, (5,))
    p = torch.softmax(logits.double(), -1).gather(-1, tokens[:, None]).squeeze(1)
    assert float(unlikelihood(logits, tokens)) == pytest.approx(float(-torch.log1p(-p).mean()), rel=1e-5)
    sure = torch.zeros(1, 50)
    sure[0, 7] = 40.0  # p within 1e-15 of 1, where 1 - p is 0 in float: -log(1 - p) = 40 - log(49)
    assert float(unlikelihood(sure, torch.tensor([7]))) == pytest.approx(40 - torch.tensor(49.0).log().item(), rel=1e-6)


def batch(stories_model):
    """Random tokens, the last 24 of each row counted, some avoided: those the student's greedy choice (so that the
    student gives them a probability worth pushing down, as it does its own repeats)."""
    torch.manual_seed(0)
    tokens = torch.randint(3, 512, (2, 32))
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 8:] = True
    avoid = torch.zeros_like(mask)
    avoid[0, 20:26] = avoid[1, 12:14] = True
    student = pruned_student(stories_model)
    for b, j in avoid.nonzero().tolist():  # left to right: position j's prediction reads only tokens before j
        with torch.no_grad():
            tokens[b, j] = student.module(tokens[b:b + 1, :j])[0, -1].argmax()
    return tokens, mask, avoid


@pytest.mark.parametrize("chunk", [0, 4])
def test_avoided_tokens_get_unlikelihood_instead_of_the_kl(stories_model, chunk):
    tokens, mask, avoid = batch(stories_model)
    sel, targets = loss_positions(mask, tokens)
    ul = loss_positions(avoid, tokens)[0]
    student = pruned_student(stories_model)
    with torch.no_grad():
        s, t = student.module(tokens), stories_model.module(tokens)
        want_kl, want_ul = kd_loss(s[sel & ~ul], t[sel & ~ul], 1.0), unlikelihood(s[ul], targets[ul])
    cfg = DistillConfig(steps=1, micro_batch=2, seq_len=32, precision="fp32", loss_chunk=chunk, alpha_ul=0.5)
    distill(stories_model, pruned_student(stories_model), cfg, dataset=Packed(tokens, mask, avoid=avoid))
    _, loss, kl = cfg.log[0]
    assert kl == pytest.approx(float(want_kl), rel=1e-5)
    assert float(want_ul) > 0.1  # tokens the student finds likely: the term is not lost in rounding
    assert loss - kl == pytest.approx(0.5 * float(want_ul), rel=1e-4)


@pytest.mark.parametrize("chunk", [0, 4])
def test_the_students_own_tokens_get_no_cross_entropy(stories_model, chunk):
    tokens, mask, _ = batch(stories_model)
    own = mask.clone()
    own[0] = False  # the first row the teacher's: cross-entropy there only
    sel, targets = loss_positions(mask, tokens)
    teachers = sel.clone()
    teachers[1] = False
    student = pruned_student(stories_model)
    with torch.no_grad():
        s = student.module(tokens)
        want_ce = torch.nn.functional.cross_entropy(s[teachers], targets[teachers])
    for student_marks, ce in ((own, float(want_ce)), (mask, 0.0)):
        cfg = DistillConfig(steps=1, micro_batch=2, seq_len=32, precision="fp32", loss_chunk=chunk, alpha_ce=0.5)
        distill(stories_model, pruned_student(stories_model), cfg, dataset=Packed(tokens, mask, student=student_marks))
        _, loss, kl = cfg.log[0]
        assert loss - kl == pytest.approx(0.5 * ce, rel=1e-4, abs=1e-6)


def test_training_pushes_the_avoided_tokens_down(stories_model):
    """Ten steps with unlikelihood leave the avoided tokens less likely than ten steps of the KL alone."""
    tokens, mask, avoid = batch(stories_model)
    ul, targets = loss_positions(avoid, tokens)

    def p_avoided(alpha_ul):
        student = pruned_student(stories_model)
        cfg = DistillConfig(steps=10, micro_batch=2, seq_len=32, lr=1e-3, precision="fp32", alpha_ul=alpha_ul)
        distill(stories_model, student, cfg, dataset=Packed(tokens, mask, avoid=avoid))
        with torch.no_grad():
            return float(torch.softmax(student.module(tokens)[ul], -1).gather(-1, targets[ul][:, None]).mean())

    assert p_avoided(1.0) < p_avoided(0.0) / 2
