"""Ed25519 signatures on statistics files, for federations of parties that do not trust
each other (extra ``ir3de[sign]``: the ``cryptography`` package).

A party creates a key pair once (``ir3de keygen -o party.key`` writes ``party.key``, the
private key, and ``party.pub``, the public key to hand to whoever builds routers), signs
what it ships (``ir3de stats ... --sign party.key``), and a builder accepts only files
signed by keys it trusts (``ir3de build ... --trust KEYS_DIR``, a folder of ``*.pub``).

What is signed: the SHA-256 of the statistics' metadata (canonical JSON: domain, counts,
embedder fingerprint, format) followed by the bytes of ``A`` and ``b`` as little-endian
float64 and, when the file has them, the token-id counts, document frequencies and token-pair
keys and frequencies as little-endian int64. Any
change to the numbers, the counts or the domain name breaks the signature.
The signature, the signer's public key and the algorithm are stored in the file's metadata.

>>> generate_key("party.key")                      # doctest: +SKIP
PosixPath('party.pub')
>>> signed = sign(stats, "party.key"); signed.save("math.stats")   # doctest: +SKIP
>>> verify(DomainStats.load("math.stats"), load_trusted("keys/"))  # doctest: +SKIP
'party.pub'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IR3DEError, require_file
from .statistics import DomainStats
from .store import atomic_write_bytes

__all__ = ["digest", "generate_key", "load_private_key", "load_trusted", "public_key_path",
           "sign", "verify", "verify_all"]

_ALG = "ed25519"
_KEY_BYTES = 32  # an Ed25519 public key
_SIGNATURE_BYTES = 64  # an Ed25519 signature
_HINT = "signing needs the cryptography package: pip install 'ir3de[sign]'"


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise IR3DEError(_HINT) from None
    return ed25519


def _serialization() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization


def digest(stats: DomainStats) -> bytes:
    """SHA-256 over the canonical metadata and the arrays (what a signature covers)."""
    meta = json.dumps(stats.metadata(), sort_keys=True, separators=(",", ":"))
    h = hashlib.sha256(meta.encode())
    if stats.A is not None:  # version 1 statistics; version 2 ones are formed from counts
        h.update(np.ascontiguousarray(stats.A, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(stats.b, dtype="<f8").tobytes())
    if stats.counts is not None:  # routers with identity features read them: sign them too
        h.update(np.ascontiguousarray(stats.counts, dtype="<i8").tobytes())
    if stats.doc_counts is not None:  # and the nb router reads these
        h.update(np.ascontiguousarray(stats.doc_counts, dtype="<i8").tobytes())
    # and, with pair features and the TF-IDF ridge, their tables (none: digests as before)
    for table in (stats.pairs, stats.tfidf):
        for arr in table or ():
            h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
    return h.digest()


def public_key_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`generate_key` puts the public key of private key ``path``: beside it,
    with the suffix ``.pub``. A ``.pub`` private key name is refused: its public key would
    overwrite it."""
    given = os.fspath(path)
    path = Path(path)
    if path.name in ("", ".."):  # "", ".", "/", "..": a folder or nothing, not a file name
        raise IR3DEError(f"{given!r} is not a file name: name the private key file (e.g. "
                         "party.key, whose public key goes beside it as party.pub)")
    if path.suffix.lower() == ".pub":  # e.PUB and e.pub are one file where case folds
        name = path.with_suffix("").with_suffix(".key")
        raise IR3DEError(f"{path}: name the private key, not a .pub file (e.g. {name}, "
                         f"whose public key goes beside it as {name.with_suffix('.pub')})")
    return path.with_suffix(".pub")


def generate_key(path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write a new private key to ``path`` (PEM, owner-only) and its public key beside it
    (``.pub``); returns the public key's path."""
    ed = _ed25519()
    ser = _serialization()
    path = Path(path)
    public_path = public_key_path(path)
    for p in (path, public_path):
        if p.exists() and not force:  # shared by the CLI: name both spellings
            raise IR3DEError(f"{p} exists; pass force=True (--force on the command line) "
                             "to overwrite it")
    key = ed.Ed25519PrivateKey.generate()
    private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                ser.NoEncryption())
    public = key.public_key().public_bytes(ser.Encoding.PEM,
                                           ser.PublicFormat.SubjectPublicKeyInfo)
    # A key pair is written whole or not at all. Without force neither file replaces one
    # that appeared since the check (another keygen racing); with it, a public key that
    # cannot be written puts the previous private key back, as a key lost to a failed
    # --force cannot be made again. (atomic_write_bytes writes through a symbolic link, so
    # the undoing is done on its target and the link stays.)
    try:
        target = path.resolve() if path.is_symlink() else path
    except (OSError, RuntimeError) as exc:  # a loop of links (3.13: OSError)
        raise IR3DEError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}"
                         ) from None
    previous = None
    if force and target.is_file():
        try:
            previous = target.read_bytes(), stat.S_IMODE(target.stat().st_mode)
        except OSError as exc:
            raise IR3DEError(f"cannot replace {path}: {exc.strerror or exc}") from None
    atomic_write_bytes(path, private, mode=0o600, overwrite=force)  # 0o600: it is private
    try:
        atomic_write_bytes(public_path, public, overwrite=force)
    except BaseException:
        if previous is None:
            target.unlink(missing_ok=True)  # a private key whose public key is someone else's
        else:
            atomic_write_bytes(target, previous[0], mode=previous[1])
        raise
    return public_path


def load_private_key(path: Path) -> Any:
    """The Ed25519 private key of a PEM file (checked before long work starts)."""
    ed = _ed25519()
    ser = _serialization()
    from cryptography.exceptions import UnsupportedAlgorithm

    require_file(path)  # a folder is said to be one (it is there, just not a key file)
    try:
        key = ser.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise IR3DEError(f"{path}: not a PEM private key ({exc})") from None
    except UnsupportedAlgorithm as exc:  # e.g. an SM2 key or one on a brainpoolP160r1 curve
        raise IR3DEError(f"{path}: {_unsupported(exc)}") from None
    if not isinstance(key, ed.Ed25519PrivateKey):
        raise IR3DEError(f"{path}: not an Ed25519 private key")
    _check_pair(path, key)
    return key


def _check_pair(path: Path, key: Any) -> None:
    """Refuse a private key whose public key beside it (``.pub``) is another key's: a
    keygen killed (kill -9) between its two writes leaves that, and everything signed
    with the key would then fail to verify against the public key handed out. A missing
    or unreadable public key is not checked (it may live elsewhere)."""
    ser = _serialization()
    try:
        public_path = public_key_path(path)
        if not public_path.is_file():  # (a pipe there would block the read for ever)
            return
        public = ser.load_pem_public_key(public_path.read_bytes())
    except (IR3DEError, OSError, ValueError, TypeError):
        return
    try:
        raw = public.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw).hex()
    except (ValueError, TypeError):  # not an Ed25519 key: not this key's pair
        raw = None
    if raw != _raw_public(key.public_key()):
        raise IR3DEError(f"{path}: {public_path} beside it is another key's public key (a "
                         "keygen cut short?), so signatures would not verify against it; "
                         f"make a new pair with ir3de keygen -o {path} --force")


def _unsupported(exc: Exception) -> str:
    """Why ``cryptography`` cannot load a key (``UnsupportedAlgorithm`` ``exc``), and what
    ir3de signs with."""
    return (f"unsupported key type ({exc}); ir3de signs with Ed25519 keys only "
            "(ir3de keygen makes them)")


def _raw_public(key: Any) -> str:
    ser = _serialization()
    return key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw).hex()


def _is_hex(value: object, n_bytes: int) -> bool:
    """Whether ``value`` is ``n_bytes`` bytes written as hexadecimal digits (bytes.fromhex
    alone would also take spaces)."""
    return isinstance(value, str) and re.fullmatch(f"[0-9a-fA-F]{{{2 * n_bytes}}}",
                                                   value) is not None


def _require_stats(stats: object, caller: str) -> None:
    if not isinstance(stats, DomainStats):
        raise IR3DEError(f"{caller}: stats must be DomainStats (DomainStats.load(path)), not "
                         f"{type(stats).__name__}")


def sign(stats: DomainStats, key_path: str | os.PathLike[str]) -> DomainStats:
    """``stats`` with a signature by the private key at ``key_path``."""
    _require_stats(stats, "sign")
    key = load_private_key(Path(key_path))
    signature = {"alg": _ALG, "public_key": _raw_public(key.public_key()),
                 "signature": key.sign(digest(stats)).hex()}
    return replace(stats, signature=signature)


def load_trusted(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Trusted public keys of a folder of ``*.pub`` files: ``{raw key hex: file name}``."""
    ed = _ed25519()
    ser = _serialization()
    folder = Path(folder)
    if not folder.is_dir():
        what = "a file, not a folder" if folder.exists() else "no such folder"
        raise IR3DEError(f"{folder}: {what} of trusted keys (*.pub)")
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        # Listed with iterdir, not glob: glob takes an unreadable folder for an empty one.
        # Any case of .pub, as keygen reads it: ALICE.PUB was skipped without a word.
        public = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".pub")
    except OSError as exc:
        raise IR3DEError(f"{folder}: cannot list this folder of trusted keys "
                         f"({exc.strerror or exc})") from None
    trusted = {}
    for path in public:
        require_file(path)  # a folder named so, or a pipe (whose read would block for ever)
        try:
            key = ser.load_pem_public_key(path.read_bytes())
        except ValueError as exc:
            raise IR3DEError(f"{path}: not a PEM public key ({exc})") from None
        except UnsupportedAlgorithm as exc:
            raise IR3DEError(f"{path}: {_unsupported(exc)}") from None
        if not isinstance(key, ed.Ed25519PublicKey):
            raise IR3DEError(f"{path}: not an Ed25519 public key")
        trusted[_raw_public(key)] = path.name
    if not trusted:
        raise IR3DEError(f"{folder}: no *.pub trusted keys")
    return trusted


def verify(stats: DomainStats, trusted: dict[str, str]) -> str:
    """Check ``stats`` is signed by a trusted key and untouched; returns the key's file name.

    ``trusted`` is what :func:`load_trusted` returns for a folder of public keys.
    Errors name the statistics file and say what is wrong: unsigned, signed by an
    unknown key, or changed after signing.
    """
    _require_stats(stats, "verify")
    if not isinstance(trusted, dict):  # e.g. the folder itself, which load_trusted reads
        raise IR3DEError(f"verify: trusted must be the keys load_trusted(folder) returns, "
                         f"not {type(trusted).__name__} {trusted!r}")
    from cryptography.exceptions import InvalidSignature

    ed = _ed25519()
    sig = stats.signature
    if not sig and stats.signature_dropped:
        raise IR3DEError(f"{stats.source}: not signed any more: the signature was dropped when "
                         f"{stats.signature_dropped} (derived statistics are new data); "
                         "verify the signed statistics before deriving others from them")
    if not sig:
        # A file does not record that a signature was dropped (merging or renaming signed
        # statistics makes new data), so the message says how either comes about.
        raise IR3DEError(f"{stats.source}: not signed (sign it with ir3de stats --sign KEY, "
                         "or a merged file with ir3de merge --sign KEY: merging or renaming "
                         "signed statistics drops their signature)")
    if not isinstance(sig, dict) or sig.get("alg") != _ALG:
        raise IR3DEError(f"{stats.source}: malformed signature metadata (expected an object "
                         f"with alg {_ALG!r})")
    for field, n_bytes in (("public_key", _KEY_BYTES), ("signature", _SIGNATURE_BYTES)):
        if not _is_hex(sig.get(field), n_bytes):
            raise IR3DEError(f"{stats.source}: malformed signature metadata: {field!r} must "
                             f"be {2 * n_bytes} hexadecimal digits")
    name = trusted.get(sig["public_key"].lower())  # (hex in either case, as the signature's)
    if name is None:
        raise IR3DEError(f"{stats.source}: signed by a key that is not trusted "
                         f"(public key {sig['public_key'][:16]}…)")
    try:
        key = ed.Ed25519PublicKey.from_public_bytes(bytes.fromhex(sig["public_key"]))
        key.verify(bytes.fromhex(sig["signature"]), digest(stats))
    except InvalidSignature:
        raise IR3DEError(f"{stats.source}: signature does not match its contents: the file "
                         "was changed after it was signed") from None
    return name


def verify_all(stats: Iterable[DomainStats], trusted: dict[str, str]) -> list[str]:
    """:func:`verify` each of ``stats`` in turn, raising its error for the first that is
    not signed by a key of ``trusted`` (what :func:`load_trusted` returns) or was changed
    since; returns the keys' file names in order. What ``ir3de build --trust DIR``,
    ``ir3de inspect --trust DIR`` and a gateway's ``trust`` run before anything is solved,
    written or printed."""
    return [verify(s, trusted) for s in stats]
