"""The OpenAI API's request bodies as strict pydantic models, and its error JSON.

Every field a client may send is declared with its type and range; anything else is refused by name
("Unrecognized request argument supplied: tools"), so a setting the server cannot honour is never dropped
silently. Validation is *strict*: ``"temperature": "0.5"`` is a type error, not a float. Errors carry
OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, which every OpenAI client reads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: OpenAI allows at most four stop sequences.
MAX_STOP = 4
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}


class APIError(Exception):
    """An error answer: HTTP ``status`` and OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def validation_error(exc: ValidationError) -> APIError:
    """The first problem pydantic found, as a 400 naming the field (``messages.0.role``)."""
    first = exc.errors(include_url=False)[0]
    # a union's member shows in the location as a tag ("str", "list[int]", "constrained-str"): not a field
    path = [str(p) for p in first["loc"] if isinstance(p, int) or (p.isidentifier() and p not in _TYPE_TAGS)]
    param = ".".join(path) or None
    if first["type"] == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    if first["type"] == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request (it is not valid JSON).")
    message = first["msg"].removeprefix("Value error, ")
    return APIError(400, f"Invalid value for '{param}': {message}" if param else message, param=param)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    """One chat message. ``developer`` is OpenAI's newer name for ``system``."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_input(self) -> dict[str, str]:
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class SamplingRequest(_Strict):
    """Fields shared by chat completions and completions."""

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    n: Annotated[int, Field(ge=1, le=8)] = 1
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # OpenAI's end-user id: accepted, not used
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalties(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError("penalties are not supported by this server; leave it at 0")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(SamplingRequest):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return self

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: Annotated[int, Field(ge=1)] | None = 16  # OpenAI's default for completions
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: Any) -> Any:
        prompts = [value] if isinstance(value, str) or (value and isinstance(value[0], int)) else value
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("the prompt must not be empty")
        if any(t < 0 for p in prompts if not isinstance(p, str) for t in p):
            raise ValueError("token ids must be >= 0")
        return value

    def token_limit(self) -> int | None:
        return self.max_tokens
