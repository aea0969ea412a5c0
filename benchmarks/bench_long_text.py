"""Cost of one huge single-line prompt: tokenise-a-prefix (now) vs tokenise-whole-then-cut.

``Embedder.encode_batch`` tokenises a text longer than ``(max_tokens + 64) x`` the
longest vocabulary entry from a prefix that provably (WordLlama) or with a 64-id
margin (other tokenizers) gives the same first ``max_tokens`` ids. The old path is
computed here, in the same process, from the same pieces: the whole text through the
same tokenisation path (chunk cache for a single text), special tokens dropped, then
cut to ``max_tokens``. Both must give identical ids; the script checks it.

Texts (one line each, ``--mb`` MB, default 20):

* ``prose``   -- the shared data's prompts and passages joined by spaces (first seen:
  the chunk cache is cleared before every call, on both paths);
* ``one word`` -- random lowercase letters without a space (mid-word cut, margin path);
* ``digits``  -- random digits without a space (every digit boundary is a barrier);
* ``</s> flood`` -- half the text literal ``</s>`` (dropped, no ids), then prose: the
  prefix must grow past the flood; runs of special tokens are shrunk to one by a
  regular expression first, so the flood costs a regex pass, not a tokenizer pass.

The prose case pays a scan of the whole text for unpaired surrogates (the old path
refused them; ASCII texts skip it), ~2 ns per character.

Also: the old path through the tokenizer's plain batch encoder (what batches over 16
texts, and texts holding "▁" or "</s>", took). Peak RSS is printed after the new-path
runs and again after the old-path runs (ru_maxrss only grows).

Run:
    python benchmarks/bench_long_text.py                 # wordllama, 20 MB, max_tokens 1024
    python benchmarks/bench_long_text.py --mb 5 --embedder minilm --max-tokens 64
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

import numpy as np

from ir3de import load_embedder


def prose(data: Path, n_chars: int) -> str:
    files = sorted(data.glob("*/*/*.jsonl"))
    if files:
        parts = [json.loads(line)["text"] for f in files for line in f.open(encoding="utf-8")]
    else:  # no shared data: pseudo-words, still mostly unseen
        rng = random.Random(1)
        parts = ["".join(rng.choice("etaoinshrdlu") for _ in range(rng.randint(2, 9)))
                 for _ in range(200_000)]
    text = " ".join(parts).replace("\n", " ").replace("\r", " ")
    return (text * (n_chars // len(text) + 1))[:n_chars]


def texts(data: Path, n_chars: int) -> dict[str, str]:
    rng = random.Random(0)
    letters = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=n_chars))
    digits = "".join(rng.choices("0123456789", k=n_chars))
    flood = "</s>" * (n_chars // 8)
    return {"prose": prose(data, n_chars), "one word": letters, "digits": digits,
            "</s> flood": flood + prose(data, n_chars - len(flood))}


def old_path(emb, text: str, max_tokens: int, plain: bool) -> np.ndarray:
    """The old encode_batch([text]): the whole text tokenised, specials dropped, then cut."""
    if plain or emb._chunk_cache is None:
        raw = emb.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids
    else:
        raw = emb._encode_chunked(text)
    ids = np.asarray(raw, dtype=np.int32)
    return ids[~emb._special[ids]][:max_tokens]


def timed(fn, repeats: int, clear) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        clear()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"),
                    help="shared data folder (default ../shared/data)")
    ap.add_argument("--embedder", default="wordllama", help="embedder (default wordllama)")
    ap.add_argument("--mb", type=float, default=20.0, help="text size in MB (characters)")
    ap.add_argument("--max-tokens", type=int, default=1024,
                    help="the token cap the prefix must reproduce (default 1024)")
    ap.add_argument("--repeats", type=int, default=5, help="new-path repeats (best of)")
    ap.add_argument("--old-repeats", type=int, default=1, help="old-path repeats (best of)")
    ap.add_argument("--skip-plain", action="store_true", help="skip the plain-encoder old path")
    args = ap.parse_args()

    emb = load_embedder(args.embedder)
    cache = emb._chunk_cache
    clear = cache.clear if cache is not None else (lambda: None)
    n_chars = int(args.mb * 1_000_000)
    cases = texts(args.data, n_chars)
    cap = args.max_tokens
    emb.encode("warm up", cap)
    print(f"{emb.name}, max_tokens={cap}, texts of {n_chars:,} characters on one line; "
          f"cut once longer than {(cap + emb._cut_margin) * emb._piece_chars:,} characters")

    new = {k: timed(lambda t=t: emb.encode_batch([t], cap)[0], args.repeats, clear)
           for k, t in cases.items()}
    rss_new = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    old = {k: timed(lambda t=t: old_path(emb, t, cap, False), args.old_repeats, clear)
           for k, t in cases.items()}
    rss_old = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    plain = {} if args.skip_plain else {
        k: timed(lambda t=t: old_path(emb, t, cap, True), args.old_repeats, clear)
        for k, t in cases.items()}

    print(f"{'text':12s} {'new (prefix)':>13s} {'old (whole)':>12s} {'old/new':>9s} "
          f"{'old plain':>10s} {'plain/new':>10s}  ids")
    for k in cases:
        (t_new, ids_new), (t_old, ids_old) = new[k], old[k]
        same = np.array_equal(ids_new, ids_old)
        row = f"{k:12s} {t_new * 1e3:10.2f} ms {t_old:10.2f} s {t_old / t_new:9.0f}x"
        if k in plain:
            t_plain, ids_plain = plain[k]
            same &= np.array_equal(ids_new, ids_plain)
            row += f" {t_plain:8.2f} s {t_plain / t_new:9.0f}x"
        print(f"{row}  {ids_new.size} {'identical' if same else 'DIFFERENT'}")
        if not same:
            raise SystemExit(f"{k}: the prefix gave different ids")
    print(f"peak RSS: {rss_new:,.0f} MB after the new-path runs (text strings included), "
          f"{rss_old:,.0f} MB after the old-path runs")


if __name__ == "__main__":
    main()
