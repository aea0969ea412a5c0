"""Failed requests from the keep-alive race: uvicorn's and httpx's 5 s against the defaults.

A client that reuses an idle keep-alive connection just as the server closes it gets a
transport error (httpx: ReadError) for a request the server never read. httpx and the
openai SDK let a connection idle 5 s and uvicorn closes one after 5 s, so traffic that
idles about 5 s meets the race twice: client → gateway, and gateway → expert (a 502 to the
client). This starts, on 127.0.0.1, the test upstream (uvicorn, 5 s) and three gateways
(router fitted on 300 gsm8k + 300 MBPP fit prompts, WordLlama): 5 s on both sides (what the
gateway had before these settings), the default ``keep_alive_seconds`` alone, and both
defaults. Then
``--clients`` httpx clients each send ``--rounds`` chat completions to one gateway, idling
a random 4.95-5.02 s between them (around httpx's expiry), all gateways at once, and the
failed requests are counted.

Run:  python benchmarks/bench_keepalive.py [--clients 100] [--rounds 6] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import yaml
from bench_gateway import _port, _start, fit_stats, start_upstream

from ir3de.serve import load_config


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, True)  # (after the servers' finally)
    stats = fit_stats(args.data, tmp)
    direct, upstream = start_upstream()
    config = {"router": {"stats": [str(s) for s in stats]},
              "experts": {"math": {"url": direct}, "coding": {"url": direct}}}
    defaults = load_config(_write(tmp / "defaults.yaml", config))
    settings = [(5, 5.0), (defaults.keep_alive_seconds, 5.0),
                (defaults.keep_alive_seconds, defaults.upstream_keep_alive_seconds)]
    gateways: dict[tuple[int, float], tuple[str, subprocess.Popen]] = {}
    try:
        for i, (client_side, upstream_side) in enumerate(settings):
            path = _write(tmp / f"gw{i}.yaml", {**config, "keep_alive_seconds": client_side,
                                                 "upstream_keep_alive_seconds": upstream_side})
            port = _port()
            gateways[client_side, upstream_side] = (f"http://127.0.0.1:{port}/v1", _start(
                [sys.executable, "-m", "ir3de.cli", "serve", "--config", str(path),
                 "--port", str(port), "--log-level", "warning"],
                f"http://127.0.0.1:{port}/healthz", {"IR3DE_ADMIN_TOKEN": ""}))

        async def client(base: str, failed: list[str]) -> None:
            async with httpx.AsyncClient(timeout=30) as c:  # httpx's own 5 s expiry
                for i in range(args.rounds):
                    body = {"model": "ir3de",
                            "messages": [{"role": "user", "content": f"What is {i} + 1?"}]}
                    try:
                        status = (await c.post(base + "/chat/completions", json=body)).status_code
                        if status != 200:  # (a 502: the gateway's own upstream connection)
                            failed.append(f"HTTP {status}")
                    except httpx.TransportError as exc:
                        failed.append(type(exc).__name__)
                    await asyncio.sleep(random.uniform(4.95, 5.02))

        async def run() -> dict[tuple[int, float], list[str]]:
            failed: dict[tuple[int, float], list[str]] = {key: [] for key in gateways}
            await asyncio.gather(*(client(base, failed[key])
                                   for key, (base, _) in gateways.items()
                                   for _ in range(args.clients)))
            return failed

        failed = asyncio.run(run())
    finally:
        for _, proc in gateways.values():
            proc.terminate()
        upstream.terminate()
    total = args.clients * args.rounds
    print(f"{args.clients} clients x {args.rounds} requests per gateway, all gateways at once, "
          "idling 4.95-5.02 s between requests\n")
    print("| keep_alive_seconds | upstream_keep_alive_seconds | failed requests | errors |")
    print("|---|---|---|---|")
    for (client_side, upstream_side), errors in failed.items():
        kinds = ", ".join(sorted(set(errors))) or "-"
        note = " (defaults)" if (client_side, upstream_side) == settings[-1] else ""
        print(f"| {client_side} | {upstream_side:g}{note} | "
              f"{len(errors)} of {total} ({100 * len(errors) / total:.1f} %) | {kinds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
