"""edgechat serve: an OpenAI-compatible HTTP endpoint (chat completions, models, health) over the Chat API,
on Starlette + uvicorn as llama-cpp-python's server is. One Chat per artifact; each has one worker thread,
so its requests run one at a time in arrival order and never share a KV cache mid-reply. Requests are
stateless (each carries the whole conversation): a request that repeats the previous one's prefix reuses
its cache, because the Chat keeps the ids it last ran (`_cached`) and prefills only what differs.
A stream sends its first piece at once and then at most one chunk per `stream_interval_s` (all the text decoded
since the last): on an edge device the client shares the cores with the engine, and every chunk it parses
preempts an engine thread (vLLM's --stream-interval makes the same trade in tokens)."""
from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from edgechat.app.chat import Chat
from edgechat.app.sampling import SamplingParams
from edgechat.app.serve_request import STREAM_INTERVAL_S, ApiError, CompletionRequest, parse_completion
from edgechat.core.errors import EdgechatError

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}


@dataclass
class Served:
    """One artifact behind the endpoint: its Chat and the one thread that runs it."""
    name: str
    chat: Chat
    created: int = field(default_factory=lambda: int(time.time()))
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="edgechat"))

    def entry(self) -> dict:
        e = self.chat.engine
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "edgechat",
                "edgechat": {"engine": e.name, "n_ctx": e.n_ctx, "path": e.model_path}}


class StopScanner:
    """Finds stop sequences in streamed text: holds back the tail that could begin one, cuts at the first."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops, self.held, self.hit = stops, "", False
        self.keep = max((len(s) for s in stops), default=1) - 1

    def feed(self, piece: str) -> str:
        if self.hit:
            return ""
        text = self.held + piece
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.hit, self.held = True, ""
            return text[:min(cuts)]
        split = max(len(text) - self.keep, 0) if self.stops else len(text)
        self.held = text[split:]
        return text[:split]

    def flush(self) -> str:
        out, self.held = self.held, ""
        return "" if self.hit else out


def run_completion(served: Served, req: CompletionRequest, emit, cancelled, interval_s: float = 0.0) -> dict:
    """In the model's worker thread: the request's conversation on its Chat, the reply's text sent to `emit`
    (after the prompt is checked against the context: emit("start")): the first piece at once, then what came
    since the last send once `interval_s` has passed, and the rest as soon as the reply ends; the result back."""
    chat = served.chat
    chat.system = req.system
    chat.messages = list(req.messages)
    ids = chat.prompt_ids(chat.messages)
    n_ctx = chat.engine.n_ctx
    if len(ids) >= n_ctx:
        raise ApiError(400, f"This model's maximum context length is {n_ctx} tokens. However, your messages "
                            f"resulted in {len(ids)} tokens.", param="messages", code="context_length_exceeded")
    emit(("start", None))
    scanner = StopScanner(req.stop)
    params = SamplingParams(**{**vars(chat.params), **req.sampling})
    parts, sent, last = [], 0, -float("inf")
    gen = chat._stream(chat._generate(ids, params, as_turn=True, until=lambda: scanner.hit or cancelled()), 0)
    for piece in gen:
        out = scanner.feed(piece)
        if out:
            parts.append(out)
            now = time.perf_counter()
            if now - last >= interval_s:
                emit(("piece", "".join(parts[sent:])))
                sent, last = len(parts), now
    parts.append(scanner.flush())
    rest = "".join(parts[sent:])
    if rest:
        emit(("piece", rest))
    reply = chat.last_reply
    text = "".join(parts) if scanner.hit else reply.text
    return {"text": text, "stats": reply.stats, "finish": "stop" if scanner.hit else FINISH[reply.stats.stop_reason]}


def usage(stats) -> dict:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_tokens}}


def extension(served: Served, stats) -> dict:
    """edgechat's own figures for the reply (the OpenAI schema has no place for them)."""
    return {"engine": served.chat.engine.name, "ttft_s": stats.ttft_s, "prefill_tok_s": stats.prefill_tok_s,
            "decode_tok_s": stats.decode_tok_s, "energy_j": stats.energy_j, "energy_source": stats.energy_source,
            "j_per_token": stats.j_per_token, "cached_tokens": stats.cached_tokens, "stop_reason": stats.stop_reason,
            "peak_rss_mb": stats.peak_rss_mb}


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}},
                        status_code=e.status, headers=e.headers)


def build_app(served: list[Served], api_key: str | None = None, stream_interval_s: float = STREAM_INTERVAL_S
              ) -> Starlette:
    models = {s.name: s for s in served}

    def authorized(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(401, "Incorrect API key provided." if token else "Missing API key: send the header "
                           "'Authorization: Bearer KEY'.", code="invalid_api_key")

    async def health(request: Request):
        authorized(request)
        return JSONResponse({"status": "ok", "models": list(models)})

    async def list_models(request: Request):
        authorized(request)
        return JSONResponse({"object": "list", "data": [s.entry() for s in served]})

    async def completions(request: Request):
        authorized(request)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"We could not parse the JSON body of your request: {e}") from None
        req = parse_completion(body, models)
        s = models[req.model]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        gone = False
        def emit(item):  # a non-streamed reply needs only its start: no wake-up of this loop per token
            if req.stream or item[0] == "start":
                loop.call_soon_threadsafe(queue.put_nowait, item)
        future = asyncio.wrap_future(s.worker.submit(run_completion, s, req, emit, lambda: gone,
                                                     stream_interval_s if req.stream else 0.0))
        first = asyncio.ensure_future(queue.get())
        await asyncio.wait([first, future], return_when=asyncio.FIRST_COMPLETED)
        if not first.done():  # refused before it started (the prompt is over the context)
            first.cancel()
            future.result()
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not req.stream:
            result = await future
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": s.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result["text"]},
                             "finish_reason": result["finish"], "logprobs": None}],
                "usage": usage(result["stats"]), "edgechat": extension(s, result["stats"])})

        def chunk(delta: dict, finish=None, **extra) -> str:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": s.name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
            return f"data: {json.dumps(body)}\n\n"

        # a piece's event is this around its JSON-quoted text: one small dumps per token, not the whole body
        head, tail = chunk({"content": "\0"}).split(json.dumps("\0"))
        end = object()
        future.add_done_callback(lambda _f: queue.put_nowait((end, None)))  # after every piece the worker sent

        async def events():
            nonlocal gone
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:  # one await per piece (no task per token: the server's CPU competes with the engine's)
                    kind, text = await queue.get()
                    if kind is end:
                        break
                    yield head + json.dumps(text) + tail
                result = future.result()
                yield chunk({}, result["finish"], usage=usage(result["stats"]), edgechat=extension(s, result["stats"]))
                yield "data: [DONE]\n\n"
            finally:
                gone = True  # a client that went away mid-stream: the worker ends the reply at its next piece

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def api_error(request: Request, exc: ApiError):
        return error_response(exc)

    async def engine_error(request: Request, exc: EdgechatError):  # e.g. non-finite logits: the model's fault
        return error_response(ApiError(500, str(exc)))

    async def http_error(request: Request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                       code=kind))

    return Starlette(routes=[Route("/health", health), Route("/v1/models", list_models),
                             Route("/v1/chat/completions", completions, methods=["POST"])],
                     exception_handlers={ApiError: api_error, EdgechatError: engine_error,
                                         HTTPException: http_error})


def open_served(artifacts: list[str], target: str = "host", n_ctx=None, threads: int | None = None,
                quant: str | None = None) -> list[Served]:
    """One Chat per artifact, named by its file (the `model` a request names)."""
    from edgechat.app.api import load

    served = []
    for a in artifacts:
        chat = load(a, target=target, n_ctx=n_ctx, threads=threads, quant=quant)
        name = Path(chat.engine.model_path or a).name
        if any(s.name == name for s in served):
            raise EdgechatError(f"two artifacts are named {name}: serve them from separate directories' names "
                                "or one at a time")
        served.append(Served(name, chat))
    return served


def bind(host: str, port: int):
    """The listening socket, bound before uvicorn starts so port 0 (any free port) can be reported."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise EdgechatError(f"cannot listen on {host}:{port}: {e.strerror}; choose another --port") from None
    sock.listen(128)
    return sock


def run(served: list[Served], sock, api_key: str | None = None, stream_interval_s: float = STREAM_INTERVAL_S
        ) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM), then close the engines."""
    import uvicorn

    config = uvicorn.Config(build_app(served, api_key, stream_interval_s), log_level="warning", access_log=False,
                            lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for s in served:
            s.worker.shutdown(wait=True, cancel_futures=True)
            s.chat.engine.close()
        sock.close()
