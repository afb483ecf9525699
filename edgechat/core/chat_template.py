"""Render a conversation with the model's Jinja chat template exactly as Hugging Face transformers does,
so every engine sees the same prompt text (and therefore the same token ids)."""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgechat.core.errors import EdgechatError

# For base (non-chat) models: turns joined by newlines; the tokenizer adds BOS if the model wants it.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['content'] }}{% if not loop.last %}\n{% endif %}{% endfor %}"
                  "{% if add_generation_prompt and messages %}\n{% endif %}")


def _raise(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise EdgechatError(f"the chat template does not parse: {e}") from None


def render(source: str | None, messages: list[dict], add_generation_prompt: bool = True, **tokens) -> str:
    """tokens: bos_token, eos_token and the like, as transformers passes them."""
    template = compile_template(source or PLAIN_TEMPLATE)
    try:
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **tokens)
    except jinja2.TemplateError as e:
        raise EdgechatError(f"the chat template refused the conversation: {e}") from None


def template_from_tokenizer_config(tcfg: dict) -> str | None:
    tpl = tcfg.get("chat_template")
    if isinstance(tpl, list):  # [{"name": "default", "template": ...}, ...]
        named = {t["name"]: t["template"] for t in tpl}
        tpl = named.get("default") or next(iter(named.values()), None)
    return tpl
