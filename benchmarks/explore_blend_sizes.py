"""Issue 6 exploration: the TF-IDF blend (the ``tfidf`` preset; the default on 2026-11-25,
until the coding-shift check) against the default (the same without it) as the fit data
shrinks, on held-out fit data only.

The blend's weight (4) and λ (1e-2) were chosen on the evaluation splits at full size
(``explore_tfidf.py``), and ``auto``'s small-fit-set smoothing (α, pair mass, the switch)
before the blend existed (``explore_scale.py``). This scan says how the two compare at
10 / 30 / 100 / 300 fit prompts per domain and at full size, before those choices are made
again with the blend in place. It reads no test prompt: every router is fitted on a seeded
subsample of the inner 80 % of a split's fit data and scored on its held-out 20 % (test
prompts of every setting left out: ``_holdout.TokenizedSplit``'s rule). It chooses
nothing; the choices are made by the scripts named above, under their committed rules.

Per split and size: three seeded draws (one at full size), both routers fitted from the
same statistics (``Router.fit_stats``, ``auto`` smoothing), balanced accuracy; then the mean
over splits per size.

Run:  python benchmarks/explore_blend_sizes.py [--settings reasoning-xdata domains ...]
"""

from __future__ import annotations

import time

import numpy as np
from _holdout import explore_args, holdout, test_texts

from ir3de import Router, compute_stats, load_embedder
from ir3de.eval import load_setting
from ir3de.eval.settings import SETTINGS
from ir3de.tfidf import TFIDF_BUCKETS

SIZES = (10, 30, 100, 300, None)  # prompts per domain; None: the whole inner part
DRAWS = 3
ROUTERS = ("tfidf", "default")


def _balanced(pred: list[str], gold: list[str]) -> float:
    p, g = np.array(pred), np.array(gold)
    return float(np.mean([np.mean(p[g == d] == d) for d in np.unique(g)]))


def main() -> int:
    args = explore_args(__doc__, list(SETTINGS))
    emb = load_embedder(args.embedder)
    settings = {name: load_setting(name, args.data) for name in SETTINGS}
    tested = test_texts(settings.values())
    start = time.perf_counter()
    table: dict[tuple[str, int | None], dict[str, list[float]]] = {}
    for name in args.settings:
        for split in settings[name].splits:
            texts = {d: [t for t, x in zip(group, emb.encode_batch(group), strict=True)
                         if x.size] for d, group in split.fit.items()}
            inner_i, held_i = holdout({d: list(range(len(t))) for d, t in texts.items()})
            held = [(texts[d][i], d) for d in texts for i in held_i[d]
                    if texts[d][i].strip() not in tested]
            held_texts, held_gold = [t for t, _ in held], [d for _, d in held]
            for size in SIZES:
                scores: dict[str, list[float]] = {r: [] for r in ROUTERS}
                for draw in range(1 if size is None else DRAWS):
                    rng = np.random.default_rng(1000 * draw + (size or 0))
                    stats = []
                    for d in texts:
                        pool = [texts[d][i] for i in inner_i[d]]
                        if size is not None and len(pool) > size:
                            pool = [pool[i] for i in rng.choice(len(pool), size, replace=False)]
                        stats.append(compute_stats(emb, pool, domain=d,
                                                   tfidf_buckets=TFIDF_BUCKETS))
                    for label in ROUTERS:
                        router = Router(emb, label).fit_stats(stats)
                        scores[label].append(_balanced(list(router.predict(held_texts)),
                                                       held_gold))
                table[(f"{name} / {split.name}", size)] = scores
                cells = "  ".join(f"{r} {100 * np.mean(v):6.2f}" for r, v in scores.items())
                print(f"{name} / {split.name:8s} n={size or 'all':>4}: {cells}  "
                      f"[{time.perf_counter() - start:.0f} s]", flush=True)
    print("\n| prompts per domain | " + " | ".join(ROUTERS) + " | tfidf - default |")
    print("|---|" + "---|" * (len(ROUTERS) + 1))
    for size in SIZES:
        means = [np.mean([np.mean(v[r]) for (_, s), v in table.items() if s == size])
                 for r in ROUTERS]
        print(f"| {size or 'all'} | " + " | ".join(f"{100 * m:.2f}" for m in means)
              + f" | {100 * (means[0] - means[1]):+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
