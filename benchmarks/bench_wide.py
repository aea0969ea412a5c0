"""File sizes and times of statistics and routers on a wide embedding table, with and
without ``A`` stored.

``A`` is the (h+1)² float64 matrix of the ridge presets: 137 MB per domain at h = 4096. It
is a function of the token counts, so statistics and routers of version 2 leave it out
and form it when a ridge router needs it; version 1 stored it for every domain. This
script measures both layouts in one process, version 1 being the baseline:

* an embedder made of WordLlama's Llama-2 ``tokenizer.json`` and a random 32000 x h float16
  table (``.npy`` in a temporary folder), as in ``bench_experts.py``;
* per domain, statistics of ``--prompts`` real fit prompts of four Reasoning datasets
  (``../shared/data``), saved as version 2 (as ``ir3de stats`` writes them) and as version 1
  (the same statistics with ``A`` formed and stored);
* file sizes; ``build`` (load the four statistics files, solve, save the router) for the
  ``default`` and ``dense`` presets; ``Router.load`` of the saved router plus one routed
  prompt (the embedder cached, as in a long-lived process); and ``ir3de route ROUTER
  PROMPT`` as a fresh process (what a shell script pays per call: Python's start, the
  table's fingerprint, the router file).

Run:
    python benchmarks/bench_wide.py                     # h = 4096, 400 prompts per domain
    python benchmarks/bench_wide.py --dim 1024 --repeats 2 --prompts 100   # quick
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics as pystats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_experts import VOCAB, fmt_s, wordllama_tokenizer

from ir3de import DomainStats, Router, RouterConfig, compute_stats, load_embedder
from ir3de.data import read_jsonl

DOMAINS = {"math": "gsm8k", "multilingual": "m_arc", "coding": "mbpp",
           "instruction_following": "alpaca"}
PROMPT = "Write a Python function that returns the n-th Fibonacci number."


def random_table(folder: Path, h: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    table = np.empty((VOCAB, h), dtype=np.float16)
    for start in range(0, VOCAB, 4096):  # bounded temporaries at wide h
        block = rng.standard_normal((min(4096, VOCAB - start), h), dtype=np.float32)
        table[start:start + block.shape[0]] = block / np.sqrt(h)
    path = folder / f"random_{h}.npy"
    np.save(path, table)
    return path


def best_median(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), pystats.median(times)


def mb(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=4096, help="embedding width h (default 4096)")
    ap.add_argument("--prompts", type=int, default=400,
                    help="fit prompts per domain (default 400)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    ap.add_argument("--data", type=Path,
                    default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.data / "reasoning").is_dir():
        raise SystemExit(f"{args.data / 'reasoning'}: not found (see ../shared/data)")

    with tempfile.TemporaryDirectory(prefix="ir3de-wide-") as tmp:
        folder = Path(tmp)
        table = random_table(folder, args.dim, args.seed)
        recipe = {"tokenizer": str(wordllama_tokenizer()), "table": str(table)}
        emb = load_embedder(recipe["tokenizer"], table=recipe["table"])
        files: dict[int, list[Path]] = {1: [], 2: []}
        for domain, dataset in DOMAINS.items():
            texts = [r["text"] for r in read_jsonl(
                args.data / "reasoning" / dataset / "train.jsonl")][:args.prompts]
            stats = compute_stats(emb, texts, domain=domain)
            for version, s in ((2, stats), (1, dataclasses.replace(stats,
                                                                   A=stats.gram(emb)))):
                files[version].append(folder / f"{domain}.v{version}.stats")
                s.save(files[version][-1])
        print(f"h={args.dim}, vocab={VOCAB}, {len(DOMAINS)} domains of {args.prompts} real "
              f"prompts each, best / median of {args.repeats} rounds; ratio = version 2 "
              "(no A) over version 1 (A stored), best times\n")
        print("| what | version 1 (A stored) | version 2 (A formed from counts) | ratio |")
        print("|---|---|---|---|")
        sizes = [sum(p.stat().st_size for p in files[v]) / 2**20 for v in (1, 2)]
        print(f"| {len(DOMAINS)} statistics files | {sizes[0]:.1f} MB | {sizes[1]:.1f} MB | "
              f"{sizes[1] / sizes[0]:.3f} |")
        for preset in ("default", "dense"):
            routers = {v: folder / f"{preset}.v{v}.router" for v in (1, 2)}

            def build(version: int, preset: str = preset,
                      routers: dict[int, Path] = routers) -> None:
                loaded = [DomainStats.load(p) for p in files[version]]
                Router(emb, RouterConfig.preset(preset)).fit_stats(loaded).save(
                    routers[version])

            def load_route(version: int, routers: dict[int, Path] = routers) -> None:
                Router.load(routers[version], embedder=emb).route(PROMPT)

            def cli_route(version: int, routers: dict[int, Path] = routers) -> None:
                subprocess.run([sys.executable, "-m", "ir3de", "route", str(routers[version]),
                                PROMPT], check=True, capture_output=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})

            for what, fn in (("build", build), ("load + route one prompt", load_route),
                             ("`ir3de route` (new process)", cli_route)):
                t = {v: best_median(lambda v=v, fn=fn: fn(v), args.repeats) for v in (1, 2)}
                print(f"| `{preset}`: {what} | {fmt_s(t[1][0])} / {fmt_s(t[1][1])} | "
                      f"{fmt_s(t[2][0])} / {fmt_s(t[2][1])} | {t[2][0] / t[1][0]:.2f} |",
                      flush=True)
            print(f"| `{preset}`: router file | {mb(routers[1])} | {mb(routers[2])} | "
                  f"{routers[2].stat().st_size / routers[1].stat().st_size:.3f} |")
            same = np.array_equal(Router.load(routers[1], embedder=emb).W,
                                  Router.load(routers[2], embedder=emb).W)
            print(f"|  `{preset}`: same W from both files | {same} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
