"""The edgechat command line: convert, chat, eval, inspect, profile."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgechat.errors import EdgechatError

SAMPLING = [
    click.option("--max-tokens", default=256, show_default=True, help="Most tokens to generate per reply."),
    click.option("--temperature", default=0.0, show_default=True, help="0 is greedy decoding."),
    click.option("--top-p", default=1.0, show_default=True, help="Nucleus sampling mass (with temperature > 0)."),
    click.option("--top-k", default=0, show_default=True, help="Keep the k likeliest tokens (0: off)."),
    click.option("--seed", default=None, type=int, help="Sampling seed, for repeatable sampled replies."),
]


def sampling_options(fn):
    for opt in reversed(SAMPLING):
        fn = opt(fn)
    return fn


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgechat")
def cli():
    """edgechat: put dialogue language models on edge devices.

    Convert a checkpoint to GGUF (llama.cpp) artifacts with a measured quality, chat with any artifact
    through one API, and evaluate or inspect it. SOURCE is a Hugging Face checkpoint directory or a
    .gguf file; with none, the embedded SmolLM2-135M-Instruct is used."""


@cli.command()
@click.argument("source", required=False)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output directory: artifacts, tokenizer, chat template and the edgechat.json manifest.")
@click.option("--format", "formats", multiple=True, default=["gguf"], show_default=True,
              help="gguf (llama.cpp) or hf (a Hugging Face checkpoint directory). Repeatable.")
@click.option("--quant", "quants", multiple=True,
              help="gguf: f32, f16, q8_0, q4_0, q4_k_m (default q4_k_m). Repeatable: one load, many artifacts.")
@click.option("--imatrix", is_flag=True, help="Quantize Q4_0/Q4_K_M with an importance matrix from --calib text.")
@click.option("--calib", type=click.Path(), help="Calibration text for --imatrix (default: chit-chat dialogues).")
@click.option("--eval-data", type=click.Path(), help="Text for the manifest's quality figures "
              "(default: 20 held-out chit-chat dialogues). Raw text, DailyDialog or JSONL.")
@click.option("--no-eval", is_flag=True, help="Skip the quality measurement.")
@click.option("--threads", type=int, help="CPU threads (default: all cores of this machine).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def convert(source, out_dir, formats, quants, imatrix, calib, eval_data, no_eval, threads, as_json):
    """Convert SOURCE into artifacts in OUTPUT, with quality figures vs the fp32 model."""
    from edgechat.pipeline import ConvertOptions, convert as run_convert
    from edgechat.progress import Steps

    opts = ConvertOptions(formats=list(formats), quants=[q.lower() for q in quants], imatrix=imatrix,
                          calib=calib, eval_data=eval_data, evaluate=not no_eval, threads=threads)
    with Steps(enabled=not as_json) as steps:
        manifest = run_convert(source, out_dir, opts, steps)
    if as_json:
        emit_json(manifest)
        return
    from edgechat.report import artifact_table

    artifact_table(manifest, out_dir)


@cli.command()
@click.argument("artifact", required=False)
@click.option("--prompt", help="Ask one question, print the reply and exit (no REPL).")
@click.option("--system", help="System message (default: the chat template's own, if any).")
@sampling_options
@click.option("--engine", type=click.Choice(["llama.cpp", "torch"]), help="Force an engine (torch: fp32 reference).")
@click.option("--quant", help="In an output directory with several artifacts, the one to run.")
@click.option("--n-ctx", type=int, default=2048, show_default=True, help="Context window in tokens.")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="With --prompt: print the reply and its stats as JSON.")
def chat(artifact, prompt, system, max_tokens, temperature, top_p, top_k, seed, engine, quant, n_ctx, threads, as_json):
    """Chat with ARTIFACT (.gguf, output directory or HF directory; default: the embedded model).

    Without --prompt, an interactive session: /reset clears the history, /exit (or Ctrl-D) quits."""
    import edgechat

    c = edgechat.load(artifact, engine=engine, system=system, n_ctx=n_ctx, threads=threads, quant=quant,
                      max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    if prompt is not None:
        if as_json:
            r = c.send(prompt)
            emit_json({"text": r.text, "token_ids": r.token_ids, "stats": r.stats.as_dict()})
            return
        for piece in c.send(prompt, stream=True):
            click.echo(piece, nl=False)
        click.echo()
        return
    from edgechat.report import repl

    repl(c)


@cli.command(name="eval")
@click.argument("artifact")
@click.option("--reference", required=True, help="The fp32 reference SOURCE (HF directory or .gguf).")
@click.option("--data", type=click.Path(), help="Raw text (llama.cpp perplexity chunks), DailyDialog "
              "(__eou__, assistant turns scored) or JSONL chats. Default: held-out chit-chat dialogues.")
@click.option("--n-ctx", type=int, default=512, show_default=True, help="Chunk / window length in tokens.")
@click.option("--chunks", type=int, default=40, show_default=True, help="Most chunks of raw text to score.")
@click.option("--dialogues", type=int, default=30, show_default=True, help="Most dialogues to score.")
@click.option("--quant", help="In an output directory with several artifacts, the one to evaluate.")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_cmd(artifact, reference, data, n_ctx, chunks, dialogues, quant, threads, as_json):
    """Perplexity, mean KL divergence and top-1 agreement of ARTIFACT against the fp32 REFERENCE."""
    from edgechat.api import open_engine
    from edgechat.data import read_eval_data
    from edgechat.evaluate import evaluate
    from edgechat.progress import Steps
    from edgechat.sources import load_model
    from runtimes.torch_engine import TorchEngine

    dataset = read_eval_data(data, max_dialogues=dialogues)
    with Steps(enabled=not as_json) as steps:
        steps.step(f"loading {artifact} and the reference {reference}")
        engine = open_engine(artifact, n_ctx=n_ctx, threads=threads, quant=quant, logits_all=True)
        ref = TorchEngine(load_model(reference), n_ctx=n_ctx, threads=threads)
        total = len(dataset.dialogues) if dataset.kind == "dialogues" else None
        advance = steps.step(f"scoring {dataset.name}", total=total)
        q = evaluate(engine, ref, dataset, n_ctx=n_ctx, max_chunks=chunks, on_sequence=advance)
    if as_json:
        emit_json(q.as_dict())
        return
    from edgechat.report import kv_table

    kv_table(f"{Path(engine.model_path).name} vs {reference}", q.as_dict())


@cli.command()
@click.argument("artifact", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def inspect(artifact, as_json):
    """Show what ARTIFACT holds: architecture, sizes, quant types, tokenizer, template, manifest."""
    from edgechat.inspect import describe
    from edgechat.report import kv_table

    info = describe(artifact)
    if as_json:
        emit_json(info)
    else:
        kv_table(str(artifact or "default model"), info)


@cli.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--prompts", type=click.Path(), help="A text file, one prompt a line (default: 4 built-in prompts).")
@click.option("--runs", default=3, show_default=True, help="Rounds over all prompts; artifacts interleave.")
@click.option("--max-tokens", default=64, show_default=True, help="Tokens generated per prompt.")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), help="Write profile.json and profile.md here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def profile(artifacts, prompts, runs, max_tokens, threads, out_dir, as_json):
    """Run each of ARTIFACTS on the same prompts, interleaved, and tabulate speed and memory."""
    from edgechat.profile import run_profile, write_profile

    result = run_profile(list(artifacts), prompts, runs, max_tokens, threads, progress=not as_json)
    if out_dir:
        write_profile(result, out_dir)
    if as_json:
        emit_json(result)
    else:
        from edgechat.report import profile_table

        profile_table(result)


def main(argv=None):
    try:
        rv = cli.main(args=argv, standalone_mode=False)
        sys.exit(rv if isinstance(rv, int) else 0)
    except EdgechatError as e:
        click.echo(f"edgechat: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
