"""A chat-completions request body checked field by field, as OpenAI's API checks it: each bad field is a
4xx with an OpenAI-shaped error (message, type, param, code), never a traceback."""
from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "developer", "user", "assistant")  # developer: OpenAI's newer name for system
UNSUPPORTED = {"tools": None, "functions": None, "tool_choice": None, "logprobs": False, "top_logprobs": None,
               "audio": None, "modalities": None}  # field -> the value that means "not used"
STREAM_INTERVAL_S = 0.05  # a stream's chunks at most 20 a second: smooth to the eye, 1/5 of them at 100 tok/s


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None


@dataclass
class CompletionRequest:
    model: str
    system: str | None
    messages: list[dict]  # user and assistant turns, in order
    sampling: dict = field(default_factory=dict)  # SamplingParams fields the request sets
    stop: tuple[str, ...] = ()
    stream: bool = False


def _number(body: dict, name: str, lo: float, hi: float, lo_open: bool = False, integer: bool = False):
    v = body.get(name)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        raise ApiError(400, f"Invalid type for '{name}': expected {'an integer' if integer else 'a number'}, "
                            f"but got {type(v).__name__}.", param=name, code="invalid_type")
    if v < lo or v > hi or (lo_open and v == lo):
        bound = f"{'greater than' if lo_open else 'at least'} {lo:g}" + (f" and at most {hi:g}" if hi != float("inf") else "")
        raise ApiError(400, f"Invalid '{name}': {v} must be {bound}.", param=name, code="invalid_value")
    return v


def _content(m: dict, i: int) -> str:
    c = m.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                   for p in c):
        return "".join(p["text"] for p in c)
    raise ApiError(400, f"Invalid 'messages[{i}].content': a string or a list of text parts is expected "
                        "(this endpoint serves text models).", param=f"messages[{i}].content", code="invalid_value")


def parse_completion(body, models: dict) -> CompletionRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if model not in models:
        raise ApiError(404, f"The model '{model}' does not exist: this server has {', '.join(models)}.",
                       param="model", code="model_not_found")
    msgs = body.get("messages")
    if msgs is None:
        raise ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                       code="missing_required_parameter")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "Invalid 'messages': expected a non-empty array of messages.", param="messages",
                       code="invalid_value")
    system, turns = [], []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            got = m.get("role") if isinstance(m, dict) else type(m).__name__
            raise ApiError(400, f"Invalid 'messages[{i}].role': {got!r}; supported roles are {', '.join(ROLES)}.",
                           param=f"messages[{i}].role", code="invalid_value")
        text = _content(m, i)
        if m["role"] in ("system", "developer"):
            system.append(text)
        else:
            turns.append({"role": m["role"], "content": text})
    if not turns:
        raise ApiError(400, "Invalid 'messages': there must be at least one user or assistant message.",
                       param="messages", code="invalid_value")
    for name, unused in UNSUPPORTED.items():
        if body.get(name) not in (None, unused):
            raise ApiError(400, f"'{name}' is not supported by edgechat serve.", param=name, code="unsupported_parameter")
    n = _number(body, "n", 1, 1, integer=True)
    if n not in (None, 1):
        raise ApiError(400, "Invalid 'n': only one choice per request is supported.", param="n", code="invalid_value")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise ApiError(400, "Invalid 'response_format': only {'type': 'text'} is supported.",
                       param="response_format", code="unsupported_parameter")
    sampling = {
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": _number(body, "top_p", 0, 1, lo_open=True),
        "top_k": _number(body, "top_k", 0, float("inf"), integer=True),  # llama.cpp servers' extension
        "frequency_penalty": _number(body, "frequency_penalty", -2, 2),
        "presence_penalty": _number(body, "presence_penalty", -2, 2),
        "seed": _number(body, "seed", -2**63, 2**64 - 1, integer=True),
        "max_tokens": _number(body, "max_completion_tokens", 1, float("inf"), integer=True)
        or _number(body, "max_tokens", 1, float("inf"), integer=True),
    }
    if sampling["seed"] is not None and sampling["seed"] < 0:
        sampling["seed"] %= 2**64  # numpy's generators take non-negative seeds
    stop = body.get("stop")
    if stop is None:
        stops = ()
    elif isinstance(stop, str) and stop:
        stops = (stop,)
    elif isinstance(stop, list) and 0 < len(stop) <= 4 and all(isinstance(s, str) and s for s in stop):
        stops = tuple(stop)
    else:
        raise ApiError(400, "Invalid 'stop': a non-empty string or an array of up to 4 non-empty strings.",
                       param="stop", code="invalid_value")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"Invalid type for 'stream': expected a boolean, but got {type(stream).__name__}.",
                       param="stream", code="invalid_type")
    return CompletionRequest(model, "\n\n".join(system) or None, turns,
                             {k: v for k, v in sampling.items() if v is not None}, stops, stream)
