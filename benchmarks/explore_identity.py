"""Issue 6 exploration: token-identity features (embedding ⊕ one-hot token id), solved in
closed form from per-domain token counts via a Schur complement.

Features z_t = [x̃_t, δ_t]. With counts c_d (the statistics every file already implies) and
balanced weights w_d, the normal equations have a diagonal identity block, so

    M   = A + λI - Ẽᵀ diag(c² / (c + μ)) Ẽ          (h+1) x (h+1)
    W_e = M⁻¹ (B - Ẽᵀ diag(c / (c + μ)) C)
    U   = (C - diag(c) Ẽ W_e) / (c + μ)              V x D, one row per token id

with c = Σ_d w_d c_d, C = [w_d c_d], A = Ẽᵀ diag(c) Ẽ, B = Ẽᵀ C: still additive in the
counts, O(V h² + h³). A token's scores are Ẽ W_e + U; a prompt takes the argmax of the
mean of its tokens' softmax probabilities (the avg selector). μ (the identity block's
ridge) is chosen per setting on a held-out 20 % of that setting's FIT data, never on test
prompts; μ = ∞ is the dense-only model (the current default, before column scaling).

Run:  python benchmarks/explore_identity.py [--embedder wordllama] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ir3de import Router, load_embedder
from ir3de.eval import load_setting
from ir3de.statistics import token_counts

MUS = (0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, np.inf)


def _fit(emb, fit: dict[str, list[str]], lam: float = 1e-2):
    counts = np.stack([token_counts(emb, texts)[0] for texts in fit.values()], axis=1)
    n = counts.sum(axis=0).astype(float)
    C = counts * (n.mean() / n)  # balanced: every domain weighs the same
    c = C.sum(axis=1)
    E = np.empty((emb.vocab_size, emb.dim + 1))
    for start, rows in emb.blocks():
        E[start:start + len(rows), :-1] = rows
    E[:, -1] = 1.0
    A = E.T @ (E * c[:, None])
    B = E.T @ C
    return E, A, B, C, c, lam


def _scores(model, mu: float) -> np.ndarray:
    E, A, B, C, c, lam = model
    h1 = A.shape[0]
    if np.isinf(mu):
        W = np.linalg.solve(A + lam * np.eye(h1), B)
        return E @ W
    M = A + lam * np.eye(h1) - E.T @ (E * (c * c / (c + mu))[:, None])
    R = B - E.T @ (C * (c / (c + mu))[:, None])
    W = np.linalg.solve(M, R)
    U = (C - c[:, None] * (E @ W)) / (c + mu)[:, None]
    return E @ W + U


def _balanced(emb, probs: np.ndarray, texts: list[str], labels: list[str],
              domains: list[str]) -> float:
    ids = emb.encode_batch(texts)
    pred = np.array([domains[int(np.argmax(probs[i].mean(axis=0)))] if i.size else domains[0]
                     for i in ids])
    labels = np.asarray(labels)
    return float(np.mean([np.mean(pred[labels == d] == d) for d in domains
                          if (labels == d).any()]))


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--embedder", default="wordllama")
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    emb = load_embedder(args.embedder)
    print(f"embedder {emb.name}; balanced accuracy (%), avg selector\n")
    print("| setting / split | μ chosen on held-out fit | held-out fit acc per μ "
          f"({', '.join(map(str, MUS))}) | test: dense only (μ=∞) | test: identity (chosen μ) "
          "| test: library default router |")
    print("|---|---|---|---|---|---|")
    for name in ("reasoning-2fold", "reasoning-xdata", "domains"):
        setting = load_setting(name, args.data)
        for split in setting.splits:
            rng = np.random.default_rng(0)
            inner, held_t, held_y = {}, [], []
            for d, texts in split.fit.items():
                perm = rng.permutation(len(texts))
                cut = int(0.8 * len(texts))
                inner[d] = [texts[i] for i in perm[:cut]]
                held_t += [texts[i] for i in perm[cut:]]
                held_y += [d] * (len(texts) - cut)
            domains = list(split.fit)
            model = _fit(emb, inner)
            held = {mu: _balanced(emb, _softmax(_scores(model, mu)), held_t, held_y, domains)
                    for mu in MUS}
            best = max(MUS, key=lambda m: (round(held[m], 4), -MUS.index(m)))
            full = _fit(emb, split.fit)
            dense = _balanced(emb, _softmax(_scores(full, np.inf)), split.test_texts,
                              split.test_labels, domains)
            ident = _balanced(emb, _softmax(_scores(full, best)), split.test_texts,
                              split.test_labels, domains)
            router = Router(emb).fit(split.fit_texts, split.fit_labels)
            pred = np.array(router.predict(split.test_texts))
            y = np.asarray(split.test_labels)
            lib = float(np.mean([np.mean(pred[y == d] == d) for d in domains]))
            print(f"| {name} / {split.name} | {best:g} | "
                  + " / ".join(f"{100 * held[m]:.1f}" for m in MUS)
                  + f" | {100 * dense:.1f} | **{100 * ident:.1f}** | {100 * lib:.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
