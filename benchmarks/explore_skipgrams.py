"""Issue 6 exploration: skip-bigrams, the token two places back, as a third table.

The default scores a prompt by its distinct tokens (binary NB, α = 0.03) and its distinct
adjacent pairs (previous id, id), the pair table Dirichlet-smoothed towards the pooled pair
distribution (m = 1e5). Triples were measured and lost (EVALUATION.md): they are sparse.
A skip-bigram (id two places back, id) sees across one token ("the X of", "$ x $") with the
sparsity of a pair. This family adds, per domain, the number of prompts holding each
distinct skip-bigram (a start id V for the first two positions): a per-domain sum, so
add/remove stays exact. Its table is ``solve_pairs``'s: log((df + m q) / (n_d + m)), q the
pooled skip-bigram distribution (+ 0.01 each, one shared row for unseen ones). A prompt's
score is the default's total + w times the skip-bigram total (both per distinct token,
as the ``geo`` selector divides).

Rule, as everywhere in issue 6: fitted on the inner 80 % of each split's fit data and
scored on the held-out 20 %; ONE configuration for all splits by the highest mean held-out
balanced accuracy; test prompts are only scored.

Run:  python benchmarks/explore_skipgrams.py [--embedder wordllama] [--settings ...]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np
from _holdout import balanced, explore_args, flatten, holdout, print_mean_choice

from ir3de import Router, RouterConfig, compute_stats, load_embedder
from ir3de.eval import load_setting
from ir3de.solver import _PAIR_EPS

SETTINGS = ("reasoning-paper", "reasoning-2fold", "reasoning-xdata", "domains")
MASSES = (1e4, 1e5, 1e6)
WEIGHTS = (0.25, 0.5, 1.0)


def _skip_keys(ids: np.ndarray, V: int) -> np.ndarray:
    """The prompt's distinct skip-bigrams ``prev2 * (V + 1) + id``, prev2 = V before the
    prompt starts."""
    prev2 = np.concatenate([np.full(min(2, ids.size), V, dtype=np.int64),
                            ids[:-2].astype(np.int64)])
    return np.unique(prev2 * (V + 1) + ids)


def _skip_table(fit: Mapping[str, Sequence[np.ndarray]], V: int,
                mass: float) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, T)`` as ``solve_pairs`` makes them, from the skip-bigram document
    frequencies of each domain's fit prompts (domains in ``fit`` order)."""
    per_domain = []
    for prompts in fit.values():
        keys, counts = np.unique(np.concatenate([_skip_keys(x, V) for x in prompts]),
                                 return_counts=True)
        per_domain.append((keys, counts))
    keys = np.unique(np.concatenate([k for k, _ in per_domain]))
    C = np.zeros((keys.size + 1, len(per_domain)))
    for j, (own, counts) in enumerate(per_domain):
        C[np.searchsorted(keys, own), j] = counts
    q = C.sum(axis=1) + _PAIR_EPS
    q /= q.sum()
    return keys, np.log(C + mass * q[:, None]) - np.log(C.sum(axis=0) + mass)


def _skip_means(table: tuple[np.ndarray, np.ndarray], prompts: Sequence[np.ndarray],
                V: int) -> np.ndarray:
    """Each prompt's skip-bigram total divided by its number of distinct tokens."""
    keys, T = table
    out = np.empty((len(prompts), T.shape[1]))
    for i, x in enumerate(prompts):
        own = _skip_keys(x, V)
        rows = np.searchsorted(keys, own)
        rows[(rows == keys.size) | (keys[np.minimum(rows, keys.size - 1)] != own)] = keys.size
        out[i] = T[rows].sum(axis=0) / np.unique(x).size
    return out


def main() -> int:
    args = explore_args(__doc__, SETTINGS)
    emb = load_embedder(args.embedder)
    V = emb.vocab_size
    labels = ["default"] + [f"skip m={m:g} w={w:g}" for m in MASSES for w in WEIGHTS]
    rows: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    names = []
    for setting in args.settings:
        for split in load_setting(setting, args.data).splits:
            names.append(f"{setting} / {split.name}")
            domains = list(split.fit)
            inner, held = holdout(split.fit)
            held_texts, held_labels = flatten(held)
            scores = {}
            for part, fit, texts, gold in (
                    ("held", inner, held_texts, held_labels),
                    ("test", split.fit, split.test_texts, split.test_labels)):
                router = Router(emb, RouterConfig.preset("default")).fit_stats(
                    [compute_stats(emb, items, domain=d) for d, items in fit.items()])
                order = [list(router.experts).index(d) for d in domains]
                with np.errstate(divide="ignore"):
                    base = np.log(router.predict_proba(texts))[:, order]
                fit_ids = {d: [x for x in emb.encode_batch(items) if x.size]
                           for d, items in fit.items()}
                prompts = router.encode(texts)
                y = np.array([domains.index(d) for d in gold])
                scores[part, "default"] = (base, y)
                for m in MASSES:
                    extra = _skip_means(_skip_table(fit_ids, V, m), prompts, V)
                    for w in WEIGHTS:
                        scores[part, f"skip m={m:g} w={w:g}"] = (base + w * extra, y)
            print(f"## {names[-1]}")
            for label in labels:
                h = 100 * balanced(*scores["held", label])
                t = 100 * balanced(*scores["test", label])
                rows[label].append((h, t))
                print(f"  {label:22s} {h:6.2f} → {t:6.2f}", flush=True)
    print_mean_choice("variant", names, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
