"""LLM-as-judge: a stronger model scores instruction responses 0-100 against a reference answer.

The judge is any server that speaks OpenAI's ``POST /v1/chat/completions`` (Ollama, vLLM, llama.cpp's server, a
hosted API, our own server). Only the standard library is used: one ``urllib`` request per response, a thread
pool for concurrency, a timeout per request, and retries with exponential backoff for what may pass (network
errors, timeouts, HTTP 429 and 5xx); any other HTTP error is final for that item. The API key comes from an
environment variable, never from the command line, so it stays out of shell history and process lists.

Judges do not always answer in the format asked for; :func:`parse_score` accepts ``Score: 85``, ``85/100``,
``85 out of 100`` or a bare number, and anything else counts as unparsable rather than as a guess.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scratchllm.errors import ScratchLLMError
from scratchllm.utf8 import read_json

PROMPT = """You are a strict grader. Compare the response to the reference answer for the instruction below.

### Instruction
{instruction}
{input_block}
### Reference answer
{reference}

### Response to grade
{response}

Score the response from 0 (wrong, unhelpful or off-topic) to 100 (correct and complete, as good as the \
reference). Reply with the score only, in the form "Score: N"."""

_PATTERNS = (
    re.compile(r"score\W{0,6}(\d{1,3}(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d{1,3}(?:\.\d+)?)\s*(?:/|out of)\s*100\b", re.IGNORECASE),
    re.compile(r"^\W*(\d{1,3}(?:\.\d+)?)\W*$"),
)
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def parse_score(reply: str) -> float | None:
    """The 0-100 score in a judge's reply, or None when there is none (or it is out of range)."""
    for pattern in _PATTERNS:
        match = pattern.search(reply.strip())
        if match:
            value = float(match.group(1))
            return value if 0 <= value <= 100 else None
    return None


def chat_url(endpoint: str) -> str:
    """``http://host:port``, ``.../v1`` or the full ``.../v1/chat/completions`` -> the full URL."""
    endpoint = endpoint.rstrip("/")
    if endpoint.endswith("/chat/completions"):
        return endpoint
    return endpoint + ("/chat/completions" if endpoint.endswith("/v1") else "/v1/chat/completions")


@dataclass
class Item:
    """One response to judge (fields of the finetuning stage's responses JSON)."""

    instruction: str
    input: str
    reference: str
    response: str


def read_responses(path: Path) -> list[Item]:
    """A JSON list of ``{instruction, input?, reference or output, response}``."""
    data = read_json(path)
    if not isinstance(data, list):
        raise ScratchLLMError(f"{path}: expected a JSON list of responses")
    items = []
    for i, record in enumerate(data):
        where = f"{path}: record {i}"
        if not isinstance(record, dict):
            raise ScratchLLMError(f"{where}: expected an object")
        reference = record.get("reference", record.get("output"))
        for key, value in (("instruction", record.get("instruction")), ("response", record.get("response"))):
            if not isinstance(value, str):
                raise ScratchLLMError(f"{where}: field {key!r} must be a string")
        if not isinstance(reference, str):
            raise ScratchLLMError(f"{where}: needs a string 'reference' (or 'output') to judge against")
        extra = record.get("input") or ""
        if not isinstance(extra, str):
            raise ScratchLLMError(f"{where}: field 'input' must be a string")
        items.append(Item(record["instruction"], extra, reference, record["response"]))
    return items


def judge_prompt(item: Item) -> str:
    input_block = f"\n### Input\n{item.input}\n" if item.input else ""
    return PROMPT.format(
        instruction=item.instruction, input_block=input_block, reference=item.reference, response=item.response
    )


class JudgeClient:
    """Posts chat completions with retries, backoff and a timeout.

    Args:
        endpoint: the server (see :func:`chat_url`).
        model: the judge model's name on that server.
        api_key: sent as ``Authorization: Bearer ...`` when given.
        timeout: seconds per request.
        retries: further attempts after a failure that may pass.
        backoff: seconds before the first retry; doubled for each next one.
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url, self.model, self.api_key = chat_url(endpoint), model, api_key
        self.timeout, self.retries, self.backoff, self.sleep = timeout, retries, backoff, sleep

    def _post(self, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.0}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            reply = json.loads(response.read().decode("utf-8"))
        try:
            return reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"not a chat completion: {str(reply)[:200]}") from None

    def complete(self, prompt: str) -> str:
        """The judge's reply; raises :class:`ScratchLLMError` after the last failed attempt."""
        for attempt in range(self.retries + 1):
            try:
                return self._post(prompt)
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code} {exc.reason}"
                if exc.code not in _RETRY_STATUS:
                    raise ScratchLLMError(f"{self.url}: {error}") from None
            except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
                error = str(getattr(exc, "reason", exc))
            if attempt < self.retries:
                self.sleep(self.backoff * 2**attempt)
        raise ScratchLLMError(f"{self.url}: {error} (after {self.retries + 1} attempts)")


@dataclass
class Verdict:
    index: int
    score: float | None
    reply: str | None
    error: str | None = None


def judge_items(client: JudgeClient, items: Sequence[Item], concurrency: int = 4) -> list[Verdict]:
    """Judge every item, at most ``concurrency`` requests at a time; failures are recorded, not raised."""
    if concurrency < 1:
        raise ScratchLLMError(f"concurrency must be at least 1, got {concurrency}")

    def one(index: int) -> Verdict:
        try:
            reply = client.complete(judge_prompt(items[index]))
        except ScratchLLMError as exc:
            return Verdict(index, None, None, str(exc))
        return Verdict(index, parse_score(reply), reply)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(len(items))))


def summarize_verdicts(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Mean score, a histogram in tens (90-100 the last bin), and the unparsable and failed counts."""
    scores = [v.score for v in verdicts if v.score is not None]
    bins = [f"{lo}-{lo + 9 if lo < 90 else 100}" for lo in range(0, 100, 10)]
    histogram = dict.fromkeys(bins, 0)
    for s in scores:
        histogram[bins[min(int(s // 10), 9)]] += 1
    return {
        "items": len(verdicts),
        "scored": len(scores),
        "mean": sum(scores) / len(scores) if scores else None,
        "unparsable": sum(v.score is None and v.error is None for v in verdicts),
        "failed": sum(v.error is not None for v in verdicts),
        "histogram": histogram,
    }


def judge(
    responses: Path,
    endpoint: str,
    judge_model: str,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 4,
    timeout: float = 60.0,
    retries: int = 3,
    limit: int | None = None,
    output: Path | None = None,
) -> dict[str, Any]:
    """Score instruction responses 0-100 against their references with an LLM judge (OpenAI-compatible API).

    Args:
        responses: JSON list of {instruction, input, reference (or output), response}, as the finetuning stage writes.
        endpoint: the judge server: http://HOST:PORT, .../v1 or .../v1/chat/completions.
        judge_model: the judge model's name on that server.
        api_key_env: environment variable holding the API key (sent as a Bearer token when set).
        concurrency: requests in flight at once.
        timeout: seconds to wait for each reply.
        retries: further attempts after a network error, timeout, HTTP 429 or 5xx (exponential backoff from 1 s).
        limit: judge only the first N responses.
        output: write the summary and every verdict here as JSON.
    """
    from scratchllm.atomic import write_json_atomic

    items = read_responses(Path(responses))[:limit]
    client = JudgeClient(endpoint, judge_model, os.environ.get(api_key_env), timeout, retries)
    verdicts = judge_items(client, items, concurrency)
    summary = summarize_verdicts(verdicts)
    mean = "n/a" if summary["mean"] is None else f"{summary['mean']:.1f}"
    print(
        f"judged {summary['items']} responses with {judge_model}: mean {mean} "
        f"({summary['unparsable']} unparsable, {summary['failed']} failed)"
    )
    for band, count in summary["histogram"].items():
        print(f"  {band:>6}  {'#' * count} {count}")
    results = {"judge_model": judge_model, "endpoint": client.url, **summary, "verdicts": [asdict(v) for v in verdicts]}
    if output is not None:
        write_json_atomic(output, results)
        print(f"wrote {output}", file=sys.stderr)
    return results
