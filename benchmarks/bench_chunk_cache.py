"""Memory and speed of the tokenizer's chunk cache: bounded (now) vs unbounded (before).

Single prompts are tokenised through a per-chunk cache keyed by client text (a chunk is a
run of spaces plus the next run of non-spaces). The cache now keeps only chunks of at most
64 characters and 32 ids, in at most 65,536 entries; before, it kept every chunk it
learnt, in up to 262,144 entries, so a distinct 8 KB base64 blob left ~250 KB behind. Both
settings run here in one process, on the same prompts, one prompt at a time through
``Embedder.encode`` (the gateway's path):

* ``english``  -- the Reasoning English prompts (GSM8K, HumanEval, IFEval, MBPP, Alpaca);
* ``m_arc``    -- the multilingual ARC prompts (31 languages, Chinese without spaces);
* ``base64``   -- 8 KB random base64 blobs (one chunk each), ``--blobs`` of them;
* ``mixed``    -- each English prompt with a 200-character unspaced run appended (a URL
  or a hash in a prompt).

Reported per kind: the memory the cache holds after the pass (tracemalloc, a separate
pass), its entries, and the mean time per prompt with a cold cache and again warm (a
second pass over the same prompts), best of ``--repeats`` rounds, without tracemalloc.
The ratio columns are bounded / unbounded. Both settings store each id as one shared int
object (the cache did not before: ~3x the memory per entry, 132.6 MB for the 500 blobs).

Run:
    python benchmarks/bench_chunk_cache.py
    python benchmarks/bench_chunk_cache.py --blobs 200
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import random
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ir3de import embedding as _embedding
from ir3de import load_embedder

BOUNDED = {"_CHUNK_CACHE_SIZE": _embedding._CHUNK_CACHE_SIZE,
           "_CACHED_CHUNK_CHARS": _embedding._CACHED_CHUNK_CHARS,
           "_CACHED_CHUNK_IDS": _embedding._CACHED_CHUNK_IDS}
UNBOUNDED = {"_CHUNK_CACHE_SIZE": 1 << 18, "_CACHED_CHUNK_CHARS": 1 << 62,
             "_CACHED_CHUNK_IDS": 1 << 62}


@contextmanager
def caps(values: dict[str, int]) -> Iterator[None]:
    saved = {name: getattr(_embedding, name) for name in values}
    for name, value in values.items():
        setattr(_embedding, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_embedding, name, value)


def read(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def prompts(data: Path, blobs: int) -> dict[str, list[str]]:
    r = data / "reasoning"
    english = (read(r / "gsm8k/test.jsonl") + read(r / "humaneval/test.jsonl")
               + read(r / "ifeval/test.jsonl") + read(r / "mbpp/test.jsonl")
               + read(r / "alpaca/train.jsonl"))
    rng = random.Random(0)
    blob = [base64.b64encode(rng.randbytes(6144)).decode() for _ in range(blobs)]
    run = [" " + "".join(rng.choices("0123456789abcdef", k=200)) for _ in english]
    return {"english": english, "m_arc": read(r / "m_arc/test.jsonl"), "base64": blob,
            "mixed": [p + tail for p, tail in zip(english, run, strict=True)]}


def held(emb, texts: list[str]) -> int:
    """Bytes the cache holds after encoding ``texts`` from an empty cache."""
    emb._chunk_cache = {}
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for text in texts:
        emb.encode(text)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def per_prompt_us(emb, texts: list[str], repeats: int) -> tuple[float, float]:
    """Mean µs per prompt from an empty cache, then warm (a second pass); best of
    ``repeats``."""
    cold, warm = [], []
    for _ in range(repeats):
        emb._chunk_cache = {}
        for out in (cold, warm):
            start = time.perf_counter()
            for text in texts:
                emb.encode(text)
            out.append((time.perf_counter() - start) / len(texts) * 1e6)
    return min(cold), min(warm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="shared data folder (default ../shared/data)")
    ap.add_argument("--embedder", default="wordllama", help="embedder (default wordllama)")
    ap.add_argument("--blobs", type=int, default=500, help="8 KB base64 prompts (default 500)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds, best of (default 3)")
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    if emb._chunk_cache is None:
        raise SystemExit(f"{emb.name} has no chunk cache (not a SentencePiece-style BPE)")
    print(f"embedder {emb.name}; bounded: {BOUNDED}")
    print(f"{'prompts':<9}{'n':>6} | {'held MB':>16} {'ratio':>6} | {'entries':>15} | "
          f"{'cold µs':>15} {'ratio':>6} | {'warm µs':>15} {'ratio':>6}")
    for kind, texts in prompts(args.data, args.blobs).items():
        row = {}
        for label, values in (("unbounded", UNBOUNDED), ("bounded", BOUNDED)):
            with caps(values):
                memory = held(emb, texts)
                entries = len(emb._chunk_cache)
                cold, warm = per_prompt_us(emb, texts, args.repeats)
            row[label] = (memory / 2**20, entries, cold, warm)
        (mu, eu, cu, wu), (mb, eb, cb, wb) = row["unbounded"], row["bounded"]
        print(f"{kind:<9}{len(texts):>6} | {mu:7.1f} -> {mb:6.1f} {mb / mu:6.2f} | "
              f"{eu:6d} -> {eb:6d} | {cu:6.0f} -> {cb:6.0f} {cb / cu:6.2f} | "
              f"{wu:6.0f} -> {wb:6.0f} {wb / wu:6.2f}")


if __name__ == "__main__":
    main()
