"""`edgechat serve` on a real socket (loopback only), talked to by the official openai client: stories260K as
an F32 GGUF and an fp32 .pte give the same text as Chat.send with the same settings, streamed or not; bad
requests get OpenAI-shaped errors; a client gone mid-stream frees the engine; a wrong API key gets 401."""
from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys

import pytest

from edgechat.app import serve_process
from tests.conftest import ROOT, artifact

openai = pytest.importorskip("openai")
PROMPT = [{"role": "user", "content": "Once upon a time"}]


def start_server(*args):
    return serve_process.start(*args, "--threads", "1")


def stop_server(proc):
    serve_process.stop(proc, timeout=30)


@pytest.fixture(scope="module")
def arts(stories_out):
    return {"gguf": artifact(stories_out, "gguf", "f32"), "pte": artifact(stories_out, "pte", "fp32")}


@pytest.fixture(scope="module")
def server(arts):
    proc, port = start_server(arts["gguf"], arts["pte"])
    yield port
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server}/v1", api_key="unused", max_retries=0)


def raw(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


SETTINGS = [dict(temperature=0.0, max_tokens=24), dict(temperature=0.8, top_p=0.9, seed=7, max_tokens=24),
            dict(temperature=0.0, frequency_penalty=0.8, presence_penalty=0.4, max_tokens=24)]


@pytest.mark.parametrize("fmt", ["gguf", "pte"])
@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy", "sampled", "penalized"])
def test_completions_match_chat_send(client, arts, fmt, settings):
    import edgechat

    chat = edgechat.load(arts[fmt], threads=1)
    want = chat.send(PROMPT[0]["content"], **settings)
    name = arts[fmt].name
    r = client.chat.completions.create(model=name, messages=PROMPT, **settings)
    assert r.choices[0].message.content == want.text and want.text
    assert r.usage.prompt_tokens == want.stats.prompt_tokens
    assert r.usage.completion_tokens == want.stats.completion_tokens
    assert r.choices[0].finish_reason == ("length" if want.stats.stop_reason == "length" else "stop")
    ext = r.model_extra["edgechat"]
    assert ext["ttft_s"] > 0 and ext["decode_tok_s"] > 0 and ext["energy_source"].startswith(("estimated", "measured"))
    assert ext["energy_j"] is not None and ext["engine"] == chat.engine.name
    pieces, last = [], None
    for chunk in client.chat.completions.create(model=name, messages=PROMPT, stream=True, **settings):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    assert "".join(pieces) == want.text
    assert last.usage.completion_tokens == want.stats.completion_tokens and "decode_tok_s" in last.model_extra["edgechat"]


@pytest.mark.parametrize("interval_ms", [0, 600000])
def test_stream_interval_sends_a_chunk_per_token_or_what_came_since(arts, interval_ms):
    """0: a chunk for every piece Chat.send streams; a long interval: the first piece at once, then the rest in one
    chunk when the reply ends (not held to the interval's end)."""
    import time

    import edgechat

    want = [w for w in edgechat.load(arts["gguf"], threads=1).send(PROMPT[0]["content"], stream=True,
                                                                    max_tokens=24, temperature=0) if w]
    assert len(want) > 2
    proc, port = start_server(arts["gguf"], "--stream-interval-ms", interval_ms)
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        t0 = time.monotonic()
        got = [ch.choices[0].delta.content for ch in c.chat.completions.create(
            model=arts["gguf"].name, messages=PROMPT, stream=True, max_tokens=24, temperature=0)
            if ch.choices and ch.choices[0].delta.content]
        took = time.monotonic() - t0
    finally:
        stop_server(proc)
    if interval_ms:
        assert got == [want[0], "".join(want[1:])] and took < 60  # the end is sent, not held for 10 minutes
    else:
        assert got == want


def test_models_lists_every_artifact(client, arts):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {arts["gguf"].name, arts["pte"].name}
    assert models[arts["pte"].name].model_extra["edgechat"]["engine"] == "executorch"


def test_health(server):
    assert raw(server, "GET", "/health") == (200, {"status": "ok", "models": ["stories260k-f32.gguf",
                                                                               "stories260k-fp32.pte"]})


def test_a_repeated_prefix_reuses_the_cache(client, arts):
    name = arts["gguf"].name
    first = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=8, temperature=0)
    convo = PROMPT + [{"role": "assistant", "content": first.choices[0].message.content},
                      {"role": "user", "content": "The end."}]
    again = client.chat.completions.create(model=name, messages=convo, max_tokens=8, temperature=0)
    assert again.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2


def test_stop_sequence_cuts_the_reply(client, arts):
    name = arts["gguf"].name
    full = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=24, temperature=0)
    text = full.choices[0].message.content
    word = text.split()[2]
    r = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=24, temperature=0, stop=[word])
    assert r.choices[0].message.content == text[:text.index(word)] and r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body, want", [
    (b"{not json", (400, "invalid_request_error", None, None)),
    ({"model": "nope.gguf", "messages": PROMPT}, (404, "invalid_request_error", "model_not_found", "model")),
    ({"model": "stories260k-f32.gguf"}, (400, "invalid_request_error", "missing_required_parameter", "messages")),
    ({"model": "stories260k-f32.gguf", "messages": PROMPT, "temperature": 5},
     (400, "invalid_request_error", "invalid_value", "temperature")),
    ({"model": "stories260k-f32.gguf", "messages": PROMPT, "frequency_penalty": 2.5},
     (400, "invalid_request_error", "invalid_value", "frequency_penalty")),
    ({"model": "stories260k-f32.gguf", "messages": PROMPT, "max_tokens": "many"},
     (400, "invalid_request_error", "invalid_type", "max_tokens")),
    ({"model": "stories260k-f32.gguf", "messages": [{"role": "robot", "content": "hi"}]},
     (400, "invalid_request_error", "invalid_value", "messages[0].role")),
    ({"model": "stories260k-fp32.pte", "messages": [{"role": "user", "content": "Once upon a time " * 60}]},
     (400, "invalid_request_error", "context_length_exceeded", "messages")),
], ids=["malformed-json", "unknown-model", "no-messages", "bad-temperature", "bad-penalty", "bad-max-tokens",
        "bad-role", "over-context"])
def test_bad_requests_get_openai_errors(server, body, want):
    status, got = raw(server, "POST", "/v1/chat/completions", body)
    assert (status, got["error"]["type"], got["error"]["code"], got["error"]["param"]) == want
    assert got["error"]["message"]


def test_over_context_message(server):
    status, got = raw(server, "POST", "/v1/chat/completions", {
        "model": "stories260k-fp32.pte", "messages": [{"role": "user", "content": "Once upon a time " * 60}]})
    assert re.fullmatch(r"This model's maximum context length is 128 tokens\. However, your messages resulted in "
                        r"\d+ tokens\.", got["error"]["message"])


def test_unknown_route_is_an_openai_404(server):
    status, got = raw(server, "GET", "/v1/nothing")
    assert status == 404 and got["error"]["code"] == "not_found"


def test_disconnect_mid_stream_frees_the_engine(client, server, arts):
    name = arts["gguf"].name
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=120)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(
        {"model": name, "messages": PROMPT, "stream": True, "max_tokens": 400, "temperature": 0}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    resp.readline()
    assert resp.readline().startswith(b"data: ")  # a content piece: the reply is under way
    conn.close()  # gone mid-stream
    import edgechat

    want = edgechat.load(arts["gguf"], threads=1).send(PROMPT[0]["content"], max_tokens=16)
    r = client.chat.completions.create(model=name, messages=PROMPT, max_tokens=16, temperature=0)
    assert r.choices[0].message.content == want.text


def test_api_key_is_checked_on_every_request(arts):
    proc = subprocess.Popen([sys.executable, "-m", "edgechat.cli", "serve", str(arts["gguf"]), "--port", "0",
                             "--api-key", "s3cret"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        port = int(re.search(r":(\d+)/v1", line).group(1))
        assert "(API key required)" in line
        wrong = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            wrong.chat.completions.create(model=arts["gguf"].name, messages=PROMPT, max_tokens=4)
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
        assert raw(port, "GET", "/health")[0] == 401 and raw(port, "GET", "/v1/models")[0] == 401
        right = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret", max_retries=0)
        assert right.chat.completions.create(model=arts["gguf"].name, messages=PROMPT, max_tokens=4).choices
    finally:
        stop_server(proc)

