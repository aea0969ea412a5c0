"""Added latency and throughput of the ir3de gateway over calling the upstream directly.

Starts, on 127.0.0.1, the test upstream (tests/servers/upstream.py: a tiny OpenAI-compatible
server, chunk delay 0) and the gateway (`ir3de serve`, router fitted on 300 gsm8k + 300
MBPP fit prompts, WordLlama), then measures in this process, alternating direct and
gateway calls on the same prompts:

* sequential non-streaming chat completions: p50 / p99 latency, direct vs gateway;
* streaming: time to the last chunk, direct vs gateway;
* throughput at 50 concurrent requests (httpx.AsyncClient), direct vs gateway;
* the routing decision time, from the gateway's own Prometheus histogram.

Goal (issue 4): p50 overhead <= 2 ms, routing decision <= 0.2 ms of it.

Run:  python benchmarks/bench_gateway.py [--requests 2000] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from ir3de import compute_stats, load_embedder
from ir3de.data import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["What is 17 * 23? Show your steps.",
           "Write a python function to reverse a linked list.",
           "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
           "clips in May. How many clips did Natalia sell altogether in April and May?",
           "def is_prime(n: int) -> bool:\n    \"\"\"Return True if n is prime.\"\"\""]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_STARTED: list[subprocess.Popen] = []


def _stop_started() -> None:
    """Stop every server this process started (also those started before a failure in
    a script's set-up, outside its ``finally``: they were left serving)."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


atexit.register(_stop_started)


def _start(argv: list[str], url: str, env: dict[str, str]) -> subprocess.Popen:
    """Start a server and wait until ``url`` answers; one that exits first (a refused
    config) fails at once with its status and the end of its standard error."""
    # (held open for the server's life, not a with block: read if it exits early)
    log = tempfile.TemporaryFile()  # noqa: SIM115
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=log)
    _STARTED.append(proc)
    # (a deadline, not a count of polls: a server that accepts and never answers made each
    # poll wait its 0.5 s timeout, six minutes in all)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{' '.join(argv[:4])} … exited with status "
                               f"{proc.returncode} before {url} answered: "
                               + " / ".join(tail))
        try:
            httpx.get(url, timeout=0.5)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"{url} did not come up within 60 s")


def fit_stats(data: str, folder: Path) -> list[Path]:
    """Statistics files of the benchmark router (300 gsm8k and 300 MBPP fit prompts,
    WordLlama) written into ``folder``: math, coding."""
    emb = load_embedder()
    stats = []
    for domain, rel in (("math", "reasoning/gsm8k/train.jsonl"),
                        ("coding", "reasoning/mbpp/train.jsonl")):
        texts = [r["text"] for r in read_jsonl(Path(data) / rel)][:300]
        stats.append(folder / f"{domain}.stats")
        compute_stats(emb, texts, domain=domain).save(stats[-1])
    return stats


def start_upstream() -> tuple[str, subprocess.Popen]:
    """The test upstream (chunk delay 0) on a free port: its ``/v1`` base URL and process."""
    port = _port()
    proc = _start([sys.executable, str(ROOT / "tests/servers/upstream.py"), "expert",
                   str(port)], f"http://127.0.0.1:{port}/", {"UPSTREAM_CHUNK_DELAY": "0"})
    return f"http://127.0.0.1:{port}/v1", proc


def start_gateway(stats: list[Path], experts: dict[str, str], folder: Path
                  ) -> tuple[str, subprocess.Popen]:
    """`ir3de serve` on a free port, routing with ``stats`` to ``experts`` (name: base
    URL), its config written into ``folder``: its base URL and process."""
    config = {"router": {"stats": [str(s) for s in stats]},
              "experts": {name: {"url": url} for name, url in experts.items()}}
    (folder / "gw.yaml").write_text(yaml.safe_dump(config))
    port = _port()
    proc = _start([sys.executable, "-m", "ir3de.cli", "serve", "--config",
                   str(folder / "gw.yaml"), "--port", str(port), "--log-level", "warning"],
                  f"http://127.0.0.1:{port}/healthz", {"IR3DE_ADMIN_TOKEN": ""})
    return f"http://127.0.0.1:{port}", proc


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, True)  # (after the servers' finally)
    stats = fit_stats(args.data, tmp)
    direct, upstream = start_upstream()
    base, gateway = start_gateway(stats, {"math": direct, "coding": direct}, tmp)
    via = base + "/v1"
    try:
        rows = []
        with httpx.Client(timeout=30) as client:
            def call(base: str, model: str, i: int, stream: bool = False) -> float:
                body = {"model": model, "stream": stream,
                        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
                start = time.perf_counter()
                if stream:
                    with client.stream("POST", base + "/chat/completions", json=body) as r:
                        for _ in r.iter_bytes():
                            pass
                else:
                    client.post(base + "/chat/completions", json=body).raise_for_status()
                return time.perf_counter() - start

            for stream in (False, True):
                for i in range(50):  # warm-up: connections, chunk cache
                    call(direct, "math", i, stream)
                    call(via, "ir3de", i, stream)
                d, g = [], []
                for i in range(args.requests):
                    d.append(call(direct, "math", i, stream))
                    g.append(call(via, "ir3de", i, stream))
                rows.append((("streaming (to last chunk)" if stream else "non-streaming"), d, g))

        async def burst(base: str, model: str) -> float:
            limit = asyncio.Semaphore(50)
            async with httpx.AsyncClient(timeout=30,
                                         limits=httpx.Limits(max_connections=50)) as c:
                async def one(i: int) -> None:
                    async with limit:
                        body = {"model": model, "messages": [
                            {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
                        (await c.post(base + "/chat/completions", json=body)).raise_for_status()
                start = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(args.requests)))
                return args.requests / (time.perf_counter() - start)

        rps_direct = asyncio.run(burst(direct, "math"))
        rps_gateway = asyncio.run(burst(via, "ir3de"))
        metrics = httpx.get(base + "/metrics").text
        values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                  if line.startswith("ir3de_routing_seconds_")}
        routing_us = 1e6 * values["ir3de_routing_seconds_sum"] / \
            values["ir3de_routing_seconds_count"]
    finally:
        gateway.terminate()
        upstream.terminate()
    print(f"{args.requests} requests per figure, sequential on one connection, direct and "
          "gateway calls alternating\n")
    print("| mode | direct p50 | direct p99 | gateway p50 | gateway p99 | overhead p50 | "
          "overhead p99 | goal p50 overhead ≤ 2 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, d, g in rows:
        over50, over99 = _pct(g, 50) - _pct(d, 50), _pct(g, 99) - _pct(d, 99)
        print(f"| {name} | {_pct(d, 50):.2f} ms | {_pct(d, 99):.2f} ms | {_pct(g, 50):.2f} ms | "
              f"{_pct(g, 99):.2f} ms | **{over50:.2f} ms** | {over99:.2f} ms | "
              f"{'PASS' if over50 <= 2 else 'FAIL'} |")
    print(f"\nthroughput at 50 concurrent, non-streaming: direct {rps_direct:,.0f} req/s, "
          f"gateway {rps_gateway:,.0f} req/s (ratio {rps_gateway / rps_direct:.2f})")
    print(f"routing decision (gateway histogram, mean over all routed requests): "
          f"{routing_us:.0f} µs (goal ≤ 200 µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
