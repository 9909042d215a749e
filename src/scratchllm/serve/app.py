"""An OpenAI-compatible HTTP server on FastAPI: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``,
``/health``, and the chat page at ``/``.

Requests are validated (:mod:`scratchllm.serve.protocol`), turned into token ids (chat messages through the
model's chat template) and handed to the :class:`~scratchllm.inference.Engine`, which decodes every request in
flight together in a background thread. Its outputs come back to the event loop through an asyncio queue per
API call and leave either as one JSON answer or, with ``stream: true``, as server-sent events ending with
``data: [DONE]``. A client that disconnects has its requests cancelled, which frees their slots at once.

Safety: the command line binds 127.0.0.1 unless told otherwise; with an API key every ``/v1`` route wants
``Authorization: Bearer KEY`` (401 otherwise); CORS is off unless origins are named; bodies are size-limited;
every error, expected or not, is answered with OpenAI's error JSON and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from scratchllm.errors import ScratchLLMError
from scratchllm.inference import Engine, Output, QueueFull, SamplingParams, TokenLogprob
from scratchllm.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingRequest,
    validation_error,
)
from scratchllm.tokenizer.chat import tokenizer_chat


@dataclass(frozen=True)
class ServerSettings:
    """What the server allows. ``max_tokens_limit`` defaults to the engine's slot length."""

    model_name: str
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_tokens_limit: int | None = None
    max_body_bytes: int = 1_000_000


# ---------------------------------------------------------------------------------------------- one API call
class Generation:
    """The engine requests of one API call (``n`` choices for each prompt) and their outputs, in order of
    arrival, on the event loop. Choice ``i`` of prompt ``p`` is index ``p * n + i``; with a seed, choice ``i``
    samples with ``seed + i`` so that the ``n`` choices differ and each is reproducible."""

    def __init__(self, engine: Engine, prompts: list[list[int]], n: int, params: SamplingParams) -> None:
        self.engine = engine
        self.prompts = prompts
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, Output]] = asyncio.Queue()
        self.requests = []
        try:
            for prompt in prompts:
                for i in range(n):
                    seeded = replace(params, seed=None if params.seed is None else params.seed + i)
                    self.requests.append(engine.submit(prompt, seeded, partial(self._put, len(self.requests))))
        except QueueFull as exc:
            self.cancel()
            raise APIError(429, str(exc), type="rate_limit_error", code="rate_limit_exceeded") from None
        except ScratchLLMError as exc:
            self.cancel()
            raise APIError(400, str(exc), param="prompt") from None

    def _put(self, index: int, out: Output) -> None:  # called from the engine's thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, out))

    async def outputs(self, request: Request | None = None) -> AsyncIterator[tuple[int, Output]]:
        """``(choice index, Output)`` until every choice finished; stops early when ``request``'s client leaves."""
        watcher = asyncio.ensure_future(_disconnected(request)) if request is not None else None
        remaining = len(self.requests)
        try:
            while remaining:
                getter = asyncio.ensure_future(self.queue.get())
                if watcher is not None:
                    await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        return
                index, out = await getter
                if out.error is not None:
                    raise APIError(500, out.error, type="server_error")
                remaining -= out.finished
                yield index, out
        finally:
            if watcher is not None:
                watcher.cancel()
            self.cancel()

    def cancel(self) -> None:
        for request in self.requests:
            if not request.finished:
                self.engine.cancel(request)

    def usage(self, outputs: dict[int, Output]) -> dict[str, int]:
        prompt = sum(len(p) for p in self.prompts)
        completion = sum(out.completion_tokens for out in outputs.values())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _disconnected(request: Request) -> None:
    """Return when the client has gone away (the body has been read, so only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


@dataclass
class Choice:
    """One choice of a non-streamed answer, gathered from its outputs."""

    text: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    last: Output | None = None


async def gather(generation: Generation, request: Request) -> tuple[list[Choice], dict[str, int]]:
    choices = [Choice() for _ in generation.requests]
    finals: dict[int, Output] = {}
    async for index, out in generation.outputs(request):
        choices[index].text.append(out.text)
        choices[index].logprobs.extend(out.logprobs)
        if out.finished:
            choices[index].last = finals[index] = out
    return choices, generation.usage(finals)


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


# ---------------------------------------------------------------------------------------------- the app
def create_app(engine: Engine, tokenizer: Any, chat_template: str | None, settings: ServerSettings) -> FastAPI:
    """The ASGI app serving ``engine`` (started and stopped with the app)."""
    limit = min(settings.max_tokens_limit or engine.max_len, engine.max_len)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(title="scratchllm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(APIError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error = APIError(500, f"internal error: {type(exc).__name__}", type="server_error")
        return JSONResponse(error.body(), status_code=500)

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def parse(request: Request, model: type[SamplingRequest]) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise _too_large(settings.max_body_bytes)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise _too_large(settings.max_body_bytes)
        try:
            parsed = model.model_validate_json(bytes(body))
        except ValidationError as exc:
            raise validation_error(exc) from None
        if parsed.model != settings.model_name:
            raise APIError(
                404,
                f"The model '{parsed.model}' does not exist; this server serves '{settings.model_name}'.",
                param="model",
                code="model_not_found",
            )
        return parsed

    def sampling(body: SamplingRequest, max_tokens: int, logprobs: bool, top: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p if body.top_p < 1.0 else None,
            seed=body.seed,
            stop=body.stop_list(),
            logprobs=logprobs,
            top_logprobs=top,
        )

    def max_tokens_for(requested: int | None, prompt_tokens: int, param: str, prompt_param: str) -> int:
        """The completion's token budget: as requested, within the server's limit and the slot's room."""
        room = engine.max_len - prompt_tokens
        if room < 1:
            raise APIError(
                400,
                f"The prompt has {prompt_tokens} tokens; this server's maximum context length is {engine.max_len} "
                "tokens, which leaves no room for a completion.",
                param=prompt_param,
                code="context_length_exceeded",
            )
        if requested is not None and requested > room:
            raise APIError(
                400,
                f"This server's maximum context length is {engine.max_len} tokens; however, you requested "
                f"{prompt_tokens + requested} tokens ({prompt_tokens} in the prompt, {requested} for the completion).",
                param=param,
                code="context_length_exceeded",
            )
        if requested is not None and requested > limit:
            raise APIError(400, f"{param} is too large: {requested}; this server allows at most {limit}.", param=param)
        return requested if requested is not None else min(room, limit)

    def token(tok_id: int) -> tuple[str, list[int]]:
        raw = tokenizer.decode_bytes([tok_id])
        return raw.decode("utf-8", errors="replace"), list(raw)

    def chat_logprobs(logprobs: list[TokenLogprob]) -> dict[str, Any]:
        def entry(tok_id: int, lp: float) -> dict[str, Any]:
            text, raw = token(tok_id)
            return {"token": text, "logprob": lp, "bytes": raw}

        content = [
            {**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(i, v) for i, _, v in lp.top]}
            for lp in logprobs
        ]
        return {"content": content, "refusal": None}

    def completion_logprobs(logprobs: list[TokenLogprob], offset: int) -> dict[str, Any]:
        offsets = []
        for lp in logprobs:
            offsets.append(offset)
            offset += len(lp.text)
        return {
            "tokens": [lp.text for lp in logprobs],
            "token_logprobs": [lp.logprob for lp in logprobs],
            "top_logprobs": [{text: v for _, text, v in lp.top} for lp in logprobs],
            "text_offset": offsets,
        }

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, allowed_special="all")  # a chat template writes special tokens as text

    def render_and_encode(messages: list[dict[str, str]]) -> list[int]:
        return encode(tokenizer_chat(tokenizer, messages, True, chat_template))

    router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    @router.get("/models")
    async def models() -> dict[str, Any]:
        card = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "scratchllm"}
        return {"object": "list", "data": [card]}

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        body: ChatCompletionRequest = await parse(request, ChatCompletionRequest)
        messages = [m.as_template_input() for m in body.messages]
        try:  # in a worker thread: a long conversation must not hold up the other streams on the event loop
            prompt = await run_in_threadpool(render_and_encode, messages)
        except ScratchLLMError as exc:
            raise APIError(400, str(exc), param="messages") from None
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        max_tokens = max_tokens_for(body.token_limit(), len(prompt), param, "messages")
        top = body.top_logprobs or 0
        generation = Generation(engine, [prompt], body.n, sampling(body, max_tokens, body.logprobs, top))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": settings.model_name}
        if body.stream:
            return _stream(generation, partial(_chat_chunks, head, body, chat_logprobs))
        choices, usage = await gather(generation, request)
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": "".join(c.text), "refusal": None},
                    "logprobs": chat_logprobs(c.logprobs) if body.logprobs else None,
                    "finish_reason": c.last.finish_reason if c.last else None,
                }
                for i, c in enumerate(choices)
            ],
            "usage": usage,
        }

    @router.post("/completions", response_model=None)
    async def completions(request: Request) -> Any:
        body: CompletionRequest = await parse(request, CompletionRequest)
        prompt = body.prompt
        if isinstance(prompt, str):
            prompt = [prompt]
        if isinstance(prompt[0], int):
            prompt = [prompt]
        ids = await run_in_threadpool(lambda: [p if isinstance(p, list) else encode(p) for p in prompt])
        texts = [p if isinstance(p, str) else tokenizer.decode(p) for p in prompt]
        max_tokens = max(max_tokens_for(body.max_tokens, len(p), "max_tokens", "prompt") for p in ids)
        want = body.logprobs is not None
        generation = Generation(engine, ids, body.n, sampling(body, max_tokens, want, body.logprobs or 0))
        echoes = [texts[i // body.n] if body.echo else "" for i in range(len(generation.requests))]
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": settings.model_name}
        if body.stream:
            logprobs = partial(completion_logprobs, offset=0) if want else None
            return _stream(generation, partial(_completion_chunks, head, body, echoes, logprobs))
        choices, usage = await gather(generation, request)
        return {
            **head,
            "object": "text_completion",
            "choices": [
                {
                    "index": i,
                    "text": echoes[i] + "".join(c.text),
                    "logprobs": completion_logprobs(c.logprobs, len(echoes[i])) if want else None,
                    "finish_reason": c.last.finish_reason if c.last else None,
                }
                for i, c in enumerate(choices)
            ],
            "usage": usage,
        }

    app.include_router(router)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name, **engine.stats()}

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        page = resources.files("scratchllm.serve").joinpath("static", "index.html")
        return HTMLResponse(page.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})

    return app


def _too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than this server's limit of {limit} bytes.")


def _stream(generation: Generation, chunks: Callable[[Generation], AsyncIterator[str]]) -> StreamingResponse:
    """Server-sent events; the generation is cancelled when the stream ends, however it ends."""
    return StreamingResponse(
        chunks(generation),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(generation.cancel),
    )


async def _events(
    generation: Generation, head: dict[str, Any], include_usage: bool, choice: Callable[[int, Output], dict]
) -> AsyncIterator[str]:
    """One chunk per output with text, log probabilities or a finish reason; the usage chunk; ``[DONE]``."""
    usage_field = {"usage": None} if include_usage else {}
    finals: dict[int, Output] = {}
    try:
        async for index, out in generation.outputs():
            if out.finished:
                finals[index] = out
            if out.text or out.logprobs or out.finished:
                yield sse({**head, "choices": [choice(index, out)], **usage_field})
    except APIError as exc:
        yield sse(exc.body())
        return
    if include_usage:
        yield sse({**head, "choices": [], "usage": generation.usage(finals)})
    yield "data: [DONE]\n\n"


async def _chat_chunks(
    head: dict[str, Any], body: ChatCompletionRequest, logprobs: Callable, generation: Generation
) -> AsyncIterator[str]:
    head = {**head, "object": "chat.completion.chunk"}
    usage_field = {"usage": None} if body.include_usage() else {}
    for i in range(len(generation.requests)):  # OpenAI opens each choice with the role
        delta = {"role": "assistant", "content": ""}
        yield sse({**head, "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}],
                   **usage_field})

    def choice(index: int, out: Output) -> dict[str, Any]:
        return {
            "index": index,
            "delta": {"content": out.text} if out.text else {},
            "logprobs": logprobs(out.logprobs) if body.logprobs else None,
            "finish_reason": out.finish_reason,
        }

    async for event in _events(generation, head, body.include_usage(), choice):
        yield event


async def _completion_chunks(
    head: dict[str, Any],
    body: CompletionRequest,
    echoes: list[str],
    logprobs: Callable | None,
    generation: Generation,
) -> AsyncIterator[str]:
    head = {**head, "object": "text_completion"}
    started: set[int] = set()

    def choice(index: int, out: Output) -> dict[str, Any]:
        text = out.text if index in started else echoes[index] + out.text
        started.add(index)
        return {
            "index": index,
            "text": text,
            "logprobs": logprobs(out.logprobs) if logprobs else None,
            "finish_reason": out.finish_reason,
        }

    async for event in _events(generation, head, body.include_usage(), choice):
        yield event
