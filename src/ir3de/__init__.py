"""ir3de: route each LLM prompt to the right domain expert with a linear, closed-form router.

The ten-line tour::

    from ir3de import Router, compute_stats, load_embedder
    emb = load_embedder()                                   # bundled WordLlama table
    math = compute_stats(emb, ["What is 7 * 6?"], domain="math")
    code = compute_stats(emb, ["def f(x): return x"], domain="code")
    router = Router(emb).fit_stats([math, code])
    router.route("Compute 3 + 4").expert                    # 'math'
    router.add_expert("law", compute_stats(emb, ["The court held..."], domain="law"))
    router.save("router.safetensors")
"""

from .embedding import Embedder, load_embedder
from .errors import (
    EmptyInputError,
    ExpertError,
    FingerprintMismatchError,
    IR3DEError,
    NotFittedError,
    OutputExistsError,
    StatsFormatError,
)
from .router import DEFAULT_K, Decision, Evidence, Router, RouterConfig, VotingToken
from .statistics import DomainStats, PairCounts, compute_stats, merge

__all__ = [
    "DEFAULT_K",
    "Decision",
    "DomainStats",
    "Embedder",
    "EmptyInputError",
    "Evidence",
    "ExpertError",
    "FingerprintMismatchError",
    "IR3DEError",
    "NotFittedError",
    "OutputExistsError",
    "PairCounts",
    "Router",
    "RouterConfig",
    "StatsFormatError",
    "VotingToken",
    "compute_stats",
    "load_embedder",
    "merge",
]
__version__ = "0.1.0"
