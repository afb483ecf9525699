"""`edgechat targets` (the device profiles) and `edgechat plan` (a SOURCE's placement and quant for one of them)."""
from __future__ import annotations

import click

from edgechat.cli.options import emit_json
from targets import schemes
from targets.plan_types import DEFAULT_QUANTS


@click.group(invoke_without_command=True)
@click.pass_context
def targets(ctx):
    """Device profiles (targets/profiles/*.toml; `host` is this machine, measured at run time)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(targets_list)


@targets.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def targets_list(as_json=False):
    """List the device profiles."""
    from targets import list_profiles

    from edgechat.app.targeting import get_profile

    profiles = [get_profile(n, measure=False) for n in list_profiles()]
    if as_json:
        emit_json([p.to_dict() for p in profiles])
        return
    from edgechat.reports.targets import targets_table

    targets_table(profiles)


@targets.command(name="show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def targets_show(name, as_json):
    """Show one profile (NAME, or a path to a .toml file); for host, what was measured."""
    from edgechat.app.targeting import get_profile

    p = get_profile(name)
    if as_json:
        emit_json(p.to_dict())
        return
    from edgechat.reports.targets import profile_view

    profile_view(p)


@click.command()
@click.argument("source", required=False)
@click.option("--target", required=True, help="A profile name (`edgechat targets list`) or a .toml file.")
@click.option("--format", "formats", multiple=True, type=click.Choice(schemes.formats()),
              help="Consider only these formats (default: both). Repeatable.")
@click.option("--quant", "quants", multiple=True, help="Consider only these quants (default: "
              f"{', '.join(q for qs in DEFAULT_QUANTS.values() for q in qs)}). Repeatable.")
@click.option("--n-ctx", default=2048, show_default=True, help="Context length the KV cache is sized for.")
@click.option("--prompt-tokens", default=128, show_default=True, help="Prompt length for the prefill estimate.")
@click.option("--min-tok-s", default=20.0, show_default=True,
              help="The most faithful quant estimated to decode at least this fast wins.")
@click.option("--as-is", is_flag=True, help="SOURCE is a .gguf or .pte artifact (a .pte in the folder `convert` "
              "wrote): plan only its placement, as quantized.")
@click.option("--on", "accelerator", help="Force the placement: cpu, or an accelerator's name (as many layers as "
              "fit on it), e.g. --on 'Hexagon NPU'.")
@click.option("--layers", is_flag=True, help="One row per layer (default: runs of identical layers folded).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(source, target, formats, quants, n_ctx, prompt_tokens, min_tok_s, as_is, accelerator, layers, as_json):
    """Plan SOURCE for a device: each layer's weights at the quant and the KV cache at n_ctx, estimated
    prefill and decode speed for every candidate placement, and the chosen format, quant and CPU/GPU/NPU
    split with the reasons. SOURCE: HF directory, .gguf, or an edgechat output directory (default: the
    embedded model)."""
    from edgechat.app.targeting import plan_for

    p = plan_for(source, target, formats=list(formats) or None, quants=[q.lower() for q in quants] or None,
                 n_ctx=n_ctx, prompt_tokens=prompt_tokens, min_decode_tok_s=min_tok_s, as_is=as_is,
                 accelerator=accelerator)
    from edgechat.app.fit import plan_fit

    fit = plan_fit(p)
    if as_json:
        emit_json({**p.to_dict(), "memory_estimate": fit})
        return
    from edgechat.reports.targets import plan_view

    plan_view(p, all_layers=layers, fit=fit)
