"""On-policy replies sampled again as the student trains (--resample-every): distill asks for new data at the
first step and every N steps (and where it resumes), and each round's replies are the student's as it is then,
on the conversations that round reads."""
import torch

from converters.distill import DistillConfig, distill
from edgechat.app.distill_data import on_policy, resampler, round_subset, with_student_replies
from tests.converters.test_distill import pruned_student


def rounds_config(**kw) -> DistillConfig:
    return DistillConfig(micro_batch=2, seq_len=64, lr=1e-3, seed=0, precision="fp32", teacher_data=8,
                         student_share=1.0, alpha_ul=1.0, reply_tokens=32, **kw)  # alpha_ul: greedy replies, comparable to Chat's


def test_distill_asks_for_data_at_the_start_and_every_n_steps(stories_model, stories_data, tmp_path):
    packed = stories_data.packed(64)
    asked = []

    def resample(step):
        asked.append(step)
        return packed

    cfg = rounds_config(steps=7, resample_every=3, checkpoint=str(tmp_path / "ckpt.pt"), checkpoint_every=5)
    distill(stories_model, pruned_student(stories_model), cfg, dataset=packed, resample=resample)
    assert asked == [0, 3, 6] and len(cfg.log) == 7
    cfg.steps, asked[:] = 9, []  # resumed from the checkpoint of step 7: data for where it starts again
    distill(stories_model, pruned_student(stories_model), cfg, dataset=packed, resample=resample)
    assert asked == [7] and [s for s, *_ in cfg.log] == list(range(9))
    cfg.resample_every, asked[:] = 0, []
    cfg.checkpoint = None
    distill(stories_model, pruned_student(stories_model), cfg, dataset=packed, resample=resample)
    assert asked == []  # resample_every 0: the data sampled once, before training


def test_each_round_reads_the_student_as_it_is_then(stories_model, stories_data):
    student = pruned_student(stories_model)
    cfg = rounds_config(resample_every=2)
    resample = resampler(stories_data, cfg, student, seed=0)
    first, again = resample(0), resample(0)
    assert torch.equal(first.tokens, again.tokens)  # seeded: every rank gets the same data
    with torch.no_grad():
        student.module.model.layers[0].mlp.down_proj.weight.mul_(3.0)  # as if it had trained
    after = resample(0)
    assert not torch.equal(first.tokens, after.tokens)
    assert after.student.any() and torch.equal(after.student, after.mask)  # share 1: every reply the student's
    # the round's replies are the student's greedy ones now (on the same engine as with_student_replies, which
    # test_teacher_data checks against Chat), on the conversations round_subset picked
    need = cfg.resample_every * cfg.micro_batch * cfg.seq_len
    picked = round_subset(stories_data, need, 0)
    assert sum(map(len, picked.sequences)) >= min(need * 1.1, sum(map(len, stories_data.sequences)))
    now = with_student_replies(picked, student, 1.0, seed=0, reply_tokens=cfg.reply_tokens, greedy=True)
    assert torch.equal(after.tokens, now.packed(cfg.seq_len).tokens)
    before = with_student_replies(picked, pruned_student(stories_model), 1.0, seed=0, reply_tokens=cfg.reply_tokens,
                                  greedy=True)
    assert torch.equal(first.tokens, before.packed(cfg.seq_len).tokens)
    assert resample.stats["rounds"] == 3 and resample.stats["student_replies"] == 3 * len(picked.conversations)


def test_round_subset_draws_other_conversations_for_other_steps(stories_data):
    lengths = sorted(map(len, stories_data.sequences))
    need = sum(lengths[:3]) / 1.1  # two or three conversations, never more
    small = [round_subset(stories_data, need, seed) for seed in range(6)]
    for s in small:
        assert len(s.conversations) in (2, 3) and sum(map(len, s.sequences)) >= need * 1.1
        order = [stories_data.conversations.index(c) for c in s.conversations]
        assert order == sorted(order)  # the set's own order: packing keeps conversations whole and in order
    assert len({tuple(c[0]["content"] for c in s.conversations) for s in small}) > 1
    whole = round_subset(stories_data, 10**9, 0)
    assert whole.conversations == stories_data.conversations


def test_config_picks_greedy_or_sampled_student_replies(stories_model, stories_data):
    """--student-greedy (or --alpha-ul, which needs the greedy loops) makes the student's share its greedy replies
    (with_student_replies' greedy ones, which test_teacher_data checks against Chat); by default they are sampled
    at T=1, so they differ."""
    student, data = pruned_student(stories_model), stories_data.subset(range(4))
    greedy = with_student_replies(data, student, 1.0, seed=0, reply_tokens=32, greedy=True)
    for greedy_by in ({"student_greedy": True}, {"alpha_ul": 1.0}, {}):
        cfg = DistillConfig(teacher_data=8, student_share=1.0, reply_tokens=32, **greedy_by)
        got = on_policy(data, cfg, student, seed=0)
        same = [a == b for a, b in zip(got.conversations, greedy.conversations)]
        assert got.student_replies == len(same) == 4
        assert (all(same) if greedy_by else not all(same)), greedy_by
        assert got.options.get("student_greedy", False) == bool(greedy_by)
