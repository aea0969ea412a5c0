"""Statistics of corpora too large for one machine, counted on a Ray cluster.

``ir3de stats --engine ray [--address ...]`` (extra ``ir3de[ray]``) reads JSONL, Parquet or
text files (local paths, globs, or any filesystem pyarrow/fsspec understands, such as
``s3://``) with Ray Data, tokenizes and counts token ids per block on the workers, and
sums the counts (and the blocks' token-pair tables) on the driver, which then forms ``A_d``
and ``b_d``. Token counts are
integers and their sum does not depend on how the corpus was split, so the result is the
same statistics file, bit for bit, as the single-process path on the same texts.

Without ``--address`` a local Ray instance is started (and stopped) for the run; with one,
the job joins that cluster. Texts are read as the local path reads them: the JSONL or
Parquet ``text`` field, or one prompt per non-blank line of a text file (with Windows line
ends normalised); blank prompts are skipped and each prompt is capped at ``max_tokens``.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import FORMATS, CorpusFormat, infer_format
from .embedding import DEFAULT_MAX_TOKENS, Embedder, load_embedder
from .errors import EmptyInputError, FingerprintMismatchError, IR3DEError
from .statistics import (
    DomainStats,
    stats_from_counts,
    sum_pairs,
    token_counts,
    validate_domain_name,
)

__all__ = ["ray_stats"]

_BATCH = 1024


def _ray() -> Any:
    try:
        import ray
        import ray.data  # Ray Data ships with ray[data]
    except ImportError:
        raise IR3DEError("the Ray engine needs its extra: pip install 'ir3de[ray]'") from None
    return ray


def _expand(paths: Sequence[str]) -> list[str]:
    """Local globs expanded (sorted); URLs and plain paths passed to Ray as they are."""
    out: list[str] = []
    for path in paths:
        if "://" not in path and any(c in path for c in "*?["):
            matched = sorted(glob.glob(path))
            if not matched:
                raise IR3DEError(f"{path}: no file matches")
            out += matched
        elif "://" not in path and not os.path.exists(path):
            raise IR3DEError(f"{path}: no such file")
        else:
            out.append(path)
    return out


def _count_block(batch: Any, *, spec: dict[str, Any], fingerprint: str, column: str, fmt: str,
                 max_tokens: int) -> dict[str, np.ndarray]:
    """Ray Data map_batches task: the token counts of one block of texts.

    A task, not an actor pool: actors would hold every CPU of a small cluster and starve
    the read tasks. The embedder is cached per worker process by ``load_embedder``.
    """
    embedder = load_embedder(spec)
    if embedder.fingerprint != fingerprint:
        # A worker with other package versions would count with another table.
        raise FingerprintMismatchError(
            f"a Ray worker loaded embedder {embedder.name} with fingerprint "
            f"{embedder.fingerprint[:12]}, the driver has {fingerprint[:12]}: "
            "install the same ir3de and embedding packages on every node")
    texts = batch.column(column).to_pylist()
    if any(t is not None and not isinstance(t, str) for t in texts) or \
            (fmt == "jsonl" and any(t is None for t in texts)):
        raise IR3DEError(f"a record has no string field {column!r}")
    if fmt == "text":
        texts = [t.rstrip("\r") for t in texts]
    counted = token_counts(embedder, [t for t in texts if t is not None], max_tokens=max_tokens)
    # The block's pair table is ragged: one object cell holding keys then counts, which Ray
    # Data carries as a variable-shaped tensor column.
    pairs = np.empty(1, dtype=object)
    pairs[0] = np.concatenate(counted.pairs)
    return {"counts": counted.counts[None, :], "doc_counts": counted.doc_counts[None, :],
            "n_prompts": np.array([counted.n_prompts]), "pairs": pairs}


def ray_stats(paths: Sequence[str], embedder: Embedder, *, domain: str,
              fmt: CorpusFormat | None = None, text_field: str = "text",
              max_tokens: int = DEFAULT_MAX_TOKENS, address: str | None = None,
              workers: int | None = None, progress: bool = True) -> DomainStats:
    """One domain's statistics, counted on Ray; equal to :func:`~ir3de.compute_stats`.

    ``workers`` is the number of counting tasks at a time (default: one per cluster CPU);
    without ``address`` and with Ray not yet initialised, a local instance with
    ``workers`` CPUs is started for the call and shut down after it.

    >>> ray_stats(["corpus/*.jsonl"], load_embedder(), domain="math")  # doctest: +SKIP
    """
    validate_domain_name(domain)
    ray = _ray()
    files = _expand(paths)
    fmt = fmt or infer_format(Path(files[0].split("?")[0]))
    if fmt not in FORMATS:
        raise IR3DEError(f"unknown corpus format {fmt!r}; choose one of {', '.join(FORMATS)}")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=workers if address is None else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        if not progress:  # quiet runs stay quiet: Ray Data logs every execution at INFO
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        if fmt == "jsonl":
            ds = ray.data.read_json(files)
        elif fmt == "parquet":
            ds = ray.data.read_parquet(files, columns=[text_field])
        else:
            ds = ray.data.read_text(files, drop_empty_lines=True)
        column = "text" if fmt == "text" else text_field
        if column not in ds.columns():
            raise IR3DEError(f"{', '.join(files)}: no field {column!r} (fields: "
                             f"{', '.join(ds.columns())})")
        pool = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        counted = ds.map_batches(
            _count_block, batch_size=_BATCH, batch_format="pyarrow",
            compute=ray.data.TaskPoolStrategy(size=pool),
            fn_kwargs={"spec": embedder.spec, "fingerprint": embedder.fingerprint,
                       "column": column, "fmt": fmt, "max_tokens": max_tokens})
        counts = np.zeros(embedder.vocab_size, dtype=np.int64)
        doc_counts = np.zeros(embedder.vocab_size, dtype=np.int64)
        n_prompts = 0
        keys, pair_counts = [], []
        for batch in counted.iter_batches(batch_size=None, batch_format="numpy"):
            counts += batch["counts"].sum(axis=0, dtype=np.int64)
            doc_counts += batch["doc_counts"].sum(axis=0, dtype=np.int64)
            n_prompts += int(batch["n_prompts"].sum())
            for cell in batch["pairs"]:
                half = len(cell) // 2
                keys.append(np.asarray(cell[:half], dtype=np.int64))
                pair_counts.append(np.asarray(cell[half:], dtype=np.int64))
    except ray.exceptions.RayError as exc:
        # A worker's IR3DEError arrives wrapped: surface its own message.
        cause = exc.cause if isinstance(getattr(exc, "cause", None), IR3DEError) else None
        raise IR3DEError(str(cause) if cause else f"Ray job failed: {exc}") from None
    finally:
        if started:
            ray.shutdown()
    if counts.sum() == 0:
        raise EmptyInputError(f"domain {domain!r}: the corpus holds no countable token "
                              f"({n_prompts} prompt(s) read)")
    return stats_from_counts(embedder, counts, domain=domain, n_prompts=n_prompts,
                             max_tokens=max_tokens, doc_counts=doc_counts,
                             pairs=sum_pairs(np.concatenate(keys), np.concatenate(pair_counts)))
