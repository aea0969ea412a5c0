"""Statistics files: round trips, atomic writes, and every kind of bad file."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raw_safetensors
from safetensors.numpy import save_file

import ir3de.store as store
from ir3de import (
    DomainStats,
    ExpertError,
    FingerprintMismatchError,
    IR3DEError,
    OutputExistsError,
    Router,
    StatsFormatError,
    merge,
)
from ir3de.statistics import load_stats_files
from ir3de.store import (
    atomic_write_bytes,
    atomic_write_text,
    claim_folder,
    locked_for_update,
    read_safetensors,
    safetensors_names,
    safetensors_tensor,
    write_safetensors,
)


@pytest.fixture()
def saved(toy_stats: dict[str, DomainStats], tmp_path: Path) -> tuple[Path, DomainStats]:
    path = tmp_path / "math.safetensors"
    toy_stats["math"].save(path)
    return path, toy_stats["math"]


@pytest.fixture()
def saved_v1(toy_stats: dict[str, DomainStats], emb,
             tmp_path: Path) -> tuple[Path, DomainStats]:
    """A version 1 file: A stored beside the counts it is formed from."""
    path = tmp_path / "math_v1.safetensors"
    stats = dataclasses.replace(toy_stats["math"], A=toy_stats["math"].gram(emb))
    stats.save(path)
    return path, stats


def rewrite(src: Path, dst: Path, tensors: dict | None = None, drop: str | None = None,
            **meta_changes) -> Path:
    """Copy an ir3de file with some tensors or metadata changed."""
    old_tensors, meta = read_safetensors(src)
    meta = {k: v for k, v in {**meta, **meta_changes}.items() if k != drop}
    write_safetensors(dst, tensors if tensors is not None else old_tensors, meta)
    return dst


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_stats_round_trip(saved: tuple[Path, DomainStats]) -> None:
    path, stats = saved
    loaded = DomainStats.load(path)
    np.testing.assert_array_equal(loaded.A, stats.A)
    np.testing.assert_array_equal(loaded.b, stats.b)
    for key in ("counts", "doc_counts"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(stats, key))
        assert getattr(loaded, key).dtype == np.int64
    for got, want in zip(loaded.pairs, stats.pairs, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64
    for f in dataclasses.fields(DomainStats):
        if f.name not in ("A", "b", "counts", "doc_counts", "pairs", "source"):
            assert getattr(loaded, f.name) == getattr(stats, f.name), f.name
    assert loaded.source == str(path)
    loaded.save(path.with_name("again.safetensors"))
    assert path.with_name("again.safetensors").read_bytes() == path.read_bytes()  # stable bytes
    assert leftovers(path.parent) == []


def test_safetensors_round_trip_and_header(tmp_path: Path) -> None:
    tensors = {"x": np.arange(6, dtype=np.float64).reshape(2, 3),
               "y": np.asfortranarray(np.ones((3, 2), dtype=np.float32))}
    meta = {"format": "anything", "nested": {"a": [1, 2]}, "text": "λ ≥ 0"}
    write_safetensors(tmp_path / "t.st", tensors, meta)
    got, got_meta = read_safetensors(tmp_path / "t.st")
    assert got_meta == meta
    for name, arr in tensors.items():
        np.testing.assert_array_equal(got[name], arr)
        assert got[name].dtype == arr.dtype
    assert sorted(safetensors_names(tmp_path / "t.st")) == ["x", "y"]
    mapped = safetensors_tensor(tmp_path / "t.st", "x")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, tensors["x"])
    # The metadata is plain JSON in the header: never pickle.
    (n,) = struct.unpack("<Q", (tmp_path / "t.st").read_bytes()[:8])
    header = json.loads((tmp_path / "t.st").read_bytes()[8:8 + n])
    assert json.loads(header["__metadata__"]["ir3de"]) == meta


def test_atomic_text(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "sub" / "f.json", "héllo")
    assert (tmp_path / "sub" / "f.json").read_text(encoding="utf-8") == "héllo"
    atomic_write_text(tmp_path / "sub" / "f.json", "new")
    assert (tmp_path / "sub" / "f.json").read_text() == "new"
    assert leftovers(tmp_path / "sub") == []


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()])
def test_crash_in_rename_keeps_old_file(saved, toy_stats, monkeypatch: pytest.MonkeyPatch,
                                        exc: BaseException) -> None:
    path, _ = saved
    before = path.read_bytes()

    def crash(src, dst):
        assert Path(src).exists() and Path(src).parent == path.parent  # temp file beside it
        raise exc

    monkeypatch.setattr(store.os, "replace", crash)
    # An OS error names the target, not the temporary file; an interrupt goes through.
    disk_error = isinstance(exc, OSError)
    with pytest.raises(IR3DEError if disk_error else type(exc),
                       match=f"^cannot write {re.escape(str(path))}: disk full$" if disk_error
                       else None):
        toy_stats["law"].save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []
    assert DomainStats.load(path).domain == "math"


def test_crash_mid_write_keeps_old_file(saved, toy_stats,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = saved
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(store.os, "fsync", failing_fsync)
    with pytest.raises(IR3DEError, match=f"cannot write {re.escape(str(path))}: I/O error"):
        toy_stats["law"].save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []
    # A crash before anything existed leaves nothing at all.
    monkeypatch.setattr(store.os, "fsync", failing_fsync)
    with pytest.raises(IR3DEError, match=r"new\.bin: I/O error"):
        atomic_write_bytes(path.parent / "new.bin", b"data")
    monkeypatch.undo()
    assert not (path.parent / "new.bin").exists() and leftovers(path.parent) == []


def test_no_overwrite_leaves_a_file_that_appears_meanwhile(toy_stats, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """overwrite=False: a file another process creates while this one writes (after any
    check a command made before its long job) is kept, and nothing else is left behind."""
    path = tmp_path / "late.stats"
    toy_stats["math"].save(path, overwrite=False)  # a new name is written
    assert DomainStats.load(path).domain == "math"
    path.write_text("precious")
    real_fsync = store.os.fsync

    def appears(fd: int) -> None:  # between the check and the rename
        real_fsync(fd)
        (tmp_path / "late2.stats").write_text("precious too")

    for saving, target in [(lambda: toy_stats["law"].save(path, overwrite=False), path),
                           (lambda: toy_stats["law"].save(tmp_path / "late2.stats",
                                                          overwrite=False),
                            tmp_path / "late2.stats")]:
        monkeypatch.setattr(store.os, "fsync", appears)
        with pytest.raises(OutputExistsError, match=rf"^{re.escape(str(target))} exists "
                                                    "now; it was left as it is and nothing"):
            saving()
        monkeypatch.undo()
    assert path.read_text() == "precious"
    assert (tmp_path / "late2.stats").read_text() == "precious too"
    assert leftovers(tmp_path) == []
    # Without hard links (some file systems): checked, then renamed.
    monkeypatch.setattr(store.os, "link", lambda *a: (_ for _ in ()).throw(
        PermissionError(1, "Operation not permitted")))
    with pytest.raises(OutputExistsError):
        toy_stats["law"].save(path, overwrite=False)
    toy_stats["law"].save(tmp_path / "fresh.stats", overwrite=False)
    assert DomainStats.load(tmp_path / "fresh.stats").domain == "law"
    assert path.read_text() == "precious" and leftovers(tmp_path) == []
    # Only the final rename says "exists now": a folder on the way that cannot be made
    # (a dangling link) is a plain write error, also with overwrite=True.
    (tmp_path / "dangling").symlink_to("nowhere")
    for overwrite in (True, False):
        with pytest.raises(IR3DEError, match=r"^cannot write .*dangling/x\.bin: File exists"):
            atomic_write_bytes(tmp_path / "dangling" / "x.bin", b"x", overwrite=overwrite)


def test_unwritable_target_is_named(toy_stats, tmp_path: Path) -> None:
    """The temporary file cannot even be created: the error names the target and why."""
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, where no file can be created")
    with pytest.raises(IR3DEError, match=r"^cannot write /proc/r\.st: No such file or "
                                         r"directory$"):
        toy_stats["math"].save("/proc/r.st")
    assert leftovers(Path("/proc")) == []
    # Directories and paths under files keep their own messages.
    with pytest.raises(IR3DEError, match=rf"^{re.escape(str(tmp_path))} is a directory$"):
        atomic_write_bytes(tmp_path, b"x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(IR3DEError, match=r"f/g\.st: .*/f is not a directory$"):
        atomic_write_bytes(tmp_path / "f" / "g.st", b"x")


def test_nan_or_inf_is_rejected(saved_v1, tmp_path: Path) -> None:
    path, stats = saved_v1
    A = stats.A.copy()
    A[0, 0] = np.nan
    with pytest.raises(StatsFormatError, match=r"'A' holds 1 NaN/Inf"):
        DomainStats.load(rewrite(path, tmp_path / "nan.st", {"A": A, "b": stats.b}))
    b = stats.b.copy()
    b[2] = -np.inf
    with pytest.raises(StatsFormatError, match=r"nan2\.st.*'b'"):
        DomainStats.load(rewrite(path, tmp_path / "nan2.st", {"A": stats.A, "b": b}))


def test_wrong_shapes_are_rejected(saved_v1, tmp_path: Path) -> None:
    path, stats = saved_v1
    cases = {
        "a_square.st": {"A": stats.A[:-1, :-1], "b": stats.b},
        "a_rect.st": {"A": stats.A[:, :-1], "b": stats.b},
        "b_long.st": {"A": stats.A, "b": np.append(stats.b, 1.0)},
        "b_2d.st": {"A": stats.A, "b": stats.b[:, None]},
        "missing.st": {"A": stats.A},
    }
    for name, tensors in cases.items():
        with pytest.raises(StatsFormatError, match=r"shape|missing"):
            DomainStats.load(rewrite(path, tmp_path / name, tensors))
    with pytest.raises(StatsFormatError, match="dim"):
        DomainStats.load(rewrite(path, tmp_path / "dim.st", dim=stats.dim + 1))
    tensors = read_safetensors(path)[0]
    del tensors["pair_counts"]
    with pytest.raises(StatsFormatError, match="only one of the tensors pair_keys and pair_counts"):
        DomainStats.load(rewrite(path, tmp_path / "half_pairs.st", tensors))
    tensors["pair_counts"] = np.ones((3, 2), dtype=np.int64)
    with pytest.raises(StatsFormatError, match="token-pair frequencies disagree"):
        DomainStats.load(rewrite(path, tmp_path / "pairs_2d.st", tensors))


@pytest.mark.parametrize("keep", [0, 4, 8, 100, -8, -1])
def test_truncated_file_is_rejected(saved, tmp_path: Path, keep: int) -> None:
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / "cut.st"
    bad.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(StatsFormatError, match=r"cut\.st"):
        DomainStats.load(bad)


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "junk.st").write_bytes(os.urandom(64))
    with pytest.raises(StatsFormatError):
        DomainStats.load(tmp_path / "junk.st")
    (tmp_path / "text.st").write_text("A,b\n1,2\n")
    with pytest.raises(StatsFormatError):
        DomainStats.load(tmp_path / "text.st")
    with pytest.raises(StatsFormatError, match="no such file"):
        DomainStats.load(tmp_path / "absent.st")
    with pytest.raises(StatsFormatError, match="is a directory"):
        DomainStats.load(tmp_path)


def test_foreign_safetensors_are_rejected(saved_v1, tmp_path: Path) -> None:
    path, stats = saved_v1
    save_file({"A": stats.A, "b": stats.b}, str(tmp_path / "plain.st"))
    with pytest.raises(StatsFormatError, match="without ir3de metadata"):
        DomainStats.load(tmp_path / "plain.st")
    save_file({"A": stats.A, "b": stats.b}, str(tmp_path / "other.st"),
              metadata={"format": "pt"})
    with pytest.raises(StatsFormatError, match="without ir3de metadata"):
        DomainStats.load(tmp_path / "other.st")
    save_file({"A": stats.A}, str(tmp_path / "badjson.st"), metadata={"ir3de": "{oops"})
    with pytest.raises(StatsFormatError, match="corrupt ir3de metadata"):
        DomainStats.load(tmp_path / "badjson.st")
    save_file({"A": stats.A}, str(tmp_path / "list.st"), metadata={"ir3de": "[1, 2]"})
    with pytest.raises(StatsFormatError, match="not a JSON object"):
        DomainStats.load(tmp_path / "list.st")
    with pytest.raises(StatsFormatError, match="not an ir3de statistics file"):
        DomainStats.load(rewrite(path, tmp_path / "fmt.st", format="ir3de-router"))
    for version in (3, 0, True, "1", 2.0):
        with pytest.raises(StatsFormatError, match=rf"version {re.escape(repr(version))} is not "
                                                   r"supported \(this ir3de reads 1 and 2\)"):
            DomainStats.load(rewrite(path, tmp_path / "ver.st", version=version))
    # Version 1 holds A, version 2 the counts and no A.
    with pytest.raises(StatsFormatError, match=r"v2\.st: a version 2 statistics file holds no "
                                               r"A \(it is formed from the token counts\)"):
        DomainStats.load(rewrite(path, tmp_path / "v2.st", version=2))
    tensors = read_safetensors(path)[0]
    del tensors["A"]
    with pytest.raises(StatsFormatError, match=r"noA\.st: missing tensor\(s\) \['A'\]"):
        DomainStats.load(rewrite(path, tmp_path / "noA.st", tensors))
    assert DomainStats.load(rewrite(path, tmp_path / "v2ok.st", tensors, version=2)).A is None
    del tensors["counts"]
    with pytest.raises(StatsFormatError, match=r"missing tensor\(s\) \['counts'\]"):
        DomainStats.load(rewrite(path, tmp_path / "v2bad.st", tensors, version=2))
    with pytest.raises(StatsFormatError, match="lacks 'fingerprint'"):
        DomainStats.load(rewrite(path, tmp_path / "nofp.st", drop="fingerprint"))


def test_tampered_counts_are_rejected(saved, tmp_path: Path) -> None:
    path, stats = saved
    for n_tokens in (stats.n_tokens + 1, stats.n_tokens * 2, 0):
        with pytest.raises(StatsFormatError, match="n_tokens"):
            DomainStats.load(rewrite(path, tmp_path / "n.st", n_tokens=n_tokens))
    # hand-edited metadata: the field and the value, not int()'s complaint
    for field, value, minimum in (("n_prompts", -1, 0), ("n_prompts", None, 0),
                                  ("n_tokens", "abc", 0), ("n_tokens", float("inf"), 0),
                                  ("max_tokens", "x", 1), ("max_tokens", 1.5, 1),
                                  ("max_tokens", 0, 1),
                                  # too big for int64 arithmetic: not an OverflowError
                                  ("n_prompts", 10**40, 0), ("n_tokens", 2**53 + 1, 0)):
        with pytest.raises(StatsFormatError,
                           match=rf"'{field}' must be an integer from {minimum} to 2\*\*53"):
            DomainStats.load(rewrite(path, tmp_path / "neg.st", **{field: value}))
    for recipe in ("wordllama", {"note": "no kind"}):
        # (a dict without a kind loaded, and a router saved with it did not: QA)
        with pytest.raises(StatsFormatError, match="'embedder' must be an embedder recipe "
                                                   r"\(an object with a string 'kind'\)"):
            DomainStats.load(rewrite(path, tmp_path / "emb.st", embedder=recipe))
    with pytest.raises(ExpertError, match="invalid domain name"):
        DomainStats.load(rewrite(path, tmp_path / "dom.st", domain=""))
    # A lone surrogate (JSON can escape one) loaded, and then broke every JSON answer and
    # header naming the expert: the gateway uploading it could not even list its experts.
    with pytest.raises(ExpertError, match=r"invalid domain name .* a lone surrogate"):
        DomainStats.load(rewrite(path, tmp_path / "sur.st", domain="py\ud800"))
    # Document frequencies must fit the token counts and the prompt count.
    tensors, _ = read_safetensors(path)
    for bad in (stats.counts + 1,                                  # above the token counts
                np.where(stats.counts > 0, 0, stats.doc_counts),   # zero where a token occurs
                -stats.doc_counts):
        with pytest.raises(StatsFormatError, match="document frequencies disagree"):
            DomainStats.load(rewrite(path, tmp_path / "df.st",
                                     tensors={**tensors, "doc_counts": bad}))
    with pytest.raises(StatsFormatError, match=r"doc_counts has shape \(31999,\) but counts "
                                               r"\(32000,\)"):
        DomainStats.load(rewrite(path, tmp_path / "df.st",
                                 tensors={**tensors, "doc_counts": stats.doc_counts[:-1]}))
    assert stats.doc_counts.max() > 1  # so one prompt cannot hold them
    with pytest.raises(StatsFormatError, match="document frequencies disagree"):
        DomainStats.load(rewrite(path, tmp_path / "np.st", n_prompts=1))


def test_mismatched_fingerprints_name_both_files(toy_stats, tmp_path: Path) -> None:
    a, b = tmp_path / "node_a.safetensors", tmp_path / "node_b.safetensors"
    toy_stats["math"].save(a)
    dataclasses.replace(toy_stats["math"], fingerprint="0" * 64).save(b)
    with pytest.raises(FingerprintMismatchError) as info:
        load_stats_files([a, b])
    assert str(a) in str(info.value) and str(b) in str(info.value)
    with pytest.raises(FingerprintMismatchError) as info:
        merge([DomainStats.load(a), DomainStats.load(b)])
    assert str(a) in str(info.value) and str(b) in str(info.value)
    with pytest.raises(FingerprintMismatchError, match="node_b"):
        DomainStats.load(a) + DomainStats.load(b)


def test_safetensors_tensor_errors(tmp_path: Path) -> None:
    write_raw_safetensors(tmp_path / "t.st", {"ok": ("F32", (2, 2), b"\0" * 16),
                                              "ints": ("I32", (2,), b"\0" * 8),
                                              "short": ("F64", (4,), b"\0" * 8)})
    np.testing.assert_array_equal(safetensors_tensor(tmp_path / "t.st", "ok"), np.zeros((2, 2)))
    with pytest.raises(StatsFormatError, match="unsupported dtype I32"):
        safetensors_tensor(tmp_path / "t.st", "ints")
    with pytest.raises(StatsFormatError, match="truncated or malformed"):
        safetensors_tensor(tmp_path / "t.st", "short")
    with pytest.raises(StatsFormatError, match="no tensor named '__metadata__'"):
        safetensors_tensor(tmp_path / "t.st", "__metadata__")
    with pytest.raises(StatsFormatError, match="no tensor named 'nope'"):
        safetensors_tensor(tmp_path / "t.st", "nope")
    # Data cut short after the header.
    write_raw_safetensors(tmp_path / "one.st", {"ok": ("F32", (2, 2), b"\0" * 16)})
    (tmp_path / "cut.st").write_bytes((tmp_path / "one.st").read_bytes()[:-4])
    with pytest.raises(StatsFormatError, match="truncated"):
        safetensors_tensor(tmp_path / "cut.st", "ok")
    (tmp_path / "huge.st").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    # (a JSONL file given as a table failed as "implausible safetensors header size")
    with pytest.raises(StatsFormatError, match=r"huge\.st: not a safetensors file "
                                               r"\(implausible header size 1000000000000\)$"):
        safetensors_names(tmp_path / "huge.st")
    (tmp_path / "badhdr.st").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{[")
    with pytest.raises(StatsFormatError, match="corrupt safetensors header"):
        safetensors_names(tmp_path / "badhdr.st")


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_fifo_is_never_replaced(toy_stats, tmp_path: Path, overwrite: bool) -> None:
    """The rename put a regular file in place of a named pipe (run as root, of /dev/null),
    also through a link to it."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    for path, shown in ((fifo, str(fifo)), (link, f"{link} (a link to {fifo})")):
        with pytest.raises(IR3DEError, match=rf"^{re.escape(shown)} is a named pipe \(FIFO\), "
                                             "not a regular file; it is never replaced"):
            toy_stats["math"].save(path, overwrite=overwrite)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert leftovers(tmp_path) == []


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    """A new file gets what open() would give it (0o666 minus the umask), not the 0o600 of
    the temporary file; a replaced file keeps its mode; an explicit mode wins."""
    mask = os.umask(0o022)
    os.umask(mask)
    new = tmp_path / "new.json"
    atomic_write_text(new, "{}")
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~mask
    new.chmod(0o640)
    atomic_write_text(new, "[]")
    assert stat.S_IMODE(new.stat().st_mode) == 0o640 and new.read_text() == "[]"
    atomic_write_bytes(tmp_path / "key", b"secret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600


def test_writing_through_a_symlink_updates_its_target(saved, toy_stats,
                                                      tmp_path: Path) -> None:
    """A deployment path linked to a versioned file keeps pointing there: os.replace onto
    the link used to replace the link itself with a regular file."""
    path, _ = saved
    releases = tmp_path / "releases"
    releases.mkdir()
    target = releases / "math-v1.safetensors"
    path.rename(target)
    target.chmod(0o640)
    link = tmp_path / "deployed" / "math.safetensors"
    link.parent.mkdir()
    link.symlink_to(os.path.relpath(target, link.parent))
    toy_stats["law"].save(link)
    assert link.is_symlink() and link.resolve() == target
    assert DomainStats.load(target).domain == "law"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the target's mode, kept
    # the temporary file lived beside the target (one file system), and is gone
    assert leftovers(releases) == [] and leftovers(link.parent) == []
    # a link to a link, and a link whose target does not exist yet
    chain = tmp_path / "chain.json"
    chain.symlink_to(link)
    atomic_write_text(chain, "{}")
    assert chain.is_symlink() and link.is_symlink() and target.read_text() == "{}"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(releases / "new.json")
    atomic_write_text(dangling, "[]")
    assert dangling.is_symlink() and (releases / "new.json").read_text() == "[]"
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    with pytest.raises(IR3DEError, match=r"cannot write .*loop\.json"):
        atomic_write_text(loop, "x")


def test_fingerprint_metadata_must_be_a_non_empty_string(saved, tmp_path: Path) -> None:
    """As router files require: 5, None or "" used to be turned into strings."""
    path, stats = saved
    for value in (5, None, "", ["x"]):
        want = rf"'fingerprint' must be a non-empty string, got {re.escape(repr(value))}$"
        with pytest.raises(StatsFormatError, match=want):
            DomainStats.load(rewrite(path, tmp_path / "fp.st", fingerprint=value))
    assert DomainStats.load(rewrite(path, tmp_path / "fp.st")).fingerprint == stats.fingerprint


@pytest.mark.parametrize("name", ["counts", "doc_counts", "pair_counts", "pair_keys"])
def test_count_tensors_stored_as_floats_are_refused(saved, tmp_path: Path, name: str) -> None:
    """Floats used to be truncated to int64 on load (2.5 tokens read as 2)."""
    path, _ = saved
    tensors, _ = read_safetensors(path)
    for dtype in (np.float64, np.float32):
        bad = {**tensors, name: tensors[name].astype(dtype)}
        with pytest.raises(StatsFormatError, match=rf"fl\.st: tensor '{name}' holds "
                                                   rf"{np.dtype(dtype).name} values; counts "
                                                   r"must be stored as integers$"):
            DomainStats.load(rewrite(path, tmp_path / "fl.st", tensors=bad))
    # other integer widths are counts still
    narrow = {**tensors, name: tensors[name].astype(np.int32 if name != "pair_keys"
                                                    else np.int64)}
    assert DomainStats.load(rewrite(path, tmp_path / "i32.st", tensors=narrow)).n_tokens > 0


@pytest.mark.parametrize(("header", "message"), [
    ([1, 2, 3], r"corrupt safetensors header \(a JSON list, not an object of tensor entries\)"),
    ({"model.embed_tokens.weight": "x"}, r"malformed safetensors header: tensor "
                                         r"'model\.embed_tokens\.weight' is \"x\", not an object"),
    ({"model.embed_tokens.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0]}},
     r"malformed safetensors header: tensor 'model\.embed_tokens\.weight' has data_offsets "
     r"\[0\], not \[begin, end\] with 0 ≤ begin ≤ end"),
    ({"t": {"dtype": ["F32"], "shape": [2, 2], "data_offsets": [0, 16]}},
     r"malformed safetensors header: tensor 't' has dtype \[\"F32\"\], not a string"),
    ({"t": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 16]}},
     r"malformed safetensors header: tensor 't' has shape \[2, -2\], not a list of sizes"),
    ({"t": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}},
     r"malformed safetensors header: tensor 't' has data_offsets \[16, 0\], not \[begin, "
     r"end\] with 0 ≤ begin ≤ end"),
])
def test_malformed_safetensors_headers_are_named(tmp_path: Path, header: object,
                                                 message: str) -> None:
    """A header that is JSON but not a safetensors header used to fail with an
    AttributeError or ValueError (a model folder's weights, an embedding table)."""
    from conftest import write_tiny_tokenizer

    from ir3de import load_embedder

    folder = tmp_path / "model"
    folder.mkdir()
    write_tiny_tokenizer(folder / "tokenizer.json")
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw
                                               + b"\0" * 64)
    where = re.escape(str(folder / "model.safetensors"))
    with pytest.raises(StatsFormatError, match=rf"^{where}: {message}$"):
        safetensors_names(folder / "model.safetensors")
    with pytest.raises(StatsFormatError, match=rf"^{where}: {message}$"):
        safetensors_tensor(folder / "model.safetensors", "t")
    with pytest.raises(StatsFormatError, match=rf"^{where}: {message}$"):
        load_embedder(folder)
    with pytest.raises(StatsFormatError, match=rf"^{where}: {message}$"):
        load_embedder(folder / "tokenizer.json", table=folder / "model.safetensors")


@pytest.mark.parametrize(("raw", "reason"), [
    ('{"a":' * 200_000 + "1" + "}" * 200_000, r"JSON nested too deeply"),
    ("[" * 200_000 + "]" * 200_000, r"JSON nested too deeply"),
    ('{"n_prompts": ' + "7" * 5000 + "}", r"an integer too long to read, of more than 4300 "
                                          r"digits"),
    # Parsed, but nested past what ir3de writes: such a file loaded (980 levels did), and a
    # router saving it again from a few calls deeper failed with RecursionError in json.dumps.
    ('{"signature": {"x": ' + "[" * 500 + "]" * 500 + "}}",
     r"JSON nested more than {depth} levels deep"),
    ('{"signature": {"x": ' + "[" * 63 + "]" * 63 + "}}",
     r"JSON nested more than {depth} levels deep"),
])
def test_metadata_nested_too_deeply_or_with_huge_integers_is_refused(
        saved, tmp_path: Path, raw: str, reason: str) -> None:
    """json.loads raised RecursionError (a CLI traceback, a gateway 500) and ValueError
    (an integer past Python's 4300 digits), which read_safetensors did not catch."""
    _, stats = saved
    target = tmp_path / "deep.stats"
    save_file({"b": stats.b}, str(target), metadata={"ir3de": raw})
    where = re.escape(str(target))
    with pytest.raises(StatsFormatError, match=rf"^{where}: corrupt ir3de metadata "
                                               rf"\({reason.format(depth=62)}\)$"):
        DomainStats.load(target)
    with pytest.raises(StatsFormatError, match=rf"^{where}: corrupt ir3de metadata "
                                               rf"\({reason.format(depth=64)}\)$"):
        Router.load(target)


def test_statistics_nest_two_levels_less_than_routers(saved, toy_stats, emb,
                                                     tmp_path: Path) -> None:
    """A router holds an expert's recipe and signature two levels deeper than its
    statistics file: statistics that loaded made a router (written in place by experts
    add) that no command could load again."""
    _, stats = saved
    def nested(levels: int) -> DomainStats:  # the metadata nests 2 + levels deep
        deep = json.loads("[" * levels + "]" * levels)
        return dataclasses.replace(stats, embedder={**stats.embedder, "note": deep})

    nested(60).save(tmp_path / "ok.stats")
    other = DomainStats.load(tmp_path / "ok.stats")
    router = Router(emb).fit_stats([other, *(s for d, s in toy_stats.items() if d != "math")])
    router.save(tmp_path / "r.safetensors")
    assert Router.load(tmp_path / "r.safetensors").experts == router.experts
    target = re.escape(str(tmp_path / "deep.stats"))
    with pytest.raises(StatsFormatError, match=rf"^{target}: not written: its metadata would "
                                               r"nest more than 62 levels deep"):
        nested(61).save(tmp_path / "deep.stats")
    assert not (tmp_path / "deep.stats").exists()
    # written past that check: refused on reading, naming the statistics' own limit
    deep = nested(61)
    write_safetensors(tmp_path / "deep.stats", {"b": deep.b}, {"embedder": deep.embedder})
    with pytest.raises(StatsFormatError, match=r"JSON nested more than 62 levels deep"):
        DomainStats.load(tmp_path / "deep.stats")


def test_metadata_nested_up_to_the_limit_is_read(tmp_path: Path) -> None:
    meta = {"signature": {"x": json.loads("[" * 62 + "]" * 62)}}  # 64 levels with both objects
    write_safetensors(tmp_path / "t.st", {"x": np.zeros(1)}, meta)
    assert read_safetensors(tmp_path / "t.st")[1] == meta


@pytest.mark.parametrize(("entry", "reason"), [
    ('{"t": ' + "[" * 200_000 + "]" * 200_000 + "}", r"JSON nested too deeply"),
    ('{"t": {"dtype": "F32", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 4]}}',
     r"an integer too long to read, of more than 4300 digits"),
])
def test_safetensors_headers_nested_too_deeply_or_with_huge_integers_are_refused(
        tmp_path: Path, entry: str, reason: str) -> None:
    """The header of a model's weights or an embedding table: the same json.loads."""
    path = tmp_path / "table.safetensors"
    path.write_bytes(struct.pack("<Q", len(entry)) + entry.encode() + b"\0" * 4)
    where = re.escape(str(path))
    with pytest.raises(StatsFormatError, match=rf"^{where}: corrupt safetensors header "
                                               rf"\({reason}\)$"):
        safetensors_names(path)
    with pytest.raises(StatsFormatError, match=rf"^{where}: corrupt safetensors header "
                                               rf"\({reason}\)$"):
        safetensors_tensor(path, "t")


@pytest.mark.parametrize(("dtype", "itemsize"), [
    ("BF16", 2), ("F8_E4M3", 1), ("F8_E5M2", 1), ("BOOL", 1), ("C64", 8)])
@pytest.mark.parametrize("name", ["A", "counts"])
def test_tensors_of_dtypes_ir3de_does_not_read_are_named(saved_v1, tmp_path: Path,
                                                         dtype: str, itemsize: int,
                                                         name: str) -> None:
    """safetensors' numpy loader raised AttributeError ('float8_e4m3fn') or TypeError
    ("data type 'bfloat16' not understood", passed on raw by the gateway) for dtypes numpy
    lacks; BOOL and C64 were cast silently (a complex A lost its imaginary part)."""
    path, stats = saved_v1
    tensors, meta = read_safetensors(path)
    kinds = {np.dtype("<f8"): "F64", np.dtype("<i8"): "I64"}  # what ir3de writes
    raw = {key: (kinds[value.dtype], value.shape, value.tobytes())
           for key, value in tensors.items()}
    target = tmp_path / "odd.stats"
    write_raw_safetensors(target, raw, {"ir3de": json.dumps(meta)})
    np.testing.assert_array_equal(DomainStats.load(target).A, stats.A)  # as written: loads
    raw[name] = (dtype, tensors[name].shape, b"\0" * (tensors[name].size * itemsize))
    write_raw_safetensors(target, raw, {"ir3de": json.dumps(meta)})
    message = (rf"^{re.escape(str(target))}: tensor '{name}' has dtype {dtype}, which ir3de "
               r"does not read: its files hold floating-point tensors as F64, F32 or F16 and "
               r"counts as integers \(I64, I32, I16, I8, U64, U32, U16 or U8\)$")
    with pytest.raises(StatsFormatError, match=message):
        DomainStats.load(target)
    with pytest.raises(StatsFormatError, match=message):
        Router.load(target)


def test_safetensors_tensor_refuses_a_shape_whose_size_wraps_around(tmp_path: Path) -> None:
    """np.prod wrapped [2**32, 2**32] around to 0 elements, which matched an empty byte
    range; np.memmap then failed with its own error."""
    write_raw_safetensors(tmp_path / "wrap.st", {"t": ("F32", (2**32, 2**32), b"")})
    with pytest.raises(StatsFormatError, match=r"wrap\.st: tensor 't' is truncated or "
                                               r"malformed$"):
        safetensors_tensor(tmp_path / "wrap.st", "t")


@pytest.mark.parametrize("name", ["r" * 246 + ".st", "é" * 125, "é" * 127 + "x",
                                  "x" * 241, "x" * 255])
def test_names_up_to_the_longest_the_file_system_allows_are_written(
        toy_stats, tmp_path: Path, name: str) -> None:
    """The temporary file was named .NAME.XXXXXXXX.tmp, 14 bytes longer than NAME: a legal
    name of 242 to 255 bytes failed as "File name too long" after all the work was done."""
    path = tmp_path / name
    toy_stats["math"].save(path)
    np.testing.assert_array_equal(DomainStats.load(path).A, toy_stats["math"].A)
    atomic_write_bytes(path, b"again", overwrite=True)
    assert path.read_bytes() == b"again" and leftovers(tmp_path) == []
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(path, b"not this", overwrite=False)
    assert path.read_bytes() == b"again" and leftovers(tmp_path) == []


def test_the_temporary_file_of_a_long_name_fits_and_shows_the_name(tmp_path: Path) -> None:
    path = tmp_path / ("é" * 127 + "x")  # 255 bytes
    prefix = store._temp_prefix(path)
    assert len(os.fsencode(prefix)) + 8 + len(".tmp") <= 255
    assert prefix == "." + "é" * 120 + "."  # cut before a character, not inside one
    assert store._temp_prefix(tmp_path / "math.stats") == ".math.stats."


def test_a_name_longer_than_the_file_system_allows_is_named(tmp_path: Path) -> None:
    """pathlib's is_symlink raised the OSError itself, before the write's own handling."""
    path = tmp_path / ("x" * 256)
    with pytest.raises(IR3DEError, match=rf"^cannot write {re.escape(str(path))}: File name "
                                         r"too long$"):
        atomic_write_bytes(path, b"data")
    assert list(tmp_path.iterdir()) == []


def test_an_update_waits_for_the_one_before_and_reads_what_it_wrote(tmp_path: Path,
                                                                    capsys) -> None:
    """Two read-modify-writes of one file at once (ir3de experts add twice) each read
    the old file, and the second write dropped the first's change."""
    import threading

    path = tmp_path / "router.bin"
    atomic_write_bytes(path, b"0")
    inside, release = threading.Event(), threading.Event()
    seen: list[bytes] = []

    def first() -> None:
        with locked_for_update(path):
            inside.set()
            release.wait(10)
            atomic_write_bytes(path, path.read_bytes() + b"+a")  # a new inode

    def second() -> None:
        inside.wait(10)
        with locked_for_update(path):
            seen.append(path.read_bytes())
            atomic_write_bytes(path, seen[-1] + b"+b")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(10)
    time.sleep(0.3)  # the second is waiting now
    assert not seen
    release.set()
    for thread in threads:
        thread.join(10)
    assert seen == [b"0+a"] and path.read_bytes() == b"0+a+b"
    assert "router.bin: waiting for another ir3de that is updating it" in \
        capsys.readouterr().err
    with locked_for_update(tmp_path / "missing"):  # nothing to lock: reading reports it
        pass


def test_a_claimed_folder_is_refused_to_a_second_claim(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "state"
    fd = claim_folder(folder, "state_dir")  # (created)
    try:
        with pytest.raises(IR3DEError, match=rf"state_dir {re.escape(str(folder))} is in use "
                                             r"by another process \(another gateway\?\)"):
            claim_folder(folder, "state_dir")
    finally:
        os.close(fd)
    os.close(claim_folder(folder, "state_dir"))  # free again
    (tmp_path / "file").write_text("x")
    with pytest.raises(IR3DEError, match="exists and is not a folder"):
        claim_folder(tmp_path / "file", "state_dir")
    with pytest.raises(IR3DEError, match=r"cannot create or open it \(Not a directory\)"):
        claim_folder(tmp_path / "file" / "state", "state_dir")


def test_writing_without_the_posix_only_calls(tmp_path: Path, monkeypatch) -> None:
    """On Windows (no os.pathconf or os.fchown; no os.fchmod before Python 3.13) every
    write raised AttributeError, and a failed one left its temporary file, which Windows
    cannot remove while it is open. Run here without those calls."""
    for name in ("pathconf", "fchmod", "fchown"):
        monkeypatch.delattr(os, name)
    path = tmp_path / "router.bin"
    atomic_write_bytes(path, b"one", mode=0o600)
    assert path.read_bytes() == b"one" and stat.S_IMODE(path.stat().st_mode) == 0o600
    atomic_write_bytes(path, b"two")  # replaced: keeps its mode
    assert path.read_bytes() == b"two" and stat.S_IMODE(path.stat().st_mode) == 0o600
    opened = []
    real_mkstemp, real_unlink = store.tempfile.mkstemp, Path.unlink

    def mkstemp(**kwargs) -> tuple[int, str]:
        opened.append(real_mkstemp(**kwargs))
        return opened[-1]

    def unlink(self: Path, **kwargs) -> None:  # the temporary file is closed by then
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(opened[-1][0])
        real_unlink(self, **kwargs)

    def fail(*_) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(store.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(os, "chmod", fail)  # (what stands for os.fchmod)
    with pytest.raises(IR3DEError, match="Operation not permitted"):
        atomic_write_bytes(path, b"three")
    assert path.read_bytes() == b"two" and os.listdir(tmp_path) == ["router.bin"]
    assert len(opened) == 1


def test_a_folder_is_checked_where_it_cannot_be_claimed(tmp_path: Path,
                                                        monkeypatch) -> None:
    """Without fcntl (Windows) claiming state_dir opened the folder itself, which Windows
    refuses, so a gateway with a state_dir never started there. Now a file in it is held
    open, and the folder is still checked."""
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl: ImportError
    folder = tmp_path / "state"
    fd = claim_folder(folder, "state_dir")
    try:
        assert os.fstat(fd).st_ino == (folder / ".ir3de-claim").stat().st_ino
        os.close(claim_folder(folder, "state_dir"))  # not exclusive there
    finally:
        os.close(fd)
    (tmp_path / "file").write_text("x")
    with pytest.raises(IR3DEError, match="exists and is not a folder"):
        claim_folder(tmp_path / "file", "state_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_file_that_cannot_be_read_is_not_called_missing(saved) -> None:
    """safetensors reports any failure to open as "No such file or directory": a file the
    user may not read was "not a readable safetensors file (No such file or directory)"."""
    path, _ = saved
    path.chmod(0)
    with pytest.raises(StatsFormatError, match=rf"^{re.escape(str(path))}: cannot be read "
                                               r"\(Permission denied\)$"):
        DomainStats.load(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another user")
def test_a_replaced_file_keeps_its_owner(tmp_path: Path) -> None:
    """Root replacing a service user's 0600 file (sudo ir3de experts add) made it root's,
    and the service could no longer read it."""
    path = tmp_path / "router.bin"
    atomic_write_bytes(path, b"old", mode=0o600)
    os.chown(path, 4321, 4322)
    atomic_write_bytes(path, b"new")
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4321, 4322, 0o600)
