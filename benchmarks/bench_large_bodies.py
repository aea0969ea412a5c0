"""What large request bodies cost the gateway's other clients.

Starts, on 127.0.0.1, two test upstreams (tests/servers/upstream.py, chunk delay 0), one
per expert, and the gateway (`ir3de serve`, the router of bench_gateway.py, default
``max_body_bytes`` of 1 MB), then measures the latency of small chat completions sent one
after another by a prober, routed to the coding expert:

* alone;
* while ``--loaders`` clients keep sending bodies just under the 1 MB limit that are slow
  to parse: an extra field holding nested arrays, the worst case of a JSON parser per byte
  (about 0.1 s of one core each). Two kinds: ``rejected`` (they name an unknown model, so
  the gateway parses them and answers 404: its own cost alone) and ``forwarded`` (routed
  to the math expert and sent to its upstream whole: also the serialisation of the
  forwarded body; the prober's upstream is another one, not slowed by them).

The figures are the prober's p50 / p99 with loaders over its p50 / p99 alone, from the
same process and gateway. The loaders send pre-encoded bytes, so the benchmark process
itself adds little CPU; on two cores the gateway and the upstream still share them.

Run:  python benchmarks/bench_large_bodies.py [--seconds 10] [--loaders 4]
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from bench_gateway import PROMPTS, fit_stats, start_gateway, start_upstream

CODING = [PROMPTS[1], PROMPTS[3]]  # the prober's prompts; the large bodies' is math


def _probe(url: str, seconds: float) -> list[float]:
    """Latencies of sequential small routed requests for ``seconds``."""
    out: list[float] = []
    with httpx.Client(timeout=60) as client:
        stop = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop:
            body = {"model": "ir3de", "messages": [{"role": "user", "content": CODING[i % 2]}]}
            start = time.perf_counter()
            r = client.post(url, json=body)
            out.append(time.perf_counter() - start)
            if r.status_code != 200 or "to model coding" not in r.text:
                raise RuntimeError(f"prober: {r.status_code} {r.text[:200]}")
            i += 1
    return out


def _large_body(model: str, limit: int) -> bytes:
    """A body just under ``limit`` bytes: one short message and an extra field of nested
    arrays (many small JSON values: slow to parse per byte)."""
    head = {"model": model, "messages": [{"role": "user", "content": PROMPTS[0]}]}
    unit = len(json.dumps([[[[1]]]])) + 1
    n = (limit - len(json.dumps(head)) - 64) // unit
    raw = json.dumps({**head, "extra": [[[[1]]]] * n}).encode()
    assert len(raw) <= limit, len(raw)
    return raw


def _load(url: str, raw: bytes, expect: int, stop: threading.Event, sent: list[int]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            r = client.post(url, content=raw, headers={"content-type": "application/json"})
            if r.status_code != expect:
                raise RuntimeError(f"large body: {r.status_code} {r.text[:200]}")
            sent.append(1)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="per phase")
    ap.add_argument("--loaders", type=int, default=4)
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, True)  # (after the servers' finally)
    stats = fit_stats(args.data, tmp)
    (math_url, math_upstream), (coding_url, coding_upstream) = start_upstream(), start_upstream()
    base, gateway = start_gateway(stats, {"math": math_url, "coding": coding_url}, tmp)
    url = base + "/v1/chat/completions"
    limit = 1_000_000  # the gateway's default max_body_bytes
    try:
        _probe(url, 1.0)  # warm-up: connections, chunk cache
        alone = _probe(url, args.seconds)
        print(f"prober alone: {len(alone)} requests, p50 {_pct(alone, 50):.2f} ms, "
              f"p99 {_pct(alone, 99):.2f} ms")
        for kind, model, expect in (("rejected", "no-such-model", 404),
                                    ("forwarded", "ir3de", 200)):
            raw = _large_body(model, limit)
            stop, sent = threading.Event(), []
            loaders = [threading.Thread(target=_load, args=(url, raw, expect, stop, sent))
                       for _ in range(args.loaders)]
            for t in loaders:
                t.start()
            time.sleep(1.0)  # loaders under way
            try:
                busy = _probe(url, args.seconds)
            finally:
                stop.set()
                for t in loaders:
                    t.join()
            print(f"with {args.loaders} loaders, {kind} ({len(raw) / 1e6:.2f} MB bodies, "
                  f"{len(sent)} sent): {len(busy)} requests, p50 {_pct(busy, 50):.2f} ms "
                  f"({_pct(busy, 50) / _pct(alone, 50):.1f}x alone), p99 "
                  f"{_pct(busy, 99):.2f} ms ({_pct(busy, 99) / _pct(alone, 99):.1f}x alone)")
    finally:
        for proc in (gateway, math_upstream, coding_upstream):
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
