"""Render a conversation with the model's Jinja chat template exactly as Hugging Face transformers does,
so every engine sees the same prompt text (and therefore the same token ids)."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from edgechat.core.errors import EdgechatError

# For base (non-chat) models: turns joined by newlines; the tokenizer adds BOS if the model wants it.
# The newlines are expressions: a literal one right after a block tag is eaten by trim_blocks (which templates
# are rendered with, as transformers does), and the turns would run together.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['content'] }}{% if not loop.last %}{{ '\\n' }}{% endif %}{% endfor %}"
                  "{% if add_generation_prompt and messages %}{{ '\\n' }}{% endif %}")


# A template comes from a model file: it is code. It runs in Jinja's sandbox (no attribute of Python internals,
# no mutation, no loader: no import or include), and within these limits; a prompt is kilobytes and renders in
# milliseconds, so the limits are far from any real template.
TIME_LIMIT_S = 2.0
SIZE_LIMIT = 8 << 20  # characters of rendered output, or of any string or list a template builds
_deadline = threading.local()


class TemplateLimit(Exception):
    pass


def _tick():
    end = getattr(_deadline, "t", None)
    if end is not None and time.monotonic() > end:
        raise TemplateLimit(f"it ran past its {TIME_LIMIT_S:g} s time limit (a loop?)")


def _range(*args):
    for i in range(*args):  # checked every step: nested ranges are how a template loops for ever
        if not i & 255:
            _tick()
        yield i


class LimitedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "+"])

    def call_binop(self, context, operator, left, right):
        _tick()
        if operator == "**" and isinstance(right, int) and abs(right) > 64 and isinstance(left, int) and abs(left) > 1:
            raise TemplateLimit("it computes a power too large to keep")
        if operator == "*":
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > SIZE_LIMIT:
                raise TemplateLimit(f"it builds a value over {SIZE_LIMIT} items")
        out = super().call_binop(context, operator, left, right)
        if isinstance(out, (str, list, tuple)) and len(out) > SIZE_LIMIT:
            raise TemplateLimit(f"it builds a value over {SIZE_LIMIT} items")
        return out

    def getattr(self, obj, attribute):
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _tick()
        return super().getitem(obj, argument)

    def call(self, __context, __obj, *args, **kwargs):
        _tick()
        return super().call(__context, __obj, *args, **kwargs)


def _raise(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    env = LimitedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["range"] = _range
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise EdgechatError(f"the chat template does not parse: {e}") from None
    except (RecursionError, MemoryError, ValueError, TypeError) as e:
        raise EdgechatError(f"the chat template cannot be compiled: {type(e).__name__}: {e}") from None


def render(source: str | None, messages: list[dict], add_generation_prompt: bool = True, **tokens) -> str:
    """tokens: bos_token, eos_token and the like, as transformers passes them."""
    template = compile_template(source or PLAIN_TEMPLATE)
    _deadline.t = time.monotonic() + TIME_LIMIT_S
    out, n = [], 0
    try:
        for piece in template.generate(messages=messages, add_generation_prompt=add_generation_prompt, **tokens):
            out.append(piece)
            n += len(piece)
            if n > SIZE_LIMIT:
                raise TemplateLimit(f"its output passed the {SIZE_LIMIT}-character limit")
            _tick()
        return "".join(out)
    except TemplateLimit as e:
        raise EdgechatError(f"the chat template was stopped: {e}") from None
    except SecurityError as e:
        raise EdgechatError(f"the chat template was stopped by the sandbox: {e}") from None
    except jinja2.TemplateError as e:
        raise EdgechatError(f"the chat template refused the conversation: {e}") from None
    except RecursionError:
        raise EdgechatError("the chat template was stopped: it recursed too deeply") from None
    except TypeError as e:
        if "no loader" in str(e):  # the sandbox has no loader, so {% import %} and {% include %} land here
            raise EdgechatError("the chat template was stopped: it imports or includes another template, "
                                "which a model's template may not do") from None
        raise EdgechatError(f"the chat template failed: TypeError: {e}") from None
    except Exception as e:  # a template is code from a file: whatever it raises is the file's fault
        raise EdgechatError(f"the chat template failed: {type(e).__name__}: {e}") from None
    finally:
        _deadline.t = None


def template_from_tokenizer_config(tcfg: dict) -> str | None:
    tpl = tcfg.get("chat_template")
    if isinstance(tpl, list):  # [{"name": "default", "template": ...}, ...]
        named = {t["name"]: t["template"] for t in tpl}
        tpl = named.get("default") or next(iter(named.values()), None)
    return tpl
