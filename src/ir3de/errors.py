"""Exceptions raised by ir3de.

Every error a user can cause (bad file, bad shape, mismatched embedding, unknown
expert, …) is an :class:`IR3DEError` with a message that names the culprit, so
that the CLI and the gateway can report it without a traceback.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

# The exceptions; the helpers below are for ir3de's own modules.
__all__ = ["EmptyInputError", "ExpertError", "FingerprintMismatchError", "IR3DEError",
           "NotFittedError", "OutputExistsError", "StatsFormatError"]


class IR3DEError(ValueError):
    """Base class of every user-facing ir3de error."""


class FingerprintMismatchError(IR3DEError):
    """Statistics, routers or embedders made with different embeddings were mixed."""


class StatsFormatError(IR3DEError):
    """A statistics or router file is missing, corrupt, or has wrong shapes or values."""


class EmptyInputError(IR3DEError):
    """A corpus or prompt holds no countable token."""


class ExpertError(IR3DEError):
    """An expert (domain) name is unknown, duplicated or invalid."""


class NotFittedError(IR3DEError, AttributeError):
    """A router without experts was asked to route, describe or change one. An
    AttributeError too, as scikit-learn's own NotFittedError: a fitted attribute of an
    unfitted estimator does not exist (``hasattr(Router(), "classes_")`` is False), and
    code catching either base class catches it."""


class OutputExistsError(IR3DEError):
    """A file to be written without overwriting (``overwrite=False``) exists."""


def shown_path(path: object) -> str:
    """``path`` as an error message can print it: bytes of a file name that are not UTF-8
    (held as surrogates) shown escaped (``caf\\xe9``), not printed raw."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def listed(items: Sequence[str], limit: int = 5) -> str:
    """``items`` joined by commas, at most ``limit`` of them and then "and N more": a
    one-line message about hundreds of files or domains must stay readable."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def unknown_expert(name: object, experts: Sequence[str]) -> ExpertError:
    """The error for an expert name a router does not have, naming the ones it has."""
    return ExpertError(f"unknown expert {name!r}; experts are: {', '.join(experts)}")


def told_apart(a: str, b: str, n: int = 12) -> tuple[str, str]:
    """Abbreviations of two different fingerprints for a mismatch message: their first
    ``n`` characters, or as many more as it takes for the two to differ (a hand-edited
    file can share a longer prefix, and "made with 3f2a9c1b0d4e but this router uses
    3f2a9c1b0d4e" would tell nothing).

    >>> told_apart("abc123", "abc456", 2)
    ('abc1', 'abc4')
    """
    # zip stops at the shorter: a fingerprint that is a prefix of the other differs at its end.
    pairs = zip(a, b, strict=False)
    same = next((i for i, (x, y) in enumerate(pairs) if x != y), min(len(a), len(b)))
    n = max(n, same + 1)
    return a[:n], b[:n]


def require_path(path: object, what: str) -> None:
    """Raise :class:`IR3DEError` unless ``path`` is a path (``str`` or ``os.PathLike``):
    None or a number would reach ``open`` and fail with a TypeError naming no argument.
    ``what`` is the function taking it (``"Router.save"``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise IR3DEError(f"{what} takes a file path (str or os.PathLike), "
                         f"got {type(path).__name__}")


def require_file(path: Path, error: type[IR3DEError] = IR3DEError) -> None:
    """Raise ``error`` saying why ``path`` cannot be read as a file (missing, a directory,
    a device or pipe), unless it is a regular file."""
    if path.is_file():
        return
    reason = ("is a directory" if path.is_dir() else
              "not a regular file" if path.exists() else "no such file")
    raise error(f"{path}: {reason}")


def require_readable(path: Path, error: type[IR3DEError] = IR3DEError) -> None:
    """Raise ``error`` "PATH: cannot be read (why)" if ``path`` cannot be opened for
    reading: what a reader that failed on it asks first, as libraries report such a file
    as missing (safetensors) or as malformed (tokenizers)."""
    try:
        path.open("rb").close()
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None


def require_creatable(path: Path, error: type[IR3DEError] = IR3DEError) -> None:
    """Raise ``error`` if ``path`` cannot be created because an existing part of it is a
    file (``mkdir`` would only say "File exists", naming the wrong thing)."""
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise error(f"{path}: {blocker} is not a directory")


# Default-ignorable code points that are no format characters (Cf): the combining grapheme
# joiner, the Hangul and Khmer fillers, the Mongolian free variation selectors, the
# variation selectors and the tags. With the Cf ones (zero-width space, byte-order mark,
# soft hyphen, bidi controls) they show nothing, yet the tokenizer makes tokens of them.
_IGNORABLE = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
              (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0000, 0xE0FFF))


def is_blank(text: str) -> bool:
    """Whether ``text`` shows nothing: white space, control and format characters and the
    other default-ignorable ones only. Such a prompt has nothing to route on, although the
    tokenizer makes tokens of it (a zero-width space routed with confidence 0.9). Stops at
    the first visible character, so a long prompt costs nothing."""
    for ch in text:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"):
            continue
        code = ord(ch)
        if not any(low <= code <= high for low, high in _IGNORABLE):
            return False
    return True


def refuse_lone_text(texts: object, what: str = "prompts") -> None:
    """Raise :class:`IR3DEError` unless ``texts`` is an iterable of texts rather than one text.

    A ``str`` is itself an iterable of strings, so a lone prompt where a list is expected
    would otherwise be taken as one prompt per character, silently.
    """
    if isinstance(texts, (str, bytes)):
        raise IR3DEError(f"{what} must be a list (or other iterable) of strings, not a "
                         f"single {type(texts).__name__} (pass a one-item list for one)")
    if not hasattr(texts, "__iter__"):
        raise IR3DEError(f"{what} must be a list (or other iterable) of strings, not "
                         f"{type(texts).__name__}")
    # Iterating these gives something other than their texts, silently: a DataFrame its
    # column names, a mapping its keys, a 0-d array nothing (a TypeError).
    ndim = getattr(texts, "ndim", 1)
    if ndim != 1 and isinstance(ndim, int):
        kind = "table (DataFrame)" if hasattr(texts, "columns") else f"{ndim}-d array"
        raise IR3DEError(f"{what} must be one-dimensional, not a {kind}: pass one column of "
                         "texts (df['text']), or a one-item list for one text")
    if isinstance(texts, Mapping):
        raise IR3DEError(f"{what} must be a list (or other iterable) of strings, not a "
                         f"mapping ({type(texts).__name__}), whose keys would be read: pass "
                         "its .values() for the texts it holds")
