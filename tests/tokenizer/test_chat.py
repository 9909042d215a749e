"""Chat templates render exactly as transformers' ``apply_chat_template(tokenize=False)`` does."""

from __future__ import annotations

import pytest

from dev_deps import require
from scratchllm.errors import ScratchLLMError
from scratchllm.tokenizer.chat import DEFAULT_CHAT_TEMPLATE, TemplateError, render_chat

#: SmolLM2-Instruct's template as its GGUF file stores it (the real file is compared in tests/weights/test_gguf.py).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
    " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: A Qwen2.5-style ChatML template: whitespace control, attribute access, ``tojson`` for tools.
QWEN_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

#: A Llama-style template using the BOS token, ``raise_exception`` and loop controls.
LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role') }}{% endif %}"
    "{% if message['content'] == 'SKIP' %}{% continue %}{% endif %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is the capital of France?"}],
    "system": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ],
    "multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi! 你好 😀"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "  Count: 1, 2, 3\n"},
        {"role": "assistant", "content": "SKIP"},
        {"role": "user", "content": "Thanks"},
    ],
}


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A transformers tokenizer (any vocabulary will do: only its template rendering is used)."""
    tokenizers = require("tokenizers")
    transformers = require("transformers")
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={"a": 0, "<s>": 1, "</s>": 2}, merges=[]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("template", [SMOLLM2_TEMPLATE, QWEN_TEMPLATE, LLAMA_TEMPLATE], ids=["smollm2", "qwen", "llama"])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_equals_transformers(hf_tokenizer, template: str, conversation: str, add_generation_prompt: bool) -> None:
    messages = CONVERSATIONS[conversation]
    expected = hf_tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    got = render_chat(
        template, messages, add_generation_prompt, {"bos_token": "<s>", "eos_token": "</s>"}
    )
    assert got == expected


def test_tools_are_rendered_with_tojson_like_transformers(hf_tokenizer) -> None:
    tools = [{"type": "function", "function": {"name": "météo", "parameters": {"city": "string"}}}]
    messages = CONVERSATIONS["single"]
    expected = hf_tokenizer.apply_chat_template(
        messages, chat_template=QWEN_TEMPLATE, tools=tools, tokenize=False, add_generation_prompt=True
    )
    assert render_chat(QWEN_TEMPLATE, messages, True, tools=tools) == expected
    assert '"météo"' in expected


def test_default_template_for_our_models() -> None:
    text = render_chat(None, CONVERSATIONS["system"], add_generation_prompt=True)
    assert text == "System: You answer in one word.\n\nUser: Capital of France?\n\nAssistant:"
    assert render_chat(DEFAULT_CHAT_TEMPLATE, CONVERSATIONS["single"]).endswith("France?\n\n")


def test_template_errors_are_one_line() -> None:
    with pytest.raises(TemplateError, match="chat template: unknown role"):
        render_chat(LLAMA_TEMPLATE, [{"role": "robot", "content": "x"}])
    with pytest.raises(TemplateError, match="line 1"):
        render_chat("{% for %}", CONVERSATIONS["single"])
    with pytest.raises(ScratchLLMError, match=r"messages\[0\]: missing 'content'"):
        render_chat(None, [{"role": "user"}])


def test_the_sandbox_blocks_unsafe_access() -> None:
    with pytest.raises(TemplateError, match="rendering failed"):
        render_chat("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", CONVERSATIONS["single"])
    with pytest.raises(TemplateError, match="rendering failed"):
        render_chat("{% set _ = messages.append(1) %}", CONVERSATIONS["single"])


def test_tokenizer_chat_uses_the_tokenizers_template_and_tokens() -> None:
    from types import SimpleNamespace

    from scratchllm.tokenizer.chat import tokenizer_chat

    tok = SimpleNamespace(chat_template=LLAMA_TEMPLATE, bos_token="<|begin_of_text|>", eos_token=None)
    text = tokenizer_chat(tok, CONVERSATIONS["single"])
    assert text.startswith("<|begin_of_text|><|start_header_id|>user")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert tokenizer_chat(SimpleNamespace(), CONVERSATIONS["single"]).endswith("Assistant:")  # no template: ours
