"""What the TF-IDF blend (the ``tfidf`` preset) costs at fit time: counting its statistics,
their file size, and solving a router, each against the default in the same process.

Per domain of the ``reasoning-xdata`` fit data (GSM8K train, m_arc train, MBPP, Alpaca):
``compute_stats`` without and with ``tfidf_buckets=4096`` (best of ``--repeat`` runs), the
size of the statistics file each writes and the number of Gram entries kept. Then
``Router.fit_stats`` on all four: the default against ``tfidf=4`` (the dense (4097 x 4097)
solve), and ``add_expert`` of the last domain (what the gateway's admin API pays).

Run:  python benchmarks/bench_tfidf.py [--data ../shared/data] [--repeat 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

from ir3de import Router, compute_stats, load_embedder
from ir3de.data import reasoning_split
from ir3de.tfidf import TFIDF_BUCKETS, TFIDF_GAMMA


def _best(repeat: int, fn):
    """The result of ``fn()`` and its fastest wall time over ``repeat`` runs."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    emb = load_embedder()
    fit, _ = reasoning_split(args.data, protocol="xdata")
    print(f"embedder {emb.name}; {TFIDF_BUCKETS} buckets; best of {args.repeat}\n")
    print("| domain | prompts | count s (default) | count s (+ tfidf) | ratio | file MB "
          "(default) | file MB (+ tfidf) | ratio | Gram entries |")
    print("|---|---|---|---|---|---|---|---|---|")
    plain, blend = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for domain, texts in fit.items():
            count = functools.partial(compute_stats, emb, texts, domain=domain)
            a, ta = _best(args.repeat, count)
            b, tb = _best(args.repeat, functools.partial(count, tfidf_buckets=TFIDF_BUCKETS))
            sizes = []
            for name, stats in (("a", a), ("b", b)):
                path = os.path.join(tmp, f"{name}.stats")
                stats.save(path)
                sizes.append(os.path.getsize(path) / 1e6)
            plain.append(a)
            blend.append(b)
            print(f"| {domain} | {len(texts)} | {ta:.2f} | {tb:.2f} | {tb / ta:.2f} | "
                  f"{sizes[0]:.1f} | {sizes[1]:.1f} | {sizes[1] / sizes[0]:.1f} | "
                  f"{b.tfidf.keys.size:,} |", flush=True)
    print("\n| router | fit_stats s (4 experts) | add_expert s (the 4th) |")
    print("|---|---|---|")
    base_fit = base_add = 0.0
    for label, stats, settings in (("default", plain, {}),
                                   ("tfidf", blend, {"tfidf": TFIDF_GAMMA})):
        _, fit_s = _best(args.repeat,
                         lambda s=settings, st=stats: Router(emb, **s).fit_stats(st))
        three = Router(emb, **settings).fit_stats(stats[:-1])
        _, add_s = _best(1, functools.partial(three.add_expert, stats[-1].domain, stats[-1]))
        if label == "default":
            base_fit, base_add = fit_s, add_s
            print(f"| default | {fit_s:.3f} | {add_s:.3f} |")
        else:
            print(f"| tfidf | {fit_s:.3f} ({fit_s / base_fit:.0f}x) | {add_s:.3f} "
                  f"({add_s / base_add:.0f}x) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
