"""Issue 6 exploration: fold token ids that differ only by case or by a word-start marker.

Every count table so far keys on the tokenizer's raw ids, so Llama-2's ``▁The``, ``The``,
``▁the`` and ``the`` are four unrelated features, each with a quarter of the evidence, and
a pair such as (``▁Calculate``, ``▁the``) is unseen if the fit prompts only wrote
``▁calculate``. TF-IDF + LR, the baseline the default trails on ``domains``, lower-cases
words before counting. This script asks whether the count router gains from the same
normalisation, done on token ids: a fixed map ``f`` from each id to a canonical id (the
smallest id with the same key), applied to every prompt before counting and before routing.
The router stays linear in one-hot (folded) token and pair ids, every statistic is still a
per-domain sum (add/remove and federation exact), and routing adds one table look-up per
token. Keys of a token string s:

* ``lower``: s lower-cased (WordLlama; MiniLM's vocabulary is already uncased, so the map
  is the identity there);
* ``space``: s without its word-start marker (``▁`` for Llama-2, the continuation marker
  ``##`` for WordPiece), unless nothing would be left;
* ``both``: the two together.

Byte-fallback and special tokens (``<...>``, ``[...]``) keep their own ids.

Families (today's scoring throughout: binary-NB unigram table, α = 0.03, plus the pooled
Dirichlet pair table, m = 1e5, every unseen key counted; ``explore_longer``'s ``_Grams``):

* ``pair raw``: today's default (checked to reproduce ``explore_smoothing``'s scoring);
* ``fold K``: unigrams and pairs both on folded ids;
* ``fpair K``: unigrams on raw ids, pairs on folded ids (fewer unseen pairs);
* ``funi K``: unigrams on folded ids, pairs on raw ids;
* ``add K w``: today's score plus w times the fully folded score (features raw ⊕ folded),
  w ∈ {0.25, 0.5, 1}.

Decision rule: ``fresh_unseen.py``'s selection rule (held-out pick per family, strictly
above today's default on held-out, then higher on the mean of the two fresh checks), fixed
with this file committed before its first run.

Run:  python benchmarks/explore_fold.py [--embedder wordllama] [--settings ...]
      python benchmarks/explore_fold.py --fresh "fold both"   (step 3)
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

import fresh_unseen
import numpy as np
from _holdout import script_parser
from explore_blend import PAIR_DIR
from explore_counts import _features
from explore_longer import _Grams
from explore_smoothing import Unigrams, _ngram_keys, _pairs

from ir3de import load_embedder

DEFAULT = "pair raw"
KEYS = ("lower", "space", "both")
WEIGHTS = (0.25, 0.5, 1.0)
Groups = dict[str, list[np.ndarray]]


def _key(token: str, how: str) -> str:
    """The folding key of one vocabulary string (special and byte tokens keep their own)."""
    if token[:1] + token[-1:] in ("<>", "[]"):
        return token
    if how in ("space", "both"):
        token = (token.lstrip("▁") or token) if not token.startswith("##") else token[2:] or token
    return token.lower() if how in ("lower", "both") else token


@functools.cache
def _folds(embedder: str) -> dict[str, np.ndarray]:
    """Per key kind, the map from every id to the smallest id with the same key."""
    tokens = load_embedder(embedder).tokens(range(load_embedder(embedder).vocab_size))
    out = {}
    for how in KEYS:
        first: dict[str, int] = {}
        out[how] = np.array([first.setdefault(_key(t, how), i) for i, t in enumerate(tokens)])
    return out


def _parts(V: int, fit: Groups, ids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Today's unigram and pair scores (P, D) of ``ids`` after fitting on ``fit``."""
    uni = _features(ids, "bin", V, bigram=False) @ Unigrams(fit, "bin", V).additive(0.03)
    pairs = _Grams(fit, lambda x: _ngram_keys(x, V, 2)).scores(ids)["each", 1e5]
    return uni, pairs


def _variants(V: int, fit: Groups, ids: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    embedder = script_parser(__doc__).parse_known_args()[0].embedder
    uni, pairs = _parts(V, fit, ids)
    out = {DEFAULT: uni + pairs}
    Mb = _features(ids, "bin", V, bigram=False)
    assert np.allclose(out[DEFAULT], _pairs(V, fit, ids, {"bin": Unigrams(fit, "bin", V)}, Mb,
                                            lambda family: family == "pair-dir")[PAIR_DIR])
    for how, f in _folds(embedder).items():
        funi, fpairs = _parts(V, {d: [f[x] for x in xs] for d, xs in fit.items()},
                              [f[x] for x in ids])
        out[f"fold {how}"] = funi + fpairs
        out[f"fpair {how}"] = uni + fpairs
        out[f"funi {how}"] = funi + pairs
        for w in WEIGHTS:
            out[f"add {how} w={w:g}"] = uni + pairs + w * (funi + fpairs)
    return out


if __name__ == "__main__":
    sys.exit(fresh_unseen.rule_main(__doc__, _variants, DEFAULT))
