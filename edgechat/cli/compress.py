"""`edgechat distill`: knowledge distillation as its own command, so torchrun can launch it on many processes:
    torchrun --nproc_per_node 2 -m edgechat.cli distill TEACHER STUDENT -o OUT --steps 200
and the distillation options `convert` shares with it (data written by the teacher, precision)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click


def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """Join the torchrun process group (gloo on CPU, nccl on GPUs); one process otherwise."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


PRECISION_HELP = ("Arithmetic of the training steps: bf16 autocast (weights and optimizer stay fp32), fp32, or auto: "
                  "bf16 where the GPU has bf16 or the CPU has AVX512-BF16/AMX and the student is at least 384 wide "
                  "(narrower, casting costs more than bf16 saves), else fp32.")
TEACHER_DATA_OPTIONS = [
    click.option("--teacher-data", type=int, help="Train on N conversations whose replies the teacher writes "
                 "(llama.cpp on its GGUF, greedy), the loss on the assistant's tokens only; cached and reused "
                 "(edgechat's cache dir, teacher-data/), its sha256 in the manifest. Default: chit-chat, every token."),
    click.option("--prompts", type=click.Path(), help="With --teacher-data: user turns for the teacher to answer, one "
                 "a line (or JSONL with \"prompt\" or \"messages\"); default: chit-chat first turns."),
    click.option("--magpie-share", type=float, help="With --teacher-data: the share of user turns the teacher writes "
                 "itself from its chat template's user prefix (Magpie) [default: 0.25]."),
    click.option("--student-share", type=float, help="With --teacher-data: the share of replies sampled from the "
                 "student (before training) instead, scored by the teacher's logits (on-policy, GKD-style) [default: 0]."),
    click.option("--resample-every", type=int, help="With --student-share: sample the student's replies again every "
                 "N steps, from the student as it trains (other conversations each time; each round adds the "
                 "student's generation time to the steps') [default: 0: once, before training]."),
    click.option("--student-greedy", is_flag=True, default=None, help="With --student-share: the student's "
                 "replies are its greedy ones, the decoding its loops show under, instead of sampled at T=1."),
    click.option("--alpha-ul", type=float, help="With --student-share: the student's replies are its greedy ones, "
                 "and the tokens that carry a looping reply's repeats are pushed down (unlikelihood, this weight) "
                 "instead of matched to the teacher, who would continue the loop too [default: 0]."),
    # converters.distill_loss.DIVERGENCES, spelled out: importing it would load torch at every CLI start
    click.option("--divergence", type=click.Choice(["forward", "reverse"]), help="The KL the student is trained on: "
                 "forward, KL(teacher || student), or reverse, KL(student || teacher), which puts the student's mass "
                 "where the teacher's is (GKD's choice with on-policy replies) [default: forward]."),
    click.option("--drop-looping", is_flag=True, default=None, help="With --teacher-data: leave out the "
                 "conversations whose reply loops (a 6-word run said 3+ times: the teacher's own degenerate replies), "
                 "so that the student does not learn them."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), help=PRECISION_HELP + " [default: auto]"),
]


def teacher_data_options(fn):
    for opt in reversed(TEACHER_DATA_OPTIONS):
        fn = opt(fn)
    return fn


def apply_teacher_data(cfg, **values) -> None:
    """The TEACHER_DATA_OPTIONS' values (--teacher-data, --student-share, ..., --precision) over a DistillConfig
    (a flag left off keeps the recipe's value)."""
    for key, value in values.items():
        if value is not None:
            setattr(cfg, key, value)


def distill_dataset(teacher, cfg, progress=None, rank: int = 0, world: int = 1, student=None):
    """The teacher-written set for cfg (None when cfg trains on chit-chat / a data file). Under torchrun rank 0
    generates it and the others read it from the cache."""
    if not cfg.teacher_data:
        return None
    from edgechat.app.distill_data import for_config

    if world > 1 and rank != 0:
        import torch

        torch.distributed.barrier()
        return for_config(teacher, cfg, student=student)
    data = for_config(teacher, cfg, progress=progress, student=student)
    if world > 1:
        import torch

        torch.distributed.barrier()
    return data


@click.command()
@click.argument("teacher")
@click.argument("student")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Where the distilled student is written (a Hugging Face checkpoint directory).")
@click.option("--steps", default=200, show_default=True, help="Optimizer steps.")
@click.option("--budget-minutes", type=float, help="Distill for about this much wall time instead: the steps it buys "
              "on --device, measured before training (overrides --steps).")
@click.option("--micro-batch", default=4, show_default=True, help="Sequences per process per forward pass.")
@click.option("--grad-accum", default=1, show_default=True, help="Micro-batches per step (global batch = micro x accum x processes).")
@click.option("--seq-len", default=256, show_default=True, help="Tokens per training sequence.")
@click.option("--lr", default=3e-4, show_default=True, help="Peak learning rate (AdamW, warm-up then cosine decay).")
@click.option("--warmup-steps", default=10, show_default=True)
@click.option("--temperature", default=1.0, show_default=True, help="Softening temperature of the KL loss.")
@click.option("--alpha-ce", default=0.0, show_default=True, help="Weight of cross-entropy on the data.")
@click.option("--beta-hidden", default=0.0, show_default=True, help="Weight of the final hidden-state MSE.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Train on the CPU or a CUDA GPU (one per process under torchrun); the result is the same recipe.")
@click.option("--data", type=click.Path(), help="Dialogue or text file (default: chit-chat conversations).")
@click.option("--checkpoint", type=click.Path(), help="Save here every --checkpoint-every steps; resume from it if present.")
@click.option("--checkpoint-every", default=50, show_default=True)
@click.option("--loss-log", "log_path", type=click.Path(path_type=Path), help="Write the loss curve as JSON here.")
@click.option("--loss-chunk", default=256, show_default=True, help="Positions per chunk of the fused head + KL "
              "(teacher and student logits exist one chunk at a time); 0: whole-batch logits.")
@teacher_data_options
def distill(teacher, student, out_dir, steps, budget_minutes, micro_batch, grad_accum, seq_len, lr, warmup_steps, temperature,
            alpha_ce, beta_hidden, seed, device, data, checkpoint, checkpoint_every, log_path, loss_chunk, **tdata):
    """Distill TEACHER (any SOURCE) into STUDENT (an HF directory, e.g. a pruned model from
    `convert --format hf`), with KL divergence of softened logits on chat-formatted dialogue."""
    from converters.distill import DistillConfig, config_dict, train_precision
    from converters.distill import distill as run_distill
    from converters.hf_writer import write_hf
    from edgechat.core.files import staging
    from edgechat.reports.progress import Steps
    from edgechat.core.sources import load_model

    rank, world = init_distributed(device)
    cfg = DistillConfig(steps=steps, micro_batch=micro_batch, grad_accum=grad_accum, seq_len=seq_len, lr=lr,
                        warmup_steps=warmup_steps, temperature=temperature, alpha_ce=alpha_ce,
                        beta_hidden=beta_hidden, seed=seed, data=data, checkpoint=checkpoint,
                        checkpoint_every=checkpoint_every, device=device, loss_chunk=loss_chunk)
    apply_teacher_data(cfg, **tdata)
    train_precision(cfg)  # a bad value fails here, before the models load
    from edgechat.app.teacher_data import check_config

    check_config(cfg)
    t_model, s_model = load_model(teacher), load_model(student)
    if budget_minutes is not None:
        from converters.budget import plan_budget

        cfg.steps = plan_budget(t_model, cfg, budget_minutes, student=s_model).steps
    with Steps(enabled=rank == 0) as steps_ui:
        dataset = distill_dataset(t_model, cfg, steps_ui, rank, world, student=s_model)
        from edgechat.app.distill_data import resampler

        resample = resampler(dataset, cfg, s_model) if dataset else None
        run_distill(t_model, s_model, cfg, progress=steps_ui, dataset=dataset.packed(cfg.seq_len) if dataset else None,
                    resample=resample)
    if rank == 0:
        with staging(out_dir) as tmp:
            write_hf(s_model, tmp)
        if log_path:
            precision = train_precision(cfg, hidden_size=s_model.config.hidden_size)
            log_path.write_text(json.dumps({"world_size": world, "config": config_dict(cfg), "precision": precision,
                                            "teacher_data": dataset.record() if dataset else None,
                                            "resampled": resample.stats if resample else None,
                                            "log": [list(x) for x in cfg.log]}, indent=1) + "\n")
    if world > 1:
        import torch

        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


COMPRESSION_OPTIONS = [
    click.option("--recipe", type=click.Path(), help="A TOML recipe: [prune], [distill], [export], [gate] "
                 "(see README). Options given here override it."),
    click.option("--prune-layers", type=int, help="Drop N decoder blocks, the least important on calibration text."),
    click.option("--prune-ffn", type=float, help="Remove this fraction of MLP channels in every layer."),
    click.option("--prune-heads", type=int, help="Remove N attention heads per layer (whole KV groups)."),
    click.option("--prune-hidden", type=float, help="Remove this fraction of the hidden size."),
    click.option("--target-params", type=float, help="Prune to this fraction of the parameters (chooses among the above)."),
    click.option("--prune-strategy", type=click.Choice(["width", "depth", "mixed"]),
                 help="With --target-params: width (MLP/hidden/heads, the default), depth (blocks) or mixed."),
    click.option("--distill-steps", type=int, help="Distill the pruned student from the source for N steps."),
    *TEACHER_DATA_OPTIONS,
    click.option("--max-kld", type=float, help="Quality gate: fail if an artifact's mean KLD vs the source exceeds X."),
    click.option("--max-ppl-ratio", type=float, help="Quality gate: fail if artifact/source perplexity exceeds R."),
]


def compression_options(fn):
    for opt in reversed(COMPRESSION_OPTIONS):
        fn = opt(fn)
    return fn


def recipe_from_cli(recipe=None, prune_layers=None, prune_ffn=None, prune_heads=None, prune_hidden=None,
                    target_params=None, prune_strategy=None, distill_steps=None, max_kld=None, max_ppl_ratio=None,
                    **tdata):
    """The recipe file (if any) with the command-line options laid over it; None when nothing is asked."""
    from converters.distill import DistillConfig
    from edgechat.app.recipe import Recipe, load_recipe

    r = load_recipe(recipe) if recipe else Recipe()
    for key, value in (("layers", prune_layers), ("ffn", prune_ffn), ("heads", prune_heads), ("hidden", prune_hidden),
                       ("target_params", target_params), ("strategy", prune_strategy)):
        if value is not None:
            setattr(r.prune, key, value)
    if distill_steps is not None or any(v is not None for v in tdata.values()):
        r.distill = r.distill or DistillConfig()
        if distill_steps is not None:
            r.distill.steps = distill_steps
        apply_teacher_data(r.distill, **tdata)
    if max_kld is not None:
        r.gate.max_kld = max_kld
    if max_ppl_ratio is not None:
        r.gate.max_ppl_ratio = max_ppl_ratio
    if not (recipe or r.prune.active or r.distill or r.gate.active):
        return None
    return r
