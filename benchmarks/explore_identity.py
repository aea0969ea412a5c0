"""Issue 6 exploration: token-identity features (embedding ⊕ one-hot token id), solved in
closed form from per-domain token counts via a Schur complement (``ir3de.solver.
solve_identity``; ``Router(identity=μ)``; the ``default`` preset chooses μ itself).

μ (the identity block's ridge) is chosen per split on a held-out 20 % of that split's FIT
data, never on test prompts; μ = ∞ is the dense-only model (balanced ridge, avg selector,
no unit-norm column scaling, which the joint solve does not use either). The library's
``identity`` preset (identity features with μ chosen by closed-form leave-one-out on the
statistics, no held-out data; the default router when this was measured, the ``nb`` model
since) is reported beside them.

Run:  python benchmarks/explore_identity.py [--embedder wordllama] [--data ../shared/data]
"""

from __future__ import annotations

import sys

import numpy as np
from _holdout import flatten, holdout, script_parser

from ir3de import Router, RouterConfig, compute_stats, load_embedder
from ir3de.eval import load_setting

MUS = (0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, np.inf)


def _balanced(router: Router, texts: list[str], labels: list[str]) -> float:
    pred, gold = np.array(router.predict(texts)), np.asarray(labels)
    return float(np.mean([np.mean(pred[gold == d] == d) for d in router.experts
                          if (gold == d).any()]))


def _router(emb, stats: list, mu: float) -> Router:
    return Router(emb, model="ridge", selector="avg", normalize=False,
                  identity=None if np.isinf(mu) else mu).fit_stats(stats)


def main() -> int:
    args = script_parser(__doc__).parse_args()
    emb = load_embedder(args.embedder)
    print(f"embedder {emb.name}; balanced accuracy (%), avg selector\n")
    print("| setting / split | μ chosen on held-out fit | held-out fit acc per μ "
          f"({', '.join(map(str, MUS))}) | test: dense only (μ=∞) | test: identity (chosen μ) "
          "| test: the identity preset (μ by leave-one-out) |")
    print("|---|---|---|---|---|---|")
    for name in ("reasoning-2fold", "reasoning-xdata", "domains"):
        setting = load_setting(name, args.data)
        for split in setting.splits:
            inner_texts, held_texts = holdout(split.fit)
            inner = [compute_stats(emb, t, domain=d) for d, t in inner_texts.items()]
            held_t, held_y = flatten(held_texts)
            held = {mu: _balanced(_router(emb, inner, mu), held_t, held_y) for mu in MUS}
            best = max(MUS, key=lambda m: (round(held[m], 4), -MUS.index(m)))
            full = [compute_stats(emb, t, domain=d) for d, t in split.fit.items()]
            test = (split.test_texts, split.test_labels)
            dense = _balanced(_router(emb, full, np.inf), *test)
            ident = _balanced(_router(emb, full, best), *test)
            router = Router(emb, RouterConfig.preset("identity")).fit_stats(full)
            lib = _balanced(router, *test)
            print(f"| {name} / {split.name} | {best:g} | "
                  + " / ".join(f"{100 * held[m]:.1f}" for m in MUS)
                  + f" | {100 * dense:.1f} | **{100 * ident:.1f}** | {100 * lib:.1f} "
                  f"(μ={router.identity_mu:g}) |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
