"""The edgechat command line: the group, chat, eval, inspect and profile; convert, distill, serve, targets and plan,
and tune live in their own modules."""
from __future__ import annotations

import sys
from pathlib import Path

import click

import runtimes
from edgechat.cli.options import emit_json, n_ctx_option
from edgechat.core.errors import EdgechatError

SAMPLING = [
    click.option("--max-tokens", default=256, show_default=True, help="Most tokens to generate per reply."),
    click.option("--temperature", default=0.0, show_default=True, help="0 is greedy decoding."),
    click.option("--top-p", default=1.0, show_default=True, help="Nucleus sampling mass (with temperature > 0)."),
    click.option("--top-k", default=0, show_default=True, help="Keep the k likeliest tokens (0: off)."),
    click.option("--seed", default=None, type=int, help="Sampling seed, for repeatable sampled replies."),
    click.option("--frequency-penalty", type=click.FloatRange(-2, 2), default=0.0, show_default=True,
                 help="Lower each token's logit by this for every time the reply already said it (OpenAI's; "
                      "against loops)."),
    click.option("--presence-penalty", type=click.FloatRange(-2, 2), default=0.0, show_default=True,
                 help="Lower the logit of every token the reply already said by this, once (OpenAI's)."),
]


def sampling_options(fn):
    for opt in reversed(SAMPLING):
        fn = opt(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgechat")
def cli():
    """edgechat: put dialogue language models on edge devices.

    Convert a checkpoint to GGUF (llama.cpp) artifacts with a measured quality, chat with any artifact
    through one API, and evaluate or inspect it. SOURCE is a Hugging Face checkpoint directory or a
    .gguf file; with none, the embedded SmolLM2-135M-Instruct is used."""


@cli.command()
@click.argument("artifact", required=False)
@click.option("--prompt", help="Ask one question, print the reply and exit (no REPL).")
@click.option("--system", help="System message (default: the chat template's own, if any).")
@sampling_options
@click.option("--engine", type=click.Choice(list(runtimes.ENGINES)), help="Force an engine (torch: fp32 reference).")
@click.option("--quant", help="In an output directory with several artifacts, the one to run.")
@n_ctx_option(default=2048)
@click.option("--target", default="host", show_default=True,
              help="Profile whose memory budget the fit check holds the model to, and whose power figures apply.")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="With --prompt: print the reply and its stats as JSON.")
def chat(artifact, prompt, system, max_tokens, temperature, top_p, top_k, seed, frequency_penalty, presence_penalty,
         engine, quant, n_ctx, target, threads, as_json):
    """Chat with ARTIFACT (.gguf, output directory or HF directory; default: the embedded model).

    Without --prompt, an interactive session: /reset clears the history, /exit (or Ctrl-D) quits."""
    import edgechat

    c = edgechat.load(artifact, target=target, engine=engine, system=system, n_ctx=n_ctx, threads=threads, quant=quant,
                      max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                      frequency_penalty=frequency_penalty, presence_penalty=presence_penalty)
    if prompt is not None:
        if as_json:
            r = c.send(prompt)
            emit_json({"text": r.text, "token_ids": r.token_ids, "stats": r.stats.as_dict()})
            return
        for piece in c.send(prompt, stream=True):
            click.echo(piece, nl=False)
        click.echo()
        return
    from edgechat.cli.repl import repl

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
    from edgechat.app.api import open_engine
    from edgechat.core.data import read_eval_data
    from edgechat.app.evaluate import evaluate
    from edgechat.reports.progress import Steps
    from edgechat.core.sources import load_model
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
    from edgechat.reports.tables import kv_table

    kv_table(f"{Path(engine.model_path).name} vs {reference}", q.as_dict())


@cli.command()
@click.argument("artifact", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def inspect(artifact, as_json):
    """Show what ARTIFACT holds: architecture, sizes, quant types, tokenizer, template, manifest."""
    from edgechat.app.inspect import describe, text_view
    from edgechat.reports.tables import kv_table

    info = describe(artifact)
    if as_json:
        emit_json(info)
    else:
        kv_table(str(artifact or "default model"), text_view(info))


@cli.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--target", default="host", show_default=True,
              help="Profile whose threads and power figures apply, and whose speed estimate is shown beside the "
                   "measured one (the run itself is on this machine).")
@click.option("--prompts", help="A text file (one prompt a line), a .jsonl ({\"turns\": [...]} or {\"prompt\": ...}), "
              "or mtbench (MT-Bench's two-turn questions). Default: 4 built-in prompts.")
@click.option("--max-prompts", type=int, help="Use only the first N prompts (conversations).")
@click.option("--runs", default=3, show_default=True, help="Rounds over all prompts; the artifact order rotates.")
@click.option("--max-tokens", default=64, show_default=True, help="Most tokens generated per reply.")
@click.option("--n-ctx", default=1024, show_default=True, help="Context window in tokens.")
@click.option("--threads", type=int, help="CPU threads (default: the target's).")
@click.option("--power", help="auto (a power reader if one works, else an estimate), estimate, or a reader: "
              "rapl, nvml, power_supply, rpi_pmic, powermetrics. Default: $EDGECHAT_POWER or auto.")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path),
              help="Write profile.json, profile.csv, profile.md and profile.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def profile(artifacts, target, prompts, max_prompts, runs, max_tokens, n_ctx, threads, power, out_dir, as_json):
    """Run each of ARTIFACTS in its own process on the same prompts, interleaved, and tabulate prefill and
    decode speed (mean ± sd), TTFT, inter-token latency, joules per token and peak RSS, with the machine's
    load during the run (a warning when other processes were busy)."""
    from edgechat.app.profiling import run_profiling, write_profiling
    from edgechat.reports.profiling import show

    result = run_profiling(list(artifacts), prompts, runs, max_tokens, threads, target=target, n_ctx=n_ctx,
                           max_prompts=max_prompts, power=power, progress=not as_json)
    if out_dir:
        written = write_profiling(result, out_dir)
        if not as_json:
            click.echo(f"wrote {', '.join(str(p) for p in written)}", err=True)
    if as_json:
        emit_json(result)
    else:
        show(result)
    if result["machine"]["warning"]:
        click.echo(f"edgechat: warning: {result['machine']['warning']}", err=True)


def _add_commands():
    from edgechat.cli.compress import distill
    from edgechat.cli.convert import convert
    from edgechat.cli.serve import serve
    from edgechat.cli.targets import plan, targets
    from edgechat.cli.tune import tune

    cli.add_command(convert)
    cli.add_command(distill)
    cli.add_command(serve)
    cli.add_command(targets)
    cli.add_command(plan)
    cli.add_command(tune)


_add_commands()


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so every `finally` (staging directories, engines) runs as for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _install_signals() -> None:
    import signal

    if threading_main():
        signal.signal(signal.SIGTERM, _on_sigterm)
        # with a file-size limit (RLIMIT_FSIZE) the kernel would kill us mid-write: take EFBIG as an error instead
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def disk_error(e: OSError) -> str | None:
    """One line for the write failures a user fixes by freeing space or raising a limit."""
    import errno

    reasons = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "a file would pass the file-size limit",
               errno.EDQUOT: "the disk quota is exceeded", errno.EROFS: "the file system is read-only"}
    if e.errno is None and "requested and" in str(e) and "written" in str(e):  # numpy's tofile on a short write
        return ("a write was cut short (the disk is full or a file-size limit was reached): nothing was written; "
                "free space (or raise the limit) and run it again")
    if e.errno not in reasons:
        return None
    where = f" writing {e.filename}" if e.filename else ""
    return f"{reasons[e.errno]}{where}: nothing was written; free space (or raise the limit) and run it again"


def main(argv=None):
    _install_signals()
    try:
        rv = cli.main(args=argv, prog_name="edgechat", standalone_mode=False)  # `python -m` too
        sys.exit(rv if isinstance(rv, int) else 0)
    except EdgechatError as e:
        click.echo(f"edgechat: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        if isinstance(e, click.UsageError) and not isinstance(e, click.exceptions.NoArgsIsHelpError):
            # a bad option or value: one line like every other error, not click's usage block (a bare group
            # still shows its help)
            see = f"; see `{e.ctx.command_path} --help`" if e.ctx else ""
            click.echo(f"edgechat: error: {e.format_message().rstrip('.')}{see}", err=True)
        else:
            e.show()
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(143)
    except OSError as e:
        message = disk_error(e)
        if message is None:
            raise
        click.echo(f"edgechat: error: {message}", err=True)
        sys.exit(2)

