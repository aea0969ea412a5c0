"""Issue 6 exploration: the background the pair table is smoothed towards.

The default's pair table (``solver.solve_pairs``) smooths each domain's pair frequencies
towards the POOLED pair distribution, q[p] ∝ Σ_d df[p, d]: the largest domain (gsm8k, or
arxiv_math on ``domains``) shapes the background most, and so does a party that inflates
its statistics. The ``balanced`` variant gives every domain the same weight in it,
q[p] ∝ Σ_d df[p, d] / n_d (rescaled by the mean n_d so the ε of unseen pairs keeps its
size), the way the uniform prior already treats the domains. Both are functions of the
summed integer statistics (add/remove stays exact). Grid: background by Dirichlet mass m;
the token table stays the default's (α = 0.03).

Rule, as everywhere in issue 6: fitted on the inner 80 % of each split's fit data and
scored on the held-out 20 %; ONE configuration for all splits by the highest mean held-out
balanced accuracy; test prompts are only scored.

The variant is measured through the public ``Router`` with its pair solver swapped for the
run (``ir3de.router.solve_pairs``), so that nothing but the background differs.

Run:  python benchmarks/explore_pair_background.py [--embedder wordllama] [--settings ...]
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence

import numpy as np
from _holdout import explore_args, flatten, holdout, print_mean_choice

import ir3de.router
from ir3de import DomainStats, Router, RouterConfig, compute_stats, load_embedder
from ir3de.eval import load_setting
from ir3de.selector import PairScores
from ir3de.solver import _PAIR_EPS, solve_pairs

MASSES = (1e4, 3e4, 1e5, 3e5)
SETTINGS = ("reasoning-paper", "reasoning-2fold", "reasoning-xdata", "domains")


def _balanced_pairs(stats: Mapping[str, DomainStats], experts: Sequence[str], *,
                    mass: float) -> PairScores:
    """``solve_pairs`` with a background in which every domain weighs the same."""
    keys = np.unique(np.concatenate([stats[n].pairs.keys for n in experts]))
    C = np.zeros((keys.size + 1, len(experts)))
    for j, name in enumerate(experts):
        own = stats[name].pairs
        C[np.searchsorted(keys, own.keys), j] = own.counts
    n = C.sum(axis=0)
    q = (C / n).sum(axis=1) * n.mean() + _PAIR_EPS
    q /= q.sum()
    return PairScores.from_logits(keys, np.log(C + mass * q[:, None]) - np.log(n + mass))


SOLVERS = {"pooled": solve_pairs, "balanced": _balanced_pairs}


def _balanced_accuracy(router: Router, texts: list[str], labels: list[str]) -> float:
    pred = np.array([d.expert for d in router.route_batch(texts)])
    gold = np.array(labels)
    return 100 * float(np.mean([np.mean(pred[gold == d] == d) for d in np.unique(gold)]))


def main() -> int:
    args = explore_args(__doc__, SETTINGS)
    emb = load_embedder(args.embedder)
    grid = [(bg, m) for bg in SOLVERS for m in MASSES]
    rows: dict[tuple[str, float], list[tuple[float, float]]] = {g: [] for g in grid}
    names = []
    for setting in args.settings:
        for split in load_setting(setting, args.data).splits:
            names.append(f"{setting} / {split.name}")
            inner, held = holdout(split.fit)
            inner_stats = [compute_stats(emb, t, domain=d) for d, t in inner.items()]
            fit_stats = [compute_stats(emb, t, domain=d) for d, t in split.fit.items()]
            held_texts, held_labels = flatten(held)
            print(f"## {names[-1]}")
            for background, mass in grid:
                ir3de.router.solve_pairs = SOLVERS[background]
                config = dataclasses.replace(RouterConfig.preset("default"), pairs=mass)
                h = _balanced_accuracy(Router(emb, config).fit_stats(inner_stats),
                                       held_texts, held_labels)
                t = _balanced_accuracy(Router(emb, config).fit_stats(fit_stats),
                                       split.test_texts, split.test_labels)
                rows[(background, mass)].append((h, t))
                print(f"  {background:8s} m={mass:<8g} {h:6.2f} → {t:6.2f}", flush=True)
    ir3de.router.solve_pairs = solve_pairs
    print_mean_choice("background, m", names,
                      {f"{bg}, {m:g}": cells for (bg, m), cells in rows.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
