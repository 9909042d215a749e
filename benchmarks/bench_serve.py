"""Serving under load: our OpenAI-compatible server vs llama.cpp's (``llama-cpp-python[server]``), same GGUF.

SmolLM2-135M-Instruct (../shared/models) on localhost. For each number of concurrent streaming clients (1, 4, 8,
16 by default), every client sends ``--requests`` chat requests (``stream: true``, up to ``--max-tokens`` tokens,
greedy) one after another. Reported per level: requests and errors, p50/p95 time to first token, the median
per-stream decoding speed (tokens after the first / time after the first) and the total tokens/s (all tokens /
wall time). Both servers run as subprocesses with ``--threads`` threads; llama.cpp's with
``--interrupt_requests False`` (its default interrupts a running request when a new one arrives). The run is
bounded: a level that would start after ``--time-limit`` seconds of a server's run is skipped, and every
request has a timeout.

``--weights fp32 int8`` runs our server once per weight format (``scratchllm serve --weights``); the default is
the model as loaded (fp32 for this file), oneDNN-packed.

Run: ``.venv/bin/python benchmarks/bench_serve.py [--levels 1 4 8 16] [--max-tokens 128] [--requests 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scratchllm.config import WEIGHT_FORMATS

ROOT = Path(__file__).resolve().parents[1]
GGUF = ROOT.parent / "shared" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "smollm2"
TOPICS = [
    "a lighthouse keeper", "a lost robot", "the first snow", "a busy market", "an old library", "a river journey",
    "a mountain village", "a night train", "a small bakery", "a desert storm", "a city garden", "a chess match",
    "a ship at sea", "a forest fire", "a music lesson", "a space station",
]


@dataclass
class Stream:
    """One streamed request, as the client saw it."""

    start: float
    first: float | None = None
    end: float | None = None
    tokens: int = 0
    error: str | None = None


@dataclass
class Level:
    clients: int
    wall: float = 0.0
    streams: list[Stream] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(kind: str, port: int, threads: int, slots: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    if kind.startswith("scratchllm"):  # "scratchllm" (as loaded) or "scratchllm-int8" (--weights int8)
        weights = kind.partition("-")[2]
        command = [sys.executable, "-m", "scratchllm", "serve", "--model", str(GGUF), "--port", str(port),
                   "--model_name", MODEL, "--slots", str(slots), "--max_len", "1024", "--max_waiting", "256",
                   "--device", "cpu", *(["--weights", weights] if weights else [])]
    else:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(GGUF), "--port", str(port),
                   "--model_alias", MODEL, "--n_threads", str(threads), "--n_threads_batch", str(threads),
                   "--n_ctx", "2048", "--interrupt_requests", "False"]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(httpx, url: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


def one_request(httpx, url: str, topic: str, max_tokens: int, timeout: float) -> Stream:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Write a long story about {topic}."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream = Stream(start=time.perf_counter())
    chunks, usage = 0, None
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=timeout) as response:
            if response.status_code != 200:
                stream.error = f"HTTP {response.status_code}: {response.read()[:200]!r}"
                return stream
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if data.get("usage"):
                    usage = data["usage"]
                for choice in data.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        chunks += 1
                        if stream.first is None:
                            stream.first = time.perf_counter()
    except httpx.HTTPError as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
    stream.end = time.perf_counter()
    stream.tokens = usage["completion_tokens"] if usage else chunks
    if stream.error is None and stream.tokens == 0:
        stream.error = "empty reply"
    return stream


def run_level(httpx, url: str, clients: int, requests: int, max_tokens: int, timeout: float) -> Level:
    level = Level(clients)
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(requests):
            result = one_request(httpx, url, TOPICS[(c * requests + r) % len(TOPICS)], max_tokens, timeout)
            with lock:
                level.streams.append(result)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    level.wall = time.perf_counter() - start
    return level


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(level: Level) -> dict[str, float]:
    ok = [s for s in level.streams if s.error is None]
    ttft = [s.first - s.start for s in ok if s.first is not None]
    speed = [(s.tokens - 1) / (s.end - s.first) for s in ok if s.first is not None and s.end > s.first and s.tokens > 1]
    return {
        "clients": level.clients,
        "requests": len(level.streams),
        "errors": len(level.streams) - len(ok),
        "ttft_p50": percentile(ttft, 0.5),
        "ttft_p95": percentile(ttft, 0.95),
        "stream_tok_s": statistics.median(speed) if speed else float("nan"),
        "total_tok_s": sum(s.tokens for s in ok) / level.wall,
        "tokens": sum(s.tokens for s in ok),
    }


def bench_server(kind: str, args: argparse.Namespace) -> list[dict[str, float]]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(args.log_dir) / f"bench_serve_{kind}.log"
    process = start_server(kind, port, args.threads, max(args.levels), log)
    rows = []
    try:
        wait_ready(httpx, url, process)
        one_request(httpx, url, "warming up", 8, args.timeout)
        began = time.monotonic()
        for clients in args.levels:
            if time.monotonic() - began > args.time_limit:
                print(f"  {kind}: {clients} clients skipped (over --time-limit {args.time_limit} s)", flush=True)
                continue
            row = summary(run_level(httpx, url, clients, args.requests, args.max_tokens, args.timeout))
            rows.append(row)
            print(f"  {kind}: {row}", flush=True)
    except RuntimeError as exc:
        print(f"  {kind}: {exc} (log: {log})")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16], help="concurrent clients")
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds per server before levels are skipped")
    parser.add_argument("--peer", choices=["llama.cpp", "none"], default="llama.cpp")
    parser.add_argument("--log-dir", default="/tmp")
    parser.add_argument("--weights", nargs="+", choices=["loaded", *WEIGHT_FORMATS], default=["loaded"],
                        help="our server's weight formats, one run each (loaded: as stored, dequantized)")
    args = parser.parse_args()
    if not GGUF.is_file():
        sys.exit(f"{GGUF} is missing")

    servers = [f"scratchllm-{w}" if w != "loaded" else "scratchllm" for w in args.weights]
    if args.peer == "llama.cpp":
        try:
            import llama_cpp.server.app  # noqa: F401
        except ImportError as exc:
            print(f"llama.cpp peer unavailable ({exc}); pip install 'llama-cpp-python[server]'")
        else:
            servers.append("llama.cpp")
    print(f"{GGUF.name}, {args.threads} threads, {args.requests} requests/client, max_tokens {args.max_tokens}")
    results = {kind: bench_server(kind, args) for kind in servers}

    print(f"\n{'server':<16}{'clients':>8}{'reqs':>6}{'errors':>7}{'TTFT p50':>10}{'TTFT p95':>10}"
          f"{'stream tok/s':>14}{'total tok/s':>13}")
    for kind, rows in results.items():
        for r in rows:
            print(f"{kind:<16}{r['clients']:>8}{r['requests']:>6}{r['errors']:>7}{r['ttft_p50']:>9.2f}s"
                  f"{r['ttft_p95']:>9.2f}s{r['stream_tok_s']:>14.1f}{r['total_tok_s']:>13.1f}")
    peer = {r["clients"]: r for r in results.get("llama.cpp", [])}
    for kind in (k for k in results if k.startswith("scratchllm")):
        ours = {r["clients"]: r for r in results[kind]}
        if 1 in ours and 8 in ours:
            gain = ours[8]["total_tok_s"] / ours[1]["total_tok_s"]
            print(f"\n{kind}: total tokens/s at 8 clients = {gain:.1f}x one client (target >= 3x)")
            print(f"{kind}: p95 time to first token at 8 clients: {ours[8]['ttft_p95']:.2f} s (target < 2 s)")
        if 8 in ours and 8 in peer:
            ratio = ours[8]["total_tok_s"] / peer[8]["total_tok_s"]
            print(f"{kind} vs llama.cpp at 8 clients: {ratio:.2f}x its total tokens/s (target >= 1x)")

if __name__ == "__main__":
    main()
