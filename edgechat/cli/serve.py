"""`edgechat serve`: the OpenAI-compatible endpoint (edgechat/app/serve.py) from the command line."""
from __future__ import annotations

import click

from edgechat.app.serve_request import STREAM_INTERVAL_S
from edgechat.cli.options import n_ctx_option


@click.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default is this machine only; 0.0.0.0 exposes it to the network.")
@click.option("--port", default=8080, show_default=True, help="TCP port (0: any free port, printed at start).")
@click.option("--target", default="host", show_default=True, help="Profile whose threads, power figures and memory "
              "budget apply (`edgechat targets list`).")
@click.option("--api-key", envvar="EDGECHAT_API_KEY", help="Require 'Authorization: Bearer KEY' on every request "
              "(default: $EDGECHAT_API_KEY; none: open to whoever reaches the port).")
@n_ctx_option(default=2048)
@click.option("--threads", type=int, help="CPU threads per model (default: the target's).")
@click.option("--quant", help="In an output directory with several artifacts, the one to serve.")
@click.option("--stream-interval-ms", type=click.FloatRange(min=0), default=1e3 * STREAM_INTERVAL_S,
              show_default=True, help="A stream sends its first token at once, then at most one chunk per this "
              "many ms with the text decoded since (0: a chunk per token). Each chunk costs the client CPU that "
              "an engine sharing its cores loses.")
def serve(artifacts, host, port, target, api_key, n_ctx, threads, quant, stream_interval_ms):
    """Serve ARTIFACTS (.gguf, .pte, output or HF directories) over an OpenAI-compatible API:
    POST /v1/chat/completions (streamed as server-sent events with "stream": true), GET /v1/models (one entry
    per artifact, named by its file), GET /health. Each reply carries `usage` and edgechat's own figures
    (ttft_s, decode_tok_s, energy_j, energy_source) under "edgechat". Sampling fields a request leaves out take
    edgechat's defaults (greedy, 256 tokens). Each model serves its requests one at a time, in arrival order."""
    from edgechat.app.serve import bind, open_served, run

    served = open_served(list(artifacts), target=target, n_ctx=n_ctx, threads=threads, quant=quant)
    sock = bind(host, port)
    addr = sock.getsockname()
    where = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    names = ", ".join(f"{s.name} (n_ctx {s.chat.engine.n_ctx})" for s in served)
    click.echo(f"edgechat: serving {names} on http://{where}:{addr[1]}/v1"
               f"{' (API key required)' if api_key else ''}; Ctrl-C stops", err=True)
    run(served, sock, api_key, stream_interval_ms / 1e3)
