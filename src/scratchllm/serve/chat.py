"""A chat in the terminal: multi-turn through the model's chat template, replies streamed as they are generated.

The conversation is re-rendered with the chat template for every reply (the template decides how turns are
marked), and must fit the engine's slot together with the reply's token budget; when it does not, the oldest
turns are dropped (the system prompt stays) and the user is told. Commands: ``/reset``, ``/system TEXT``,
``/temperature X``, ``/help``, ``/quit`` (or end of input). Ctrl-C stops a reply; at the prompt it quits.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TextIO

from scratchllm.errors import ScratchLLMError
from scratchllm.inference import Engine, SamplingParams
from scratchllm.tokenizer.chat import tokenizer_chat

HELP = (
    "commands: /reset (forget the conversation), /system TEXT (set the system prompt and reset), "
    "/temperature X (0 = greedy), /quit"
)


class ChatSession:
    """The conversation so far and how replies are sampled; :meth:`reply` streams the next answer."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Any,
        chat_template: str | None,
        params: SamplingParams,
        system: str | None = None,
    ) -> None:
        self.engine, self.tokenizer, self.chat_template = engine, tokenizer, chat_template
        self.params = params
        self.system = system
        self.turns: list[dict[str, str]] = []
        self.notices: list[str] = []

    def reset(self) -> None:
        self.turns = []

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def _prompt(self) -> list[int]:
        """The rendered conversation, oldest turns dropped until it and the reply budget fit a slot."""
        while True:
            text = tokenizer_chat(self.tokenizer, self.messages(), True, self.chat_template)
            ids = self.tokenizer.encode(text, allowed_special="all")
            if len(ids) + self.params.max_tokens <= self.engine.max_len:
                return ids
            if len(self.turns) <= 1:
                self.turns.pop()
                raise ScratchLLMError(
                    f"this message does not fit: {len(ids)} prompt tokens + {self.params.max_tokens} for the "
                    f"reply exceed the {self.engine.max_len}-token context"
                )
            dropped = self.turns[:2]  # the oldest user message and the reply to it
            del self.turns[: len(dropped)]
            self.notices.append(f"(the oldest turn was dropped to stay within the {self.engine.max_len}-token context)")

    def reply(self, text: str) -> Iterator[str]:
        """Add the user's message and stream the reply; the reply joins the history when complete or stopped."""
        self.turns.append({"role": "user", "content": text})
        prompt = self._prompt()
        pieces: list[str] = []
        try:
            for out in self.engine.generate(prompt, self.params):
                if out.error is not None:
                    raise ScratchLLMError(out.error)
                pieces.append(out.text)
                yield out.text
        finally:
            self.turns.append({"role": "assistant", "content": "".join(pieces)})


def run_chat(session: ChatSession, read: Callable[[str], str] = input, out: TextIO | None = None) -> None:
    """The read-reply loop until ``/quit`` or the end of input (``out`` defaults to the current stdout)."""
    out = out or sys.stdout
    print(f"chatting with the model; {HELP}", file=out)
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=out)
            return
        if not line:
            continue
        if line.startswith("/"):
            command, _, argument = line.partition(" ")
            if command in ("/quit", "/exit"):
                return
            if command == "/reset":
                session.reset()
                print("(conversation reset)", file=out)
            elif command == "/system":
                session.system = argument.strip() or None
                session.reset()
                print(f"(system prompt {'set' if session.system else 'cleared'}; conversation reset)", file=out)
            elif command == "/temperature":
                try:
                    params = replace(session.params, temperature=float(argument))
                    params.check()
                except (ValueError, ScratchLLMError):
                    print(f"(expected a number >= 0, got {argument!r})", file=out)
                else:
                    session.params = params
                    print(f"(temperature {params.temperature})", file=out)
            else:
                print(HELP, file=out)
            continue
        print("model> ", end="", file=out, flush=True)
        try:
            for piece in session.reply(line):
                print(piece, end="", file=out, flush=True)
        except KeyboardInterrupt:
            print(" (stopped)", end="", file=out)
        except ScratchLLMError as exc:
            print(f"(error: {exc})", end="", file=out)
        print(file=out)
        for notice in session.notices:
            print(notice, file=out)
        session.notices.clear()
