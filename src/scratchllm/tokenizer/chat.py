"""Chat templates: a list of ``{"role", "content"}`` messages -> the prompt text a chat model was trained on.

Models ship their format as a Jinja template (``tokenizer_config.json``'s ``chat_template`` or GGUF's
``tokenizer.chat_template``). Templates are code from the model's author, so they run in Jinja's
*immutable sandbox* (no attribute tricks, no mutation of our objects) with the same settings and helpers
transformers gives them (``trim_blocks``, ``lstrip_blocks``, ``raise_exception``, a ``tojson`` that keeps
non-ASCII text, ``strftime_now``), so the same template renders the same text here and there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from scratchllm.errors import ScratchLLMError

#: The template for our own GPT models, which were never trained on a chat format: plain "Role: text" turns
#: separated by a blank line, and ``Assistant:`` to ask for the reply. Readable, and uses no special tokens.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class TemplateError(ScratchLLMError):
    """The template itself failed (a syntax error, or its own ``raise_exception``)."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str) -> Any:
    """Compile ``source`` once in a sandboxed environment configured as transformers does."""
    from jinja2 import TemplateSyntaxError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"chat template, line {exc.lineno}: {exc.message}") from None


def render_chat(
    template: str | None,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    special_tokens: Mapping[str, str | None] | None = None,
    **extra: Any,
) -> str:
    """Render ``messages`` with ``template`` (None: :data:`DEFAULT_CHAT_TEMPLATE`).

    Args:
        template: Jinja source of the chat template.
        messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
        add_generation_prompt: end with the text that opens the assistant's turn.
        special_tokens: ``bos_token``, ``eos_token``... as the template expects to see them.
        extra: further template variables (``tools``, ``documents``...).
    """
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ScratchLLMError(f"messages[{i}]: expected an object with a string 'role', got {message!r}")
        if "content" not in message:
            raise ScratchLLMError(f"messages[{i}]: missing 'content'")
    compiled = compile_template(template if template is not None else DEFAULT_CHAT_TEMPLATE)
    variables = {k: v for k, v in (special_tokens or {}).items() if v is not None}
    try:
        return compiled.render(
            messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **variables, **extra
        )
    except TemplateError:
        raise
    except Exception as exc:  # an error inside the template's own logic
        raise TemplateError(f"chat template: rendering failed ({type(exc).__name__}: {exc})") from None


def tokenizer_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                   template: str | None = None) -> str:
    """Render with a tokenizer's own template and special tokens (our default template when it has none)."""
    specials = {
        name: getattr(tokenizer, name, None) for name in ("bos_token", "eos_token", "pad_token")
    }
    own = template if template is not None else getattr(tokenizer, "chat_template", None)
    return render_chat(own, messages, add_generation_prompt, specials)
