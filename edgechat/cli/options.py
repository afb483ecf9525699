"""Options shared by several commands."""
from __future__ import annotations

import click


class NCtx(click.ParamType):
    """A context length in tokens, or "auto": the largest the memory fit allows."""
    name = "N|auto"

    def convert(self, value, param, ctx):
        if value is None or value == "auto" or isinstance(value, int):
            return value
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of tokens nor 'auto'", param, ctx)
        if n < 1:
            self.fail(f"{n} is not a positive number of tokens", param, ctx)
        return n


def n_ctx_option(default):
    return click.option("--n-ctx", type=NCtx(), default=default, show_default=True,
                        help="Context window in tokens, or auto: the largest that fits the target's memory budget "
                             "and this machine's free memory (checked before loading).")


def emit_json(obj) -> None:
    import json

    click.echo(json.dumps(obj, indent=2, default=str))
