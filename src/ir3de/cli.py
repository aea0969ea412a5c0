"""The ``ir3de`` command line: fit statistics, merge them, build, inspect and use routers.

Run ``ir3de --help`` or ``ir3de COMMAND --help``. Every user error prints one
line ``ir3de: error: …`` on stderr and exits 1 (2 for malformed command lines);
nothing is written when a command fails.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from tqdm.auto import tqdm

# Absolute imports: the gateway's reader processes (anyio.to_process) run the program's
# main module again as a file, which for `python -m ir3de.cli` is this one.
from ir3de import __version__
from ir3de.data import (
    FORMATS,
    decode_lines,
    default_data_dir,
    infer_format,
    local_path,
    missing_data,
    parse_numbered_jsonl,
    read_corpus,
    reasoning_split,
    record_id,
    refuse_repeated_paths,
    text_lines,
)
from ir3de.distributed import local_matches
from ir3de.embedding import (
    DEFAULT_MAX_TOKENS,
    load_embedder,
    load_recorded,
    misplaced_table_or_tensor,
    recipe_name,
)
from ir3de.errors import (
    IR3DEError,
    StatsFormatError,
    is_blank,
    listed,
    require_creatable,
    require_file,
    shown_path,
    unknown_expert,
)
from ir3de.router import (
    DEFAULT_K,
    MODELS,
    PRESETS,
    UNSEEN,
    Decision,
    Router,
    RouterConfig,
    Smoothing,
    read_router_meta,
)
from ir3de.selector import SELECTORS
from ir3de.solver import FEW_MIN_PROMPTS, FEW_PROMPTS, FEW_SPELLING_FLOOR, FEW_SPELLING_PRIOR
from ir3de.statistics import (
    DomainStats,
    compute_stats,
    domain_name_problem,
    load_stats_files,
    merge,
    validate_domain_name,
)
from ir3de.store import (
    atomic_write_bytes,
    locked_for_update,
    read_safetensors,
    refuse_special_file,
)
from ir3de.tfidf import MAX_BUCKETS, TFIDF_BUCKETS

if TYPE_CHECKING:  # imported where calibrate runs
    from ir3de.calibration import Calibration

EPILOG = """\
typical workflow:
  ir3de stats gsm8k.jsonl --domain math -o math.stats       # each domain owner, privately
  ir3de stats mbpp.jsonl  --domain coding -o coding.stats
  ir3de build math.stats coding.stats -o router.safetensors # anyone holding the files
  ir3de route router.safetensors "What is 17 * 23?"          # -> {"expert": "math", ...}
  ir3de experts add router.safetensors law.stats             # a new expert joins
  ir3de calibrate router.safetensors held.jsonl             # the gateway's fallback cuts
  ir3de demo                                                # the whole job on ../shared/data
"""


# Controls, the bidirectional overrides and isolates, and the invisible format characters
# (not the joiners, which spell Persian, Indic and emoji names), and lone surrogates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e"
                      "\u2060-\u2069\ufeff\ud800-\udfff]")


def _one_line(message: str) -> str:
    """An error message as the one line it is meant to be: the control characters of the
    names it quotes (a file named with a newline, a terminal escape sequence) shown escaped,
    as ``repr`` shows them, not acted on by the terminal; so are the invisible characters
    (a right-to-left override reversed the rest of the line). A byte of a file name or an
    argument that is not UTF-8 (held as a surrogate, U+DC80-U+DCFF) is shown as that byte,
    ``\\xe9``, as :func:`~ir3de.errors.shown_path` shows it."""
    def escaped(match: re.Match[str]) -> str:
        char = match.group()
        return shown_path(char) if "\udc80" <= char <= "\udcff" else repr(char)[1:-1]

    return _CONTROL.sub(escaped, message)


def _note(message: str) -> None:
    """A command's summary line on standard error, the file names in it shown as errors
    show them (:func:`_one_line`): a file named with a terminal escape cleared the screen,
    one with a newline split the line."""
    print(_one_line(message), file=sys.stderr)


class _Messages(argparse.ArgumentParser):
    """argparse's parser, with its messages as ir3de prints its own: usage errors on one
    line (:func:`_one_line`), and help or version text that cannot be written (a full disk)
    an error, where argparse drops the OSError and exits with status 0."""

    def error(self, message: str) -> NoReturn:
        super().error(_one_line(message))

    def _print_message(self, message: str, file: Any = None) -> None:
        if message and (file is None or file is sys.stdout):
            _write_stdout(message)
            _flush_stdout()  # (a buffered write fails only here)
        else:
            super()._print_message(message, file)


class _Parser(_Messages):
    """A subcommand parser whose positionals may come between options: ``route ROUTER
    --explain PROMPT``, ``build a.stats -o r.st b.stats``.

    argparse alone fills a ``*`` or ``+`` positional only from the arguments before the
    first option and calls later ones "unrecognized". A command line it parses by itself
    is parsed as before (same result, same errors, same help); only one it leaves
    arguments over from is parsed again with options and positionals intermixed
    (:meth:`~argparse.ArgumentParser.parse_known_intermixed_args`), which gives every
    positional its arguments wherever they stand. What is still left over (an unknown
    option) is reported as before.
    """

    _intermixing = False
    # A check of the parsed options taken together (``eval``: _eval_option_conflict),
    # whose complaint is a usage error like argparse's own (usage line, exit 2).
    conflicts: Callable[[argparse.Namespace], str | None] | None = None

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = self._parse_known(args, namespace)
        if not self._intermixing:  # (not a partial parse)
            if extras:
                # Refused here, under this command's usage: handed back, they were refused
                # by the top-level parser, with its usage and "ir3de: error:". No parser
                # above can take them: its options come before the command.
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            problem = self.conflicts(parsed) if self.conflicts is not None else None
            if problem is not None:
                self.error(problem)
        return parsed, extras

    def _parse_known(self, args, namespace):
        if self._intermixing or not self._intermixable():
            return super().parse_known_args(args, namespace)
        args = sys.argv[1:] if args is None else list(args)
        parsed, extras = super().parse_known_args(args, copy.copy(namespace))
        if not extras:
            return parsed, extras
        # Python < 3.12 implements the intermixed parse with two parse_known_args calls of
        # its own: those must be plain ones.
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def _intermixable(self) -> bool:
        """Whether a positional takes a variable number of arguments, and none of them is
        a subcommand, REMAINDER or in a mutually exclusive group (which
        parse_known_intermixed_args refuses)."""
        positionals = self._get_positional_actions()
        grouped = {a for g in self._mutually_exclusive_groups for a in g._group_actions}
        return (any(a.nargs in ("*", "+", "?") for a in positionals)
                and not any(a.nargs in (argparse.PARSER, argparse.REMAINDER) or a in grouped
                            for a in positionals))


def _checked(convert: Callable[[str], float], ok: Callable[[float], bool],
             wanted: str) -> Callable[[str], float]:
    """An argparse type: ``convert(text)``, refused with "expected/must be ``wanted``" when
    it does not parse or ``ok`` rejects it."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v > 0, "a positive integer")
_term_count = _checked(int, lambda v: v >= 0, "a non-negative integer")
# k, kept as a numpy int64 by the selector: a larger one was an error of the run, exit 1
_token_count = _checked(int, lambda v: 0 < v < 2**63, "a positive integer below 2**63")
_port = _checked(int, lambda v: 0 < v < 65536, "a port number (1-65535)")
_open_fraction = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")
_share = _checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def _host(text: str) -> str:
    """An argparse type: a host to listen on. An empty one (``--host "$UNSET"``) would
    listen on every interface, the admin API with it; ``0.0.0.0`` says so on purpose."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name an interface (0.0.0.0 for every one), "
                                         "got an empty string")
    return text


# NaN fails both comparisons, so it is refused too
_non_negative_float = _checked(float, lambda v: 0 <= v < float("inf"), "a finite number ≥ 0")


def _number_or(words: dict[str, str | None],
               what: str) -> Callable[[str], float | str | None]:
    """An argparse type: one of ``words`` (mapped to its value) or a finite number > 0."""
    choices = ", ".join(f"'{w}'" for w in words)

    def parse(text: str) -> float | str | None:
        if text in words:
            return words[text]
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {choices} or a number > 0, "
                                             f"got {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number > 0, got {text}")
        return value

    return parse


def _device(text: str) -> str:
    """An argparse type: a torch device name of the MiniLM-based baselines (not resolved)."""
    from ir3de.baselines import check_device

    try:
        return check_device(text)
    except IR3DEError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _resamples(text: str) -> int:
    """An argparse type: bootstrap resamples, 0 (no intervals) or enough for an interval."""
    from ir3de.eval.harness import MIN_RESAMPLES  # the harness's own rule, found at parse time
    from ir3de.eval.metrics import MAX_RESAMPLES

    return int(_checked(int, lambda v: v == 0 or MIN_RESAMPLES <= v <= MAX_RESAMPLES,
                        f"0 (no intervals) or an integer from {MIN_RESAMPLES} to "
                        f"{MAX_RESAMPLES:,}")(text))


def _seed(text: str) -> int:
    """An argparse type: a seed of ``ir3de eval``, one scikit-learn takes (0 .. 2**32 - 1):
    a larger one failed only when TF-IDF + LR was fitted, after the IR3DE routers ran."""
    from ir3de.eval.harness import MAX_SEED  # the harness's own rule, found at parse time

    return int(_checked(int, lambda v: 0 <= v <= MAX_SEED,
                        f"an integer in 0..{MAX_SEED}")(text))


def _path(kind: str, *, file: bool = False) -> Callable[[str], str]:
    """An argparse type: a path to ``kind`` ("a file", "a folder"), '' refused, and with
    ``file`` one ending in '/' too. pathlib takes '' for the current folder (``--trust ''``
    would trust every key there) and a test of the option's value for no option at all
    (``--sign ''`` wrote an unsigned file)."""

    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"expected {kind}, got an empty path")
        # pathlib drops a trailing "/": "-o artifacts/" wrote a FILE named artifacts
        if file and text.endswith(("/", os.sep)):
            raise argparse.ArgumentTypeError(f"{text!r} ends in '/', so it names a folder; "
                                             "expected a file (name the file inside it)")
        return text

    return parse


_file = _path("a file", file=True)
_folder = _path("a folder")
_file_or_folder = _path("a file or folder")
_embedder_source = _path("an embedder name, model folder or tokenizer.json")


def _corpus(text: str) -> str:
    """An argparse type: a corpus of ``stats``, '' refused as by :func:`_path`, and '-'
    too: read as a file name it failed as "-: no such file", though route reads '-' as
    standard input."""
    if text == "-":
        raise argparse.ArgumentTypeError("standard input ('-') is not read by stats; save "
                                         "the corpus to a file and name it (a file named "
                                         "'-': ./-)")
    return _file(text)


def _named_file(text: str) -> str:
    """An argparse type: a build argument ``[NAME=]FILE`` with neither part empty, split
    as :func:`_split_named` splits it (an existing file whose name holds '=' is taken
    whole). ``=FILE`` gave the expert its file's domain without a word, ``NAME=`` failed
    as "NAME=: no such file"."""
    name, sep, path = _file(text).partition("=")
    if sep and not Path(text).exists():
        if not name:
            raise argparse.ArgumentTypeError(
                f"no expert name before '=' in {text!r}; write NAME=FILE, or FILE alone "
                "for the expert to take its file's domain")
        if not path:
            raise argparse.ArgumentTypeError(f"expected a file after {name + '='!r}, got an "
                                             "empty path")
        problem = domain_name_problem(_argument_text(name))
        if problem is not None:  # (it was blamed on the file: "FILE: invalid domain name")
            raise argparse.ArgumentTypeError(f"invalid expert name {name!r} in {text!r}: "
                                             f"it {problem}")
    return text


class _Once(argparse.Action):
    """An option that may be given once: argparse keeps the last of repeated values, so
    ``--input a.jsonl --input b.jsonl`` routed b.jsonl alone without a word."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        given = getattr(namespace, self.dest, None)
        if given is not None:
            raise argparse.ArgumentError(self, f"given twice ({given!r}, then {values!r}); "
                                               "it reads one file per call")
        setattr(namespace, self.dest, values)


_identity_mu = _number_or({"auto": "auto", "none": None}, "the identity ridge")
_alpha = _number_or({"auto": "auto"}, "the smoothing α")
_pair_mass = _number_or({"auto": "auto", "none": None}, "the pair Dirichlet mass")
_skip_mass = _number_or({"auto": "auto", "none": None}, "the skip-pair Dirichlet mass")
_tfidf_weight = _number_or({"none": None}, "the TF-IDF weight")
_spelling_weight = _number_or({"auto": "auto", "none": None}, "the spelling back-off's weight")
_spelling_mass = _number_or({"auto": "auto", "none": None}, "the spelling prior's mass")


def _add_embedder_args(p: argparse.ArgumentParser, default: str | None, *,
                       router: bool = False) -> None:
    """--embedder, --table and --tensor; ``router``: of a command reading a router, where
    they say where the recorded embedder's files are now."""
    g = p.add_argument_group("embedding")
    recorded = ("; default: the one the router records (give this where its files are now, "
                "e.g. a router copied to another machine; its fingerprint must match)"
                if router else "; default: the one recorded in the input files")
    g.add_argument("--embedder", default=default, metavar="NAME|DIR|TOKENIZER",
                   type=_embedder_source,
                   help="'wordllama' (bundled default), 'minilm' (extra ir3de[minilm]), a local "
                        "Hugging Face model folder, or a tokenizer.json used with --table"
                        + ("" if default else recorded))
    g.add_argument("--table", metavar="FILE", type=_file,
                   help="embedding table (.safetensors or .npy) paired with --embedder "
                        "TOKENIZER (a tokenizer.json); refused with any other --embedder")
    g.add_argument("--tensor", metavar="NAME",
                   help="with --embedder DIR or a .safetensors --table: the name of the "
                        "input-embedding tensor when it is not one of the usual names "
                        "(model.embed_tokens.weight, embeddings.word_embeddings.weight, …); "
                        "refused otherwise")


# When "auto" settings take their values for few fit prompts (solver.nb_smoothing), as the
# help of each such option says.
_FEW = (f"when the experts hold {FEW_PROMPTS} prompts each or fewer on average or the "
        f"smallest {FEW_MIN_PROMPTS} or fewer")


def _add_router_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("router settings (default: --preset default)",
                             "an option the resulting model or selector does not read is "
                             "refused")
    g.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="'default': Naive-Bayes log-likelihoods of binary token and "
                        "adjacent-token-pair features pooled by the geo selector, α and pair "
                        f"mass 'auto': 0.03 and 1e5, or 0.01 and 3e4 {_FEW}, plus a "
                        "back-off through the token strings' character trigrams, 'auto': "
                        "0.25, or for such small fit sets a prior of mass 100 where the "
                        "mean is 10 to 100, else none (the measured best); "
                        "'spelling-prior': the same back-off as a Dirichlet prior of the "
                        "token table, mass 'auto': 1e5, or 100 for such small fit sets, "
                        "instead of an added term (the selection rule's pick with MiniLM's "
                        "tokenizer, not WordLlama's); 'pairs': "
                        "the default without the spelling back-off (the default before it); "
                        "'few': α=0.01 and pair mass 3e4 whatever the fit size; 'skips': "
                        "'pairs' plus skip-pair features and unseen tokens left out, both "
                        "'auto' (off for small fit sets; 1.3x the default's routing cost); "
                        "'tfidf': 'pairs' plus a prompt-level TF-IDF ridge with "
                        "weight 4 (better on prompts like the fit data, worse on prompts "
                        "unlike it; needs statistics counted with --tfidf-buckets); "
                        "'unigram': without pairs (α=0.1; for statistics without pair "
                        "counts); 'identity': "
                        "balanced ridge on embedding ⊕ one-hot token ids (μ by leave-one-out), "
                        "avg selector; 'dense': the same without identity features (for "
                        "statistics without token counts); 'paper': the paper's unbalanced "
                        "ridge with entropy top-k, k=10")
    g.add_argument("--model", choices=MODELS,
                   help="nb: log-likelihoods from per-domain document frequencies (--alpha, "
                        "--pairs, --skips, --unseen, --spelling, --spelling-prior, --tfidf "
                        "apply); ridge: "
                        "closed-form ridge on the embedding (--lam, --identity, --balance, "
                        "--normalize, --regularize-bias apply)")
    g.add_argument("--alpha", type=_alpha, metavar="ALPHA|auto",
                   help="Laplace smoothing of the nb model's tokens, or 'auto' (the default: "
                        f"0.03, or 0.01 {_FEW}; preset 'few': 0.01)")
    g.add_argument("--pairs", type=_pair_mass, metavar="MASS|auto|none",
                   default=argparse.SUPPRESS,
                   help="nb model: Dirichlet mass that smooths each domain's token-pair "
                        "frequencies towards the pooled ones, 'auto' (the default: 1e5, or 3e4 "
                        f"{_FEW}; preset 'few': 3e4), or 'none' for token features only; "
                        "pairs enter the geo selector")
    g.add_argument("--skips", type=_skip_mass, metavar="MASS|auto|none",
                   default=argparse.SUPPRESS,
                   help="nb model: Dirichlet mass of the skip-pair table (pairs of tokens two "
                        f"places apart), 'auto' (preset 'skips': 1e6, or none {_FEW}) or "
                        "'none' (the default); skip pairs enter the geo selector")
    g.add_argument("--unseen", choices=UNSEEN,
                   help="nb model with the geo selector: what a token no fit prompt holds "
                        "adds, 'score' (its smoothed log-likelihoods, which lean towards the "
                        "experts with fewer fit prompts; the default) or 'ignore' (nothing); "
                        f"'auto' (preset 'skips'): ignore, or score {_FEW}")
    g.add_argument("--spelling", type=_spelling_weight, metavar="WEIGHT|auto|none",
                   default=argparse.SUPPRESS,
                   help="nb model: weight of a back-off through spelling added to every "
                        "token's row, a Naive-Bayes table over the character trigrams of the "
                        "token strings from the same document frequencies; 'auto' (the "
                        "default: 0.25; in its place the spelling prior with mass "
                        f"{FEW_SPELLING_PRIOR:g} when the experts hold {FEW_SPELLING_FLOOR} "
                        f"to {FEW_PROMPTS} prompts each on average, and none below that or "
                        f"when only the smallest holds {FEW_MIN_PROMPTS} or fewer) or 'none' "
                        "(every preset but the default); every selector reads it")
    g.add_argument("--spelling-prior", type=_spelling_mass, metavar="MASS|auto|none",
                   default=argparse.SUPPRESS,
                   help="nb model: the spelling back-off as a Dirichlet prior of the token "
                        "table with this mass (each domain's counts smoothed towards its "
                        "spelling distribution) in place of the added term, so --spelling "
                        f"must be 'none'; 'auto' (preset 'spelling-prior': 1e5, or 100 "
                        f"{_FEW}) or 'none' (every other preset); use it with the geo "
                        "selector (the per-token voting selectors lose 5-27 points with it)")
    g.add_argument("--lam", type=_non_negative_float, help="ridge model: penalty λ (default 1e-2)")
    g.add_argument("--k", type=_token_count,
                   help=f"tokens that vote with --selector topk (default: the preset's, "
                        f"{DEFAULT_K}; paper's {PRESETS['paper'].k})")
    g.add_argument("--selector", choices=SELECTORS,
                   help="topk: k lowest-entropy tokens vote; all: every token votes; "
                        "avg: argmax of the mean token probabilities; geo: argmax of the "
                        "geometric mean over distinct tokens (the Naive-Bayes decision)")
    g.add_argument("--balance", action=argparse.BooleanOptionalAction, default=None,
                   help="ridge model: weigh every domain equally whatever its token count "
                        "(on in the identity and dense presets, off in paper; the nb model "
                        "always weighs them equally)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="ridge model without identity features: scale each domain column "
                        "of W to unit norm (reference code: on)")
    g.add_argument("--regularize-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="ridge model: penalise the bias row too (reference code: on)")
    g.add_argument("--identity", type=_identity_mu, metavar="MU|auto|none",
                   default=argparse.SUPPRESS,
                   help="ridge of the token-identity features: a number > 0, 'auto' (chosen "
                        "by closed-form leave-one-out; preset 'identity') or 'none' (embedding "
                        "features only); needs statistics with token counts")
    g.add_argument("--tfidf", type=_tfidf_weight, metavar="WEIGHT|none",
                   default=argparse.SUPPRESS,
                   help="nb model with the geo selector: weight of a prompt-level TF-IDF "
                        "ridge over hashed token ids added to the decision (preset 'tfidf': "
                        "4), or 'none' (the default); needs statistics counted with "
                        "--tfidf-buckets")


def _config_from_args(args: argparse.Namespace) -> RouterConfig:
    """The preset with the router options given on the command line applied; an option
    the resulting configuration does not read is refused."""
    overrides = {key: getattr(args, key) for key in
                 ("model", "alpha", "lam", "k", "selector", "balance", "normalize",
                  "regularize_bias", "unseen")
                 if getattr(args, key, None) is not None}
    for key in ("identity", "pairs", "skips", "tfidf", "spelling",
                "spelling_prior"):  # 'none' is a choice
        if hasattr(args, key):
            overrides[key] = getattr(args, key)
    if getattr(args, "max_tokens", None) is not None:
        overrides["max_tokens"] = args.max_tokens
    # Balance is set last: the nb model reads no balance (it always weighs every domain
    # the same), so --balance and --no-balance are refused with it like any option it does
    # not read (RouterConfig.preset lets a preset's own balance=False give way to it).
    settings = {k: v for k, v in overrides.items() if k != "balance"}
    _refuse_both_spellings(settings, args.preset)
    config = RouterConfig.preset(args.preset, **settings)
    _refuse_unused(overrides, config, f"preset {args.preset!r}")
    return config.with_settings(**{k: v for k, v in overrides.items() if k == "balance"})


def _refuse_both_spellings(settings: dict[str, Any], preset: str) -> None:
    """Refuse the spelling back-off as a term and as a prior at once, in the options' words
    (RouterConfig's own error speaks of its fields)."""
    base = PRESETS[preset]
    term, prior = (settings.get(key, getattr(base, key)) for key in ("spelling",
                                                                     "spelling_prior"))
    if settings.get("model", base.model) != "nb" or term is None or prior is None:
        return
    if "spelling" not in settings:
        raise IR3DEError(f"--spelling-prior enters the spelling back-off as a prior, in place "
                         f"of the added term preset {preset!r} has: add --spelling none")
    if "spelling_prior" not in settings:
        raise IR3DEError(f"--spelling adds the spelling back-off as a term, and preset "
                         f"{preset!r} enters it as a prior: add --spelling-prior none")
    raise IR3DEError("--spelling and --spelling-prior are two forms of one back-off: give "
                     "one of them, and 'none' to the other")


def _refuse_unused(given: dict[str, Any], config: RouterConfig, source: str) -> None:
    """Refuse an option in ``given`` that ``config`` (``source`` with ``given`` applied)
    does not read (:meth:`RouterConfig.ignored`), naming the option and why."""
    found = config.ignored(given)
    if found is None:
        return
    key, setting, needed = found
    option = f"--{'no-' if given[key] is False else ''}{key.replace('_', '-')}"
    actual = getattr(config, setting)
    if needed is None:  # the identity solve has no unit-norm columns (solver.solve_identity)
        where = "--identity" if "identity" in given else source
        raise IR3DEError(f"{option} applies to --model ridge without identity features only "
                         f"(--identity none); {where} gives identity μ {actual}")
    where = (f", not --{setting} {actual}" if setting in given
             else f"; {source} uses the {actual} {setting}")
    raise IR3DEError(f"{option} applies to --{setting} {needed} only{where}")


def _check_embedder_args(args: argparse.Namespace) -> None:
    """Refuse --table and --tensor where --embedder names nothing they apply to, before any
    work: the named embedders ignore both, a model folder holds its own table, an .npy table
    has no tensor names, and build without --embedder reloads the embedder recorded in the
    statistics, so either would be dropped without a word or misreported as a missing
    tokenizer file."""
    misplaced = misplaced_table_or_tensor(args.embedder, args.table, args.tensor)
    if misplaced in ("table", "table beside a folder"):
        raise IR3DEError("--table needs --embedder TOKENIZER_JSON: the tokenizer.json whose "
                         "token ids index the table's rows"
                         + (f" (--embedder {args.embedder} is a model folder, which holds "
                            "its own table: leave --table out)"
                            if misplaced == "table beside a folder" else ""))
    if misplaced == "tensor of an .npy table":
        raise IR3DEError(f"--tensor names a tensor of a .safetensors file, but --table "
                         f"{args.table} is an .npy array")
    if misplaced == "tensor without a file":
        raise IR3DEError("--tensor needs --embedder HF_FOLDER (a Hugging Face model folder) "
                         "or --table FILE.safetensors: the file it names a tensor of")


def _add_quiet(p: argparse.ArgumentParser, *, solve: bool = False) -> None:
    """``-q``: the commands that write a file say what they wrote on stderr unless it is
    given (``solve``: and that a slow identity-μ search starts)."""
    also = " and no notice of a slow solve" if solve else ""
    p.add_argument("-q", "--quiet", action="store_true",
                   help=f"no summary line{also} on stderr (errors are still reported)")


def _embedder_from_args(args: argparse.Namespace):
    return load_embedder(args.embedder, table=args.table, tensor=args.tensor)


def _announce_solve(config: RouterConfig, quiet: bool = False) -> None:
    """Say on stderr that a slow solve starts: choosing the identity μ solves the router
    once per grid value (seconds to minutes on large statistics), where every other solve
    takes about a second and says nothing."""
    if config.model == "ridge" and config.identity == "auto" and not quiet:
        print("choosing the identity μ by leave-one-out…", file=sys.stderr)


def _load_router(path: str, args: argparse.Namespace, *, announce: bool = False) -> Router:
    """:meth:`Router.load` for the commands that read a router, with the embedder of
    ``--embedder`` (``--table``, ``--tensor``) where it is given: one whose files moved
    since the router was built (a router copied to another machine). With ``announce``
    (the experts commands), a slow solve is announced first: a router saved with its
    identity μ is solved once at it, one saved without (older files) searches again."""
    _check_embedder_args(args)
    embedder = None if args.embedder is None else _embedder_from_args(args)
    meta = read_router_meta(path)
    if meta.get("identity_mu") is None and announce:
        _announce_solve(RouterConfig.from_dict(meta["config"]))
    return Router.load(path, embedder=embedder)


def _verify_trusted(named: Sequence[tuple[str, DomainStats]], trust: str | None) -> None:
    """With ``--trust DIR``, refuse statistics that are not signed by a key in DIR (build
    and experts add alike), every one checked before anything is solved or written, and
    refuse to rename them: renaming drops the signature, so the router written would fail
    ``inspect --trust`` and a gateway with ``trust:`` (which refuses renames on upload too)."""
    if trust is None:
        return
    from ir3de.signing import load_trusted, verify_all

    verify_all([stats for _, stats in named], load_trusted(trust))
    for name, stats in named:
        if name != stats.domain:
            raise IR3DEError(f"{stats.source} was signed as {stats.domain!r}: with --trust an "
                             "expert keeps the name its statistics were signed with (a "
                             f"renamed expert holds no signature to check); leave the name "
                             f"{name!r} out (NAME=FILE, --name)")


def _show_progress(quiet: bool) -> bool:
    """Whether to draw progress bars: not with -q, and only when standard error is a
    terminal, as tqdm's ``disable=None`` decides for route's bars (a bar redrawn into a
    file, ``2> log``, fills it with frames)."""
    try:
        return not quiet and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def _count(n: int, noun: str, width: int = 0) -> str:
    """``n`` (right-aligned in ``width`` characters, for columns) and ``noun``, plural
    unless ``n`` is 1: "1 expert", "2 experts"."""
    return f"{n:>{width}} {noun}{'' if n == 1 else 's'}"


@contextlib.contextmanager
def _stdout_errors() -> Iterator[None]:
    """A failed write or flush of standard output raises an OSError without a file name (a
    full disk: "ir3de: error: : No space left on device"): reported as writing to standard
    output. A reader that went away is left to :func:`main`."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _stdout_failed(exc) from None


def _write_stdout(text: str) -> None:
    """Write ``text`` to standard output (see :func:`_stdout_errors`)."""
    if sys.stdout is None:  # started with it closed (``>&-``): the output would be lost
        raise IR3DEError("standard output is closed: nowhere to write the output")
    with _stdout_errors():
        sys.stdout.write(text)


def _flush_stdout() -> None:
    """Flush standard output: a buffered write fails only here (see
    :func:`_stdout_errors`)."""
    if sys.stdout is None:
        return
    with _stdout_errors():
        sys.stdout.flush()


def _stdin() -> Any:
    """Standard input, refused when the command was started with it closed (``<&-``)."""
    if sys.stdin is None:
        raise IR3DEError("standard input is closed: give the prompts as arguments or "
                         "--input FILE")
    return sys.stdin


def _unicode_stdout() -> bool:
    """Whether standard output's encoding holds every character (UTF-8, -16, -32): with
    ``PYTHONIOENCODING=ascii`` or a Latin-1 locale outside Python's UTF-8 mode it does not,
    and JSON output escapes what it cannot hold (``\\u2581``) instead of failing on it."""
    try:
        return codecs.lookup(getattr(sys.stdout, "encoding", None) or "utf-8").name \
            .startswith("utf")
    except LookupError:
        return False


def _padded(text: str, width: int) -> str:
    """``text`` and spaces up to ``width`` terminal columns, as it will be shown: wide
    characters (CJK, most emoji) take two columns, combining and format characters none;
    where standard output's encoding lacks a character, its escape (``\\u4e2d``) is what
    takes the room. (``str.ljust`` counts characters: expert names in Chinese pushed the
    columns after them out of line.)"""
    if _unicode_stdout():
        shown = sum(0 if unicodedata.combining(ch) or unicodedata.category(ch) == "Cf"
                    else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
                    for ch in text)
    else:
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        shown = len(text.encode(encoding, "backslashreplace"))
    return text + " " * max(0, width - shown)


def _stdout_failed(exc: OSError) -> IR3DEError:
    """The error for a failed write to standard output. What stayed in its buffer would
    fail again when the interpreter exits ("Exception ignored …", exit status 120), so
    standard output is pointed at the null device first (Python's own advice for a closed
    pipe); a stream without a file descriptor (a test's capture) has no such buffer."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        fd = None
    if fd is not None:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    return IR3DEError(f"writing to standard output: {exc.strerror or exc}")


def _echo(text: str) -> None:
    """print() to standard output, a failed write reported by :func:`_write_stdout`."""
    _write_stdout(text + "\n")


def _json_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=not _unicode_stdout()) + "\n"


def _print_json(obj: Any) -> None:
    _write_stdout(_json_line(obj))


def _refuse_input_as_output(path: Path, inputs: Sequence[str]) -> None:
    if any(Path(i).exists() and path.exists() and path.samefile(i) for i in inputs):
        raise IR3DEError(f"{path} is also an input of this command; write elsewhere")


def _refuse_missing(inputs: Sequence[str]) -> None:
    """Name a missing input ('-': standard input) before the output checks: their "pass
    --force" would send the user to overwrite a file for a command that cannot run."""
    for item in inputs:
        if item != "-" and not Path(item).exists():
            require_file(Path(item))


def _option_inputs(args: argparse.Namespace) -> list[str]:
    """The files a command reads through its options: a signing key, an embedding table,
    a tokenizer (a model folder's own), the trusted keys. They are its inputs too, never
    replaced by its output (--force wrote statistics over the only private key, and a
    router over a trusted key or the table it was to be loaded with). A model folder's
    other files are not listed: a router kept in it may be updated in place."""
    files = [value for value in (getattr(args, "sign", None), getattr(args, "table", None))
             if value is not None and Path(value).is_file()]  # (a missing one: said later)
    embedder = getattr(args, "embedder", None)
    if isinstance(embedder, str):  # (eval's list of embedders writes no such output)
        tokenizer = Path(embedder) / "tokenizer.json"
        files += [embedder] if Path(embedder).is_file() else \
            [str(tokenizer)] if tokenizer.is_file() else []
    trust = getattr(args, "trust", None)
    if trust is not None and Path(trust).is_dir():
        with contextlib.suppress(OSError):  # (an unreadable folder: loading it says so)
            files += [str(p) for p in Path(trust).iterdir() if p.suffix.lower() == ".pub"]
    return files


def _check_output(path: Path, force: bool, inputs: Sequence[str] = ()) -> bool:
    """Refuse an output that would overwrite a file without --force, a directory, a named
    pipe, device or socket (even with --force: writing would put a regular file in its
    place), a path under a file, one of the command's own ``inputs`` (even with --force:
    that would destroy the data the output is made from), or one in a folder that cannot
    be written. Checked before any work is done. Returns whether the write may replace a
    file: a file that appears meanwhile (a long job, another process) is otherwise left
    alone (``overwrite=False`` of the save functions)."""
    _refuse_missing(inputs)
    _refuse_input_as_output(path, inputs)
    if path.exists() and path.is_dir():
        raise IR3DEError(f"{path} is a directory")
    refuse_special_file(path)  # before the --force hint, which would not help
    if path.exists() and not force:
        raise IR3DEError(f"{path} exists; pass --force to overwrite it")
    require_creatable(path)
    _require_writable(path)
    return force


def _require_writable(path: Path) -> None:
    """Prove that ``path`` can be written by creating (and at once removing) a temporary
    file in its folder or, when that folder is still missing (writing creates it), in the
    nearest one above it that exists. ``os.access`` would not do: it lets root pass on a
    read-only mount's folders and everyone on /sys, where creating a file fails."""
    folder = next((p for p in path.parents if p.exists()), None)
    if folder is None:  # not even the current folder exists: writing reports it
        return
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise IR3DEError(f"{path}: cannot write in {folder} ({exc.strerror or exc})") \
            from None


def _check_router_output(path: Path, force: bool, inputs: Sequence[str] = ()) -> bool:
    """:func:`_check_output` for commands that rewrite routers in place by design: an
    existing ir3de router may be replaced, any other file only with --force."""
    _refuse_missing(inputs)
    _refuse_input_as_output(path, inputs)
    if path.is_file() and not force:
        try:
            read_router_meta(path)
        except IR3DEError:
            raise IR3DEError(f"{path} exists and is not an ir3de router; pass --force to "
                             "overwrite it") from None
        force = True
    return _check_output(path, force)


# ----------------------------------------------------------------------------- commands
def _plain_text_only(corpus: Sequence[str], fmt: str | None) -> bool:
    """Whether every corpus file is read as plain text (``fmt``, else each suffix's
    format): then no JSON field or Parquet column is read."""
    if fmt is not None:
        return fmt == "text"
    try:
        return all(infer_format(Path(c)) == "text" for c in corpus)
    except IR3DEError:  # a suffix that tells no format: reading reports it with a hint
        return False


def _corpus_files(corpus: Sequence[str], engine: str) -> list[str]:
    """The local files the ``corpus`` arguments name, for the output check: the local
    engine reads each argument as it is; the Ray engine expands a local path by
    :func:`ir3de.distributed.local_matches`, which is applied here to a ``file://`` URL's
    local path too (the engine's URL expansion globs the last component only, so it names
    no file this misses). A URL of another filesystem (``s3://``) is no local file the
    output could be."""
    if engine != "ray":
        return list(corpus)
    files = []
    for item in corpus:
        local = local_path(item)
        if local is not None:
            files += local_matches(local)
    return files


def _tfidf_buckets(text: str) -> int:
    """An argparse type: a bucket count (``tfidf.check_buckets``'s range, said in
    argparse's way)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_BUCKETS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_BUCKETS} buckets, got {value}")
    return value


def _gram_mb(buckets: int) -> int:
    """The largest size of a sparse upper-triangle Gram over ``buckets`` (16 B an entry)."""
    return (buckets + 1) * (buckets + 2) // 2 * 16 // 2**20


def _refuse_idle_ray_options(args: argparse.Namespace) -> None:
    """Refuse --address and --workers without --engine ray: the local engine counts in
    this process and would ignore them without a word."""
    for option, value in (("--address", args.address), ("--workers", args.workers)):
        if value is not None and args.engine != "ray":
            raise IR3DEError(f"{option} applies to --engine ray only; the local engine "
                             "(the default) counts in this process")


def cmd_stats(args: argparse.Namespace) -> int:
    _refuse_idle_ray_options(args)
    out = Path(args.output)
    replace = _check_output(out, args.force,
                            [*_corpus_files(args.corpus, args.engine), *_option_inputs(args)])
    validate_domain_name(args.domain, "--domain")  # now, not after the corpus
    refuse_repeated_paths(args.corpus)
    _check_embedder_args(args)
    if args.text_field is not None and _plain_text_only(args.corpus, args.format):
        raise IR3DEError("--text-field applies to JSONL and Parquet corpora only; plain text "
                         "is read one prompt per line")
    if args.no_pairs and args.skip_pairs:  # (the file held no skip pairs, without a word)
        raise IR3DEError("--skip-pairs counts into the token-pair table, which --no-pairs "
                         "leaves out; give one of them")
    text_field = "text" if args.text_field is None else args.text_field
    if args.sign:
        from ir3de.signing import load_private_key

        load_private_key(Path(args.sign))  # a bad key fails now, not after the corpus
    if args.engine == "local":
        for path in map(Path, args.corpus):  # fail before the progress bar starts
            require_file(path)
            if args.format is None:
                infer_format(path)
    emb = _embedder_from_args(args)

    def texts() -> Iterator[str]:
        for path in args.corpus:
            yield from read_corpus(path, fmt=args.format, text_field=text_field)

    start = time.perf_counter()
    if args.engine == "ray":
        from ir3de.distributed import ray_stats

        stats = ray_stats(args.corpus, emb, domain=args.domain, fmt=args.format,
                          text_field=text_field, max_tokens=args.max_tokens,
                          address=args.address, workers=args.workers,
                          progress=not args.quiet, tfidf_buckets=args.tfidf_buckets,
                          skip_pairs=args.skip_pairs)
    else:
        stats = compute_stats(emb, texts(), domain=args.domain, max_tokens=args.max_tokens,
                              progress=_show_progress(args.quiet),
                              tfidf_buckets=args.tfidf_buckets, skip_pairs=args.skip_pairs)
    seconds = time.perf_counter() - start
    if args.no_pairs:
        stats = dataclasses.replace(stats, pairs=None)
    if args.sign:
        from ir3de.signing import sign

        stats = sign(stats, args.sign)
    stats.save(out, overwrite=replace)
    if not args.quiet:
        _note(f"{out}: domain {stats.domain!r}, {_count(stats.n_prompts, 'prompt')}, "
              f"{_count(stats.n_tokens, 'token')} "
              f"({stats.n_tokens / max(seconds, 1e-9):,.0f} tokens/s"
              f"{', Ray start-up included' if args.engine == 'ray' else ''}), "
              f"embedder {emb.name} [{emb.fingerprint[:12]}]")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    out = Path(args.output)
    replace = _check_output(out, args.force, [*args.stats, *_option_inputs(args)])
    refuse_repeated_paths(args.stats)
    merged = merge(load_stats_files(args.stats), drop_pairs=args.no_pairs,
                   drop_tfidf=args.no_tfidf)
    if len(merged) != 1:
        raise IR3DEError(f"merge sums shards of ONE domain, but the files hold "
                         f"{len(merged)}: {', '.join(merged)}; build a router from them instead")
    (stats,) = merged.values()
    if args.sign:
        from ir3de.signing import sign

        stats = sign(stats, args.sign)
    stats.save(out, overwrite=replace)
    if not args.quiet:
        _note(f"{out}: domain {stats.domain!r}, {_count(stats.n_prompts, 'prompt')}, "
              f"{_count(stats.n_tokens, 'token')} from {_count(len(args.stats), 'file')}")
    return 0


def _split_named(item: str) -> tuple[str, str]:
    """``(name, file)`` of a build argument ``[NAME=]FILE``, name "" when none is given;
    an existing file whose name holds ``=`` is that file, unnamed. The output check and
    the loading both use it, so the file refused as an output is the very file read."""
    name, sep, path = item.partition("=")
    if not sep or Path(item).exists():
        return "", item
    return _argument_text(name), path


def _named_stats(items: Sequence[str]) -> list[tuple[str, DomainStats]]:
    named = [_split_named(item) for item in items]
    loaded = load_stats_files([path for _, path in named])
    return [(name or s.domain, s) for (name, _), s in zip(named, loaded, strict=True)]


def cmd_build(args: argparse.Namespace) -> int:
    out = Path(args.output)
    replace = _check_output(out, args.force, [*(_split_named(item)[1] for item in args.stats),
                                              *_option_inputs(args)])
    config = _config_from_args(args)  # contradictory options fail before any file is read
    _check_embedder_args(args)
    named = _named_stats(args.stats)
    _verify_trusted(named, args.trust)
    # Without --embedder, reload the embedder the statistics were made with.
    embedder = _embedder_from_args(args) if args.embedder is not None else load_recorded(
        named[0][1].embedder, f"{named[0][1].source} was counted with", "give --embedder",
        "give --embedder TOKENIZER_JSON --table TABLE")
    _announce_solve(config, args.quiet)
    # Renamed only under another name: renaming drops a signature, which the router keeps.
    router = Router(embedder, config).fit_stats(
        [s if name == s.domain else s.renamed(name) for name, s in named])
    router.save(out, overwrite=replace)
    if not args.quiet:
        _note(f"{out}: router with {_count(len(router.experts), 'expert')} "
              f"({', '.join(router.experts)}){_smoothing_note(router)}")
    return 0


def _smoothing_note(router: Router, before: Smoothing | None = None) -> str:
    """What ``auto`` settings chose from the prompt counts, for the line ``build``
    prints (and ``experts add/remove`` when the change moved it from ``before``): the
    smoothing follows the fit size, which a user should not have to find out by inspect."""
    used, config = router.smoothing, router.config
    if used is None or "auto" not in (config.alpha, config.pairs, config.skips,
                                      config.unseen, config.spelling,
                                      config.spelling_prior) or used == before:
        return ""
    counts = [s.n_prompts for s in router.stats.values()]
    values = "  ".join(text for setting, text in (
        (config.alpha, f"α={used.alpha:g}"),
        (config.pairs, None if used.pairs is None else f"pair mass={used.pairs:g}"),
        (config.skips, "no skip pairs" if used.skips is None
         else f"skip-pair mass={used.skips:g}"),
        (config.unseen, f"unseen tokens {used.unseen}d"),
        # (either form's "auto" names the back-off in use; both at once are refused)
        (config.spelling, _spelling_form(used)),
        (config.spelling_prior, _spelling_form(used))) if setting == "auto" and text)
    # a mean that is not whole keeps a decimal: 100.5 printed as 100 read as the rule's
    # "100 or fewer" while it chose the larger-fit smoothing
    total, n = sum(counts), len(counts)
    mean = f"{total / n:,.1f}" if total % n else f"{total // n:,}"
    return (f"; auto smoothing {values} ({mean} prompts per expert on average, "
            f"{min(counts):,} in the smallest)")


def _spelling_form(used: Smoothing) -> str:
    """The form the back-off's ``"auto"`` gave it: the added term, the prior (the
    ``spelling-prior`` preset, or the default at a mean of FEW_SPELLING_FLOOR to FEW_PROMPTS
    prompts per expert) or none."""
    return (f"spelling weight={used.spelling:g}" if used.spelling is not None
            else "no spelling back-off" if used.spelling_prior is None
            else f"spelling prior mass={used.spelling_prior:g}")


def _auto_value(value: float | str | None) -> str:
    """A setting "auto" chose, as the notes print it: numbers as 1e+05, None as none."""
    return "none" if value is None else value if isinstance(value, str) else f"{value:g}"


# Said with an --input error that a plain text file would cause.
_INPUT_HINT = ("--input reads JSONL, one JSON object per line; pipe plain text, one prompt "
               "per line, on standard input without --input: ir3de route ROUTER < FILE")


def _prompts(args: argparse.Namespace) -> list[tuple[Any, str, str]]:
    """Every prompt to route as ``(id, text, where)``, ``where`` naming it in errors; all
    read and checked before any is routed, so a bad one fails the call with nothing
    printed. Ids: a prompt argument's or standard-input line's 0-based position; for
    --input records, see :func:`_jsonl_prompts`."""
    if "-" in args.prompt:  # it was routed as the one-character prompt "-"
        raise IR3DEError("'-' is not read as standard input by route: pipe the prompts in "
                         "without prompt arguments (one per line), or pass --input - for JSONL")
    if args.prompt:
        # Numbered from 1 as the shell's arguments are, with the id (from 0) beside it.
        items = [(i, text, f"prompt argument {i + 1} (id {i})")
                 for i, text in enumerate(args.prompt)]
    elif args.input is not None:
        items = _jsonl_prompts(args.input, "text" if args.text_field is None
                               else args.text_field)
        if not items:
            where = "standard input (--input -)" if args.input == "-" else args.input
            raise _no_prompts(f"{where} holds no records")
    elif _stdin().isatty():
        raise _no_prompts("none given as arguments, and standard input is a terminal")
    else:
        lines = [(text, f"<stdin>:{lineno}")
                 for lineno, line in enumerate(decode_lines(sys.stdin.buffer, "<stdin>"), 1)
                 for text in text_lines(line)
                 if not is_blank(text)]  # blank lines are skipped, as in text corpora
        items = [(i, text, where) for i, (text, where) in enumerate(lines)]
        if not items:
            raise _no_prompts("none given as arguments, and standard input holds only blank "
                              "lines or nothing")
        if _looks_like_jsonl(text for text, _ in lines):
            print("ir3de: warning: standard input looks like JSONL (every line a JSON object "
                  "with a 'text' field) but is routed as plain text, each line whole; pass "
                  "--input - to route the records' text", file=sys.stderr)
    checked = []
    for ident, text, where in items:
        if is_blank(text):
            raise IR3DEError(f"{where}: empty prompt; nothing was routed")
        text = _argument_text(text)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # an argument the shell passed as bytes not UTF-8
            raise IR3DEError(f"{where}: not valid UTF-8 text") from None
        checked.append((ident, text, where))
    return checked


def _argument_text(text: str) -> str:
    """A command-line argument read as text (a prompt, an expert's name, not a path): UTF-8
    bytes that Python decoded in a non-UTF-8 locale (``PYTHONUTF8=0`` under ``LC_ALL=C``)
    hold surrogates, and taken back to their bytes they are the text. Anything else is
    returned as it is (bytes that are not UTF-8 keep their surrogates, which the checks
    of the text refuse by name)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(text).decode("utf-8")
        except (UnicodeError, ValueError):
            return text
    return text


def _looks_like_jsonl(lines: Iterable[str]) -> bool:
    """Whether every line is a JSON object with a string 'text' field: JSONL piped without
    ``--input -``, which plain-text routing takes whole, braces and field names included."""
    for line in lines:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested past what json reads
            return False
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            return False
    return True


def _no_prompts(why: str) -> IR3DEError:
    """No prompt to route, wherever the call looked: an error, as an empty output would
    pass for a successful run."""
    return IR3DEError(f"no prompts: {why}; pass them as arguments, with --input FILE.jsonl, "
                      "or on standard input (one per line)")


def _jsonl_prompts(source: str, text_field: str) -> list[tuple[Any, str, str]]:
    """The records of the JSONL file ``source`` ('-': standard input) as ``(id, text,
    where)`` (see :func:`_jsonl_records`)."""
    try:
        records = _jsonl_records(source, text_field)
    except IR3DEError as exc:
        if ": invalid JSON" in str(exc) or ": expected a JSON object" in str(exc):
            raise IR3DEError(f"{exc} ({_INPUT_HINT})") from None
        raise
    return [(ident, text, where) for ident, text, where, _ in records]


def _jsonl_records(source: str, text_field: str) -> list[tuple[Any, str, str, dict]]:
    """The records of the JSONL file ``source`` ('-': standard input) as ``(id, text,
    where, record)``. A record's id is its ``id`` field (a string or an integer, printed as
    given), else ``<file stem>-<n>`` (``stdin-<n>`` on standard input), n its 1-based
    record number, blank lines not counted, as ``ir3de eval`` names records. Ids are
    unique: 7 and "7" are one id, as for ``ir3de eval``, and a repeat is refused."""
    if source == "-":
        where, stem, raw = "<stdin>", "stdin", _stdin().buffer
    else:
        path = Path(source)
        if path.is_dir() or not path.exists():
            # (a pipe is read once, as standard input is: --input <(cmd), /dev/stdin)
            require_file(path)
        # (a stem that is not UTF-8 as \xNN: the ids are JSON text, which no surrogate is)
        where, stem, raw = str(path), shown_path(path.stem), path.open("rb")
    items: list[tuple[Any, str, str, dict]] = []
    seen: dict[str, str] = {}  # id -> the record that has it
    try:
        records = parse_numbered_jsonl(decode_lines(raw, where), where, text_field=text_field)
        for n, (lineno, record) in enumerate(records, 1):
            here = f"{where}:{lineno}"
            explicit = "id" in record
            ident = record_id(record, f"{stem}-{n}", here)
            key = str(ident)
            if key in seen:
                raise IR3DEError(f"{here}: id {key!r} repeats the id of {seen[key]}; ids must "
                                 f"be unique (a record without 'id' is {stem}-N, N its "
                                 "record number)")
            seen[key] = here if explicit else f"{here} (a record without 'id')"
            items.append((ident, record[text_field], here, record))
    finally:
        if source != "-":  # (standard input is not ours to close)
            raw.close()
    return items


def _token_ids(router: Router, items: Sequence[tuple[Any, str, str]],
               batch_size: int) -> list[np.ndarray]:
    """Every prompt's token ids, as routing encodes them, in batches of ``batch_size``; a
    prompt without a token to route on (only special tokens such as "<s>", or characters
    the tokenizer drops) fails the call, naming it, before any decision is printed."""
    embedder, ids = router.embedder, []
    with tqdm(total=len(items), unit="prompt", desc="tokenizing", disable=None,
              leave=False) as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            encoded = embedder.encode_batch([t for _, t, _ in batch], router.max_tokens)
            for (_, text, where), x in zip(batch, encoded, strict=True):
                if not x.size:
                    raise IR3DEError(f"{where}: no token to route on "
                                     f"({embedder.why_no_token(text)}); nothing was routed")
            ids += encoded
            bar.update(len(batch))
    return ids


def cmd_route(args: argparse.Namespace) -> int:
    if args.prompt and args.input is not None:
        raise IR3DEError("prompts given both as arguments and with --input; give one or the "
                         "other")
    if args.text_field is not None and args.input is None:
        raise IR3DEError("--text-field applies to --input (JSONL records) only; prompts given "
                         "as arguments or as plain text on standard input are read whole")
    explain_only = (("--evidence", args.evidence, "sets how many of the terms that decided "
                                                  "are printed"),
                    ("--against", args.against, "names the expert the evidence compares the "
                                                "winner with"))
    for option, given, what in explain_only:
        if given is not None and not args.explain:
            raise IR3DEError(f"{option} applies to --explain only: it {what}")
    router = _load_router(args.router, args)
    if args.against is not None and args.against not in router.experts:
        # (route_batch refuses it too, but only once the prompts are read and tokenised)
        raise unknown_expert(args.against, router.experts)
    overrides = {k: getattr(args, k) for k in ("k", "selector") if getattr(args, k) is not None}
    if overrides:
        _refuse_unused(overrides, router.config.with_settings(**overrides), args.router)
        router.set_params(**overrides)
    items = _prompts(args)  # every prompt read and checked: a bad one fails before any output
    ids = _token_ids(router, items, args.batch_size)  # ... and every one has a token
    # Each batch's decisions are printed (and flushed) as soon as it is routed, so a reader
    # (`| head`) gets them early; the bar goes to stderr, shown on a terminal only.
    with tqdm(total=len(items), unit="prompt", desc="routing", disable=None,
              leave=False) as bar:
        for start in range(0, len(items), args.batch_size):
            batch = items[start:start + args.batch_size]
            decisions = router.route_batch([t for _, t, _ in batch],
                                           explain=args.explain, scores=args.scores,
                                           token_ids=ids[start:start + args.batch_size],
                                           against=args.against)
            lines = "".join(_json_line({"id": ident, **_decision(decision, args.explain,
                                                                 args.evidence)})
                            for (ident, _, _), decision in zip(batch, decisions, strict=True))
            # the bar steps aside meanwhile; a Ctrl-C waits for the lines to be out whole
            with bar.external_write_mode(file=sys.stdout), _interruptions_held():
                _write_stdout(lines)
                _flush_stdout()
            bar.update(len(batch))
    return 0


def _decision(decision: Decision, explain: bool, evidence: int | None) -> dict[str, Any]:
    """A decision as printed: with its voting tokens and evidence only for --explain, the
    evidence cut to its first ``evidence`` terms (the largest leads; 10 by default, 0 for
    all)."""
    out = decision.to_dict()
    if not explain:
        out.pop("tokens", None)
        out.pop("evidence", None)
    elif "evidence" in out:
        shown = 10 if evidence is None else evidence
        out["evidence"] = out["evidence"][:shown or None]
    return out


def cmd_experts(args: argparse.Namespace) -> int:
    if args.action == "list":
        # loaded as route and inspect load it: a router they refuse is refused here too
        router = _load_router(args.router, args, announce=True)
        for name in router.experts:
            s = router.stats[name]
            if args.json:
                _print_json({"name": name, "n_prompts": s.n_prompts, "n_tokens": s.n_tokens})
            else:
                _echo(f"{name}\t{_count(s.n_prompts, 'prompt')}\t"
                      f"{_count(s.n_tokens, 'token')}")
        return 0
    out = Path(args.output or args.router)
    if args.action == "add" and Path(args.stats).is_file() and Path(args.router).is_file() \
            and Path(args.stats).samefile(args.router):
        # (else refused as "also an input" of the in-place update: the output is no issue)
        raise IR3DEError(f"{args.stats} is the router itself; experts add takes the new "
                         "expert's statistics file (ir3de stats)")
    # the router itself is the output of an in-place update; its statistics never are
    _refuse_missing([args.router])
    replace = _check_router_output(out, args.force or args.output is None,
                                   [*([args.stats] if args.action == "add" else []),
                                    *_option_inputs(args)])
    if args.action == "add":
        if args.name is not None:
            validate_domain_name(args.name, "--name")  # now, not after loading the router
        stats = DomainStats.load(args.stats)
        name = stats.domain if args.name is None else args.name
        _verify_trusted([(name, stats)], args.trust)
    # From reading the router to writing it: two commands updating one router at once
    # each reported success, and the expert of one was lost.
    with locked_for_update(args.router):
        router = _load_router(args.router, args, announce=not args.quiet)
        before = router.smoothing
        if args.action == "add":
            _announce_solve(router.config, args.quiet)  # a new expert: μ is chosen again
            router.add_expert(name, stats)
            message = f"added expert {name!r}"
        else:
            if args.name in router.experts and len(router.experts) > 1:  # else refused
                _announce_solve(router.config, args.quiet)
            router.remove_expert(args.name)
            message = f"removed expert {args.name!r}"
        router.save(out, overwrite=replace)
    if not args.quiet:
        _note(f"{out}: {message}; experts now {', '.join(router.experts)}"
              f"{_smoothing_note(router, before)}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    _, meta = read_safetensors(args.file)
    kind = meta.get("format")
    if kind == "ir3de-router":
        info = read_router_meta(args.file)
    elif kind == "ir3de-stats":
        info = {k: v for k, v in meta.items() if k != "format"}
        stats = DomainStats.load(args.file)  # validates shapes and values, not the header only
        # What the file can feed: the ridge presets A/b (or the token counts A is formed
        # from); identity the token counts, the nb presets the document frequencies, the
        # default also the pair frequencies.
        info["n_pairs"] = None if stats.pairs is None else int(stats.pairs.keys.size)
        skips = stats.skip_pairs
        info["n_skip_pairs"] = None if skips is None else int(skips.keys.size)
        info["has_A"] = stats.A is not None
        info["has_counts"] = stats.counts is not None
        info["has_doc_counts"] = stats.doc_counts is not None
        info["tfidf_buckets"] = None if stats.tfidf is None else stats.tfidf.buckets
    else:
        raise StatsFormatError(f"{args.file}: not an ir3de router or statistics file")
    if kind == "ir3de-stats" and (args.embedder, args.table, args.tensor) != (None,) * 3:
        raise IR3DEError("--embedder, --table and --tensor apply to a router file; a "
                         "statistics file is inspected without its embedder")
    router = None
    if args.trust is not None:
        # every expert (or the file) checked before anything is printed: a refusal names it
        from ir3de.signing import load_trusted, verify_all

        trusted = load_trusted(args.trust)
        if kind == "ir3de-router":
            router = _load_router(args.file, args)
            signers = verify_all([router.stats[e["name"]] for e in info["experts"]], trusted)
            for e, signer in zip(info["experts"], signers, strict=True):
                e["signed_by"] = signer
        else:
            info["signed_by"] = verify_all([stats], trusted)[0]
    # An nb router's token pairs are read by the geo selector only: said so, as a router
    # built with another selector still holds them.
    unread_pairs = kind == "ir3de-router" and info["config"]["model"] == "nb" \
        and info["config"]["pairs"] is not None \
        and not RouterConfig.from_dict(info["config"]).reads_pairs
    if kind == "ir3de-router":  # only what the router reads: no k without topk, no α for ridge
        info["config"] = _read_settings(info["config"])
    if not args.json:
        # The header first: it names the embedder a user may have to install.
        _print_inspected(args.file, kind, info, unread_pairs)
    if kind == "ir3de-router" and router is None:
        # Loaded as `ir3de route` loads it (tensors, counts, embedder, solve), so a file
        # that route would refuse fails here with the same error, not only a bad header.
        _load_router(args.file, args)
    if args.json:  # only now: a JSON reader gets a router that loads or no document at all
        _print_json({"kind": kind, **info})
    return 0


def _chosen(setting: float | str | None, used: float | str | None) -> str:
    """A smoothing setting as ``inspect`` prints it: the value, and where it was "auto"
    that the prompt counts chose it."""
    return _auto_value(used) + (" (auto, from the prompt counts)" if setting == "auto" else "")


def _read_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The router settings ``settings`` (checked ones, as read_router_meta gives them)
    without those the router does not read (:meth:`RouterConfig.ignored`)."""
    config = RouterConfig.from_dict(settings)
    return {key: value for key, value in settings.items() if config.ignored([key]) is None}


def _print_inspected(file: str, kind: str, info: dict[str, Any],
                     unread_pairs: bool = False) -> None:
    _echo(f"{_one_line(str(file))}: {'router' if kind == 'ir3de-router' else 'statistics'}")
    # (a statistics file records the recipe alone: its name as the router's would show)
    _echo(f"  embedder     {info.get('embedder_name') or recipe_name(info['embedder'])} "
          f"(h={info['dim']})  recipe {json.dumps(info['embedder'])}")
    _echo(f"  fingerprint  {info['fingerprint']}")
    if kind == "ir3de-router":
        c = info["config"]
        if c["model"] == "nb":
            used = info["smoothing"]
            smoothing = f"α={_chosen(c['alpha'], used['alpha'])}"
            if c.get("spelling") is not None and used["spelling_prior"] is not None:
                # (only "auto" trades the added term for the prior: a mean of 10 to 100)
                smoothing += (f"  spelling prior mass="
                              f"{_chosen(c['spelling'], used['spelling_prior'])}")
            elif c.get("spelling") is not None:
                smoothing += f"  spelling weight={_chosen(c['spelling'], used['spelling'])}"
            if c.get("spelling_prior") is not None:
                smoothing += (f"  spelling prior mass="
                              f"{_chosen(c['spelling_prior'], used['spelling_prior'])}")
            if c.get("tfidf") is not None:  # (the tfidf preset's blend)
                smoothing += f"  TF-IDF ridge weight={c['tfidf']:g}"
            if not unread_pairs and (used["pairs"] is not None or used["skips"] is not None):
                # (settings the selector does not read are gone from c: _read_settings)
                read = [(name, key) for name, key in (("pair mass", "pairs"),
                                                      ("skip-pair mass", "skips"),
                                                      ("unseen tokens", "unseen"))
                        if key in c and (c[key] is not None or key == "pairs")]
                _echo(f"  model        nb (Naive-Bayes, binary token and token-pair features)  "
                      f"{smoothing}  " + "  ".join(f"{name}={_chosen(c[key], used[key])}"
                                                   for name, key in read))
            else:
                unread = (f"; the token pairs it holds are read by the geo selector only, "
                          f"not {c['selector']}" if unread_pairs else "")
                # (geo reads it without pairs too: an ignore routed otherwise, unshown)
                unseen = f"  unseen tokens={_chosen(c['unseen'], used['unseen'])}" \
                    if "unseen" in c else ""
                _echo(f"  model        nb (Naive-Bayes, binary token features{unread})  "
                      f"{smoothing}{unseen}")
        else:
            _echo(f"  model        ridge  λ={c['lam']:g}  balance={c['balance']}  "
                  + (f"normalize={c['normalize']}  " if "normalize" in c else "")
                  + f"regularize_bias={c['regularize_bias']}")
        _echo(f"  settings     selector={c['selector']}  "
              + (f"k={c['k']}  " if "k" in c else "") + f"max_tokens={c['max_tokens']}")
        if c["model"] == "ridge":
            mu = info.get("identity_mu")
            _echo(f"  identity     {'off' if mu is None else f'μ={mu:g}'}"
                  + ("  (chosen by leave-one-out)" if c.get("identity") == "auto" else ""))
        _echo(f"  experts      {len(info['experts'])}")
        for e in info["experts"]:
            # padded to the plural's width, so the token counts stay in one column
            _echo(f"    {_padded(e['name'], 24)} {_count(e['n_prompts'], 'prompt', 9):<17} "
                  f"{_count(e['n_tokens'], 'token', 12):<19} {_signed(e)}")
    else:
        _echo(f"  domain       {info['domain']}")
        _echo(f"  counts       {_count(info['n_prompts'], 'prompt')}, "
              f"{_count(info['n_tokens'], 'token')} "
              f"(prompts capped at {_count(info['max_tokens'], 'token')})")
        held = [name for name, present in (("A", info["has_A"]), ("b", True),
                                           ("token counts", info["has_counts"]),
                                           ("document frequencies", info["has_doc_counts"]))
                if present]
        if info["n_pairs"] is not None:
            held.append(f"{info['n_pairs']} token pairs (" + (
                "no skip pairs: counted without --skip-pairs" if info["n_skip_pairs"] is None
                else f"{info['n_skip_pairs']} of them skip pairs") + ")")
        if info["tfidf_buckets"] is not None:  # (what --preset tfidf reads; a disclosure)
            held.append(f"TF-IDF statistics ({info['tfidf_buckets']} buckets)")
        _echo("  holds        " + ", ".join(held)
              + ("" if info["has_A"] else "  (A is formed from the token counts)"))
        _echo(f"  signature    {_signed(info)}")


def _signed(entry: dict[str, Any]) -> str:
    """Who signed a statistics file or a router's expert, as ``inspect`` prints it: the
    trusted key's file under ``--trust``, else the public key's first hex digits."""
    if "signed_by" in entry:
        return f"signed by {entry['signed_by']}"
    signature = entry.get("signature")
    if not signature:
        return "unsigned"
    key = signature.get("public_key") if isinstance(signature, dict) else None
    return f"signed, key {key[:16]}…" if isinstance(key, str) else "signed (malformed)"


def cmd_demo(args: argparse.Namespace) -> int:
    data = Path(args.data) if args.data else default_data_dir()
    if not (data / "reasoning").is_dir():
        raise missing_data(data, args.data is not None, "reasoning/")
    out = Path(args.output)
    # a previous demo's router is replaced
    replace = _check_router_output(out, args.force, _option_inputs(args))
    config = _config_from_args(args)  # contradictory options fail before the fit
    _check_embedder_args(args)
    emb = _embedder_from_args(args)
    fit, test = reasoning_split(data, protocol="xdata")
    _echo(f"embedder {emb.name} (h={emb.dim}); fitting on gsm8k train, m_arc train, MBPP, "
          "Alpaca; testing on gsm8k test, m_arc test, HumanEval, IFEval (never fitted on)")
    start = time.perf_counter()
    router = Router(emb, config)
    # counted with the cap --max-tokens gives, as Router.fit counts (it was counted at
    # 1024 and routed at the cap: "fitting and routing", its help says)
    stats = [compute_stats(emb, texts, domain=d, progress=_show_progress(args.quiet),
                           max_tokens=router.max_tokens, tfidf_buckets=config.tfidf_buckets,
                           skip_pairs=config.skip_pairs)
             for d, texts in fit.items()]
    if not args.quiet:
        _announce_solve(config)
    router.fit_stats(stats)
    router.save(out, overwrite=replace)
    n_tokens = sum(s.n_tokens for s in stats)
    _echo(f"fitted {_count(len(stats), 'expert')} on {n_tokens:,} tokens in "
          f"{time.perf_counter() - start:.1f} s; saved {out}")
    examples = ["Natalia sold 48 clips in April and half as many in May. How many in total?",
                "Quelle est la capitale de l'Australie ?\nA. Sydney\nB. Canberra\nC. Melbourne",
                "def fibonacci(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"",
                "Write a haiku about autumn. Do not use any commas and end with a question."]
    for text, d in zip(examples, router.route_batch(examples), strict=True):
        _echo(f"  {d.expert:<22} {d.confidence:5.2f}  {text.splitlines()[0][:60]}")
    _echo("routing accuracy on the held-out test prompts:")
    accs = {}
    start = time.perf_counter()
    n = 0
    for domain, texts in test.items():
        preds = router.predict(texts)
        n += len(texts)
        accs[domain] = sum(p == domain for p in preds) / len(texts)
        _echo(f"  {domain:<22} {100 * accs[domain]:5.1f}%  ({len(texts)} prompts)")
    elapsed = time.perf_counter() - start
    _echo(f"  {'balanced accuracy':<22} {100 * sum(accs.values()) / len(accs):5.1f}%  "
          f"({1e6 * elapsed / n:.0f} µs per prompt incl. tokenization)")
    return 0


# ----------------------------------------------------------------------------- parser
def _eval_embedders(names: Sequence[str], explicit: bool) -> list:
    embedders = []
    for name in names:
        try:
            embedders.append(load_embedder(name))
        except IR3DEError as exc:
            if explicit:
                raise
            print(f"ir3de: skipping embedder {name!r}: {exc}", file=sys.stderr)
    if not embedders:
        raise IR3DEError("no embedder could be loaded")
    return embedders


def _eval_baselines(names: Sequence[str], explicit: bool) -> list[str]:
    if not names:
        return []
    from ir3de.baselines import available_baselines

    reasons = available_baselines()
    usable = []
    for name in names:
        if reasons.get(name):
            if explicit:
                raise IR3DEError(f"baseline {name!r} unavailable: {reasons[name]}")
            print(f"ir3de: skipping baseline {name!r}: {reasons[name]}", file=sys.stderr)
        else:
            usable.append(name)
    return usable


_DEVICE_UNREAD = "--device is read only by the knn and modem baselines, and neither runs"


def _eval_device(device: str | None, baselines: Sequence[str]) -> str | None:
    """The resolved torch device of the MiniLM-based baselines (None when none runs), found
    before the run so a missing GPU is reported at once."""
    from ir3de.baselines import resolve_device

    torch_based = [b for b in baselines if b in ("knn", "modem")]
    if not torch_based:
        if device is not None:  # the default baselines' knn is not installed
            raise IR3DEError(_DEVICE_UNREAD)
        return None
    return resolve_device(device or "auto")


def _calibration_prompts(args: argparse.Namespace, router: Router
                         ) -> tuple[list[str], list[str] | None, list[np.ndarray]]:
    """The texts of ``args.data``, their labels (None: unlabelled) and their token ids,
    every one checked before any is routed. ``args.data`` is one JSONL file (labels in a
    field of every record or of none) or ``NAME=CORPUS`` items, read as ``ir3de stats``
    reads a corpus (see :func:`_corpus_prompts`)."""
    named = [_split_named(item) for item in args.data]
    if any(name for name, _ in named):
        return _corpus_prompts(args, router, named)
    if len(args.data) > 1:
        raise IR3DEError("give one JSONL file of prompts, or NAME=CORPUS items (the corpora "
                         f"ir3de stats counted for expert NAME), not {len(args.data)} files")
    if args.format is not None:
        raise IR3DEError("--format applies to NAME=CORPUS items; a file of prompts is JSONL")
    try:
        kind = infer_format(Path(args.data[0]))
    except IR3DEError:
        kind = "jsonl"  # (read as JSONL under any other name: held.json, '-')
    if kind != "jsonl":
        # (it failed at its first line as "invalid JSON", without a word of the corpora)
        raise IR3DEError(f"{args.data[0]}: a file of held-out prompts is JSONL; a corpus "
                         f"({kind}) is given as NAME=CORPUS, its expert's name first")
    records = _jsonl_records(args.data[0], args.text_field or "text")
    if not records:
        raise IR3DEError(f"{args.data[0]} holds no records")
    field = args.label_field or "domain"
    labelled = [field in record for *_, record in records]
    if args.label_field is not None and not any(labelled):
        # (a misspelt field made labelled prompts unlabelled: no accuracy, exit 0)
        raise IR3DEError(f"--label-field {field}: no record of {args.data[0]} has that field")
    if args.folds is not None and not any(labelled):
        raise IR3DEError(f"--folds needs labelled prompts, and no record of {args.data[0]} "
                         f"has a {field!r} field (--label-field names it)")
    labels = None
    if any(labelled):
        labels = []
        for _, _, where, record in records:
            label = record.get(field)
            if field not in record:
                raise IR3DEError(f"{where}: record has no {field!r} field, where other "
                                 "records do; label every prompt or none")
            if not isinstance(label, str):
                raise IR3DEError(f"{where}: {field!r} must be a string naming an expert, "
                                 f"got {json.dumps(label)}")
            _require_expert(router, label, f"{where}: {field!r} is")
            labels.append(label)
    for _, text, where, _ in records:
        if is_blank(text):
            raise IR3DEError(f"{where}: empty prompt")
    items = [(ident, text, where) for ident, text, where, _ in records]
    ids = _token_ids(router, items, 1024)  # a prompt without a token fails here, named
    return [text for _, text, _ in items], labels, ids


def _require_expert(router: Router, name: str, said: str) -> None:
    if name not in router.experts:
        raise IR3DEError(f"{said} {name!r}, not one of the router's experts "
                         f"({listed(router.experts)})")


def _corpus_prompts(args: argparse.Namespace, router: Router, named: list[tuple[str, str]]
                    ) -> tuple[list[str], list[str], list[np.ndarray]]:
    """The prompts of ``NAME=CORPUS`` items as ``ir3de stats --domain NAME`` counted them:
    the same reader (JSONL, plain text or Parquet; ``--format``, ``--text-field``), blank
    prompts and prompts without a token skipped as counting skips them, so that with
    ``--folds`` each fold's statistics are a part of the expert's."""
    if args.label_field is not None:
        raise IR3DEError("--label-field applies to a JSONL file of prompts; NAME=CORPUS items "
                         "are labelled by their NAME")
    empty = [name for name, path in named if name and not path]
    if empty:
        raise IR3DEError(f"{empty[0]}=: no corpus file after '='")
    unnamed = [path for name, path in named if not name]
    if unnamed:
        raise IR3DEError(f"{unnamed[0]!r}: with NAME=CORPUS items every item names its expert "
                         "(a JSONL file of labelled prompts is given alone)")
    refuse_repeated_paths([path for _, path in named])
    for name, path in named:
        _require_expert(router, name, f"{name}={path}: the expert is")
        if path == "-":  # (as stats refuses it; it was "-: no such file")
            raise IR3DEError(f"{name}=-: standard input is not read as a corpus; save the "
                             "corpus to a file and name it (a file named '-': ./-)")
        require_file(Path(path))
        if args.format is None:
            infer_format(Path(path))
    if args.text_field is not None and _plain_text_only([p for _, p in named], args.format):
        raise IR3DEError("--text-field applies to JSONL and Parquet corpora only; plain text "
                         "is read one prompt per line")
    texts: list[str] = []
    labels: list[str] = []
    token_ids: list[np.ndarray] = []
    for name, path in named:
        read = [t for t in read_corpus(path, fmt=args.format,
                                       text_field=args.text_field or "text")
                if not is_blank(t)]
        ids = router.embedder.encode_batch(read, router.max_tokens)
        kept = [i for i, x in enumerate(ids) if x.size]
        if not kept:
            raise IR3DEError(f"{path}: no prompt with a token to route on")
        texts += [read[i] for i in kept]
        labels += [name] * len(kept)
        token_ids += [ids[i] for i in kept]
    return texts, labels, token_ids


# calibrate warns when at least this share of the prompts given as held out has coverage
# 1: fit prompts, most likely (held-out in-domain prompts: a few percent).
_SEEN_WARNING = 0.5


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ir3de.calibration import DEFAULT_KEEP, calibrate, render_plot

    if args.seed is not None and args.folds is None:
        raise IR3DEError("--seed draws the folds: it applies with --folds only")
    plot = None if args.plot is None else Path(args.plot)
    if plot is not None:
        if plot.suffix.lower() != ".png":  # (a PNG was written under any name)
            raise IR3DEError(f"--plot writes a PNG image: give a file name ending in .png, "
                             f"not {args.plot!r}")
        replace = _check_output(plot, args.force,
                                [args.router, *(_split_named(d)[1] for d in args.data)])
        try:
            import matplotlib  # noqa: F401  (checked before the work, drawn after it)
        except ImportError:
            raise IR3DEError("--plot needs matplotlib: pip install 'ir3de[eval]'") from None
    router = _load_router(args.router, args)
    texts, labels, token_ids = _calibration_prompts(args, router)
    if plot is not None and labels is None:
        raise IR3DEError("--plot draws the kept prompts' accuracy, which needs labelled "
                         f"prompts: no record of {args.data[0]} has a "
                         f"{args.label_field or 'domain'!r} "
                         "field")
    if args.folds is not None and args.folds > len(texts):  # (before the progress line)
        raise IR3DEError(f"{args.folds} folds but only {len(texts)} prompts")
    if args.folds is not None and not args.quiet:
        print(f"routing {_count(len(texts), 'prompt')} with the router re-solved without "
              f"each of {args.folds} folds…", file=sys.stderr)
    result = calibrate(router, texts, labels, keep=sorted({*DEFAULT_KEEP, args.keep}),
                       folds=args.folds, seed=0 if args.seed is None else args.seed,
                       token_ids=token_ids)
    seen = result.seen
    if args.folds is None and seen is not None and seen >= _SEEN_WARNING:
        # what the router's own fit prompts look like: every pair seen, coverage 1
        print(f"ir3de: warning: {100 * seen:.0f} % of these prompts have every token pair in "
              "the router's fit data (coverage 1): if they are its fit prompts, these cuts "
              "describe no new prompt (min_coverage 1 would send most new ones to the "
              "fallback); give them with --folds, or give held-out prompts", file=sys.stderr)
    if args.json:
        gateway = {knob: result.cut(knob, args.keep).value for knob in result.knobs}
        _print_json({**result.to_dict(), "keep": args.keep, "gateway": gateway,
                     "gateway_kept": result.kept(**gateway)})
    else:
        _print_calibration(result, args.keep)
    if plot is not None:
        atomic_write_bytes(plot, render_plot(result, args.keep), overwrite=replace)
        if not args.quiet:
            _note(f"wrote {plot}")
    return 0


def _print_calibration(result: Calibration, keep: float) -> None:
    """The cuts as two tables and the gateway.yaml lines for ``keep``."""
    labelled = result.gold is not None
    n = len(result.routed)
    source = "held out by the router re-solved without each of " + result.held_out \
        if result.held_out != "given" else "given as held out"
    lines = [f"{_count(n, 'prompt')}, {source}"]
    if result.gold is not None and result.accuracy is not None:
        lines[0] += (f"; {_count(len(set(result.gold)), 'expert')}, balanced accuracy "
                     f"{100 * result.accuracy:.2f} % with no cut")
    else:
        lines[0] += "; no labels (no accuracy: the table gives kept shares only)"
    what = {"threshold": "confidence", "min_coverage": "coverage"}
    for knob in result.knobs:
        lines += ["", f"{knob} (below it, a prompt's {what[knob]} sends it to the fallback):",
                  "  keep     cut       kept    " + ("accuracy  least kept" if labelled else "")]
        for cut in (c for c in result.cuts if c.knob == knob):
            # rounded down: a value copied from the table keeps at least what it says
            shown = math.floor(cut.value * 1e4) / 1e4
            row = f"  {100 * cut.keep:5.1f} %  {shown:<8.4f}  {100 * cut.kept:5.1f} %"
            if cut.accuracy is not None and cut.least_kept is not None:
                domain, share = cut.least_kept
                row += f"  {100 * cut.accuracy:6.2f} %  {domain} {100 * share:.1f} %"
            lines.append(row.rstrip())
    lines += ["", f"gateway.yaml, keeping {100 * keep:g} % of such prompts (needs a fallback "
                  "expert; set one of the two, or both: below either goes to the fallback):"]
    for knob in result.knobs:
        cut = result.cut(knob, keep)
        note = f"  # kept {100 * cut.kept:.1f} %"
        if cut.accuracy is not None:
            note += f", balanced accuracy {100 * cut.accuracy:.2f} %"
        lines.append(f"  {knob}: {cut.value!r}{note}")
    if len(result.knobs) == 2:
        both = result.kept(**{knob: result.cut(knob, keep).value for knob in result.knobs})
        lines.append(f"  (both: kept {100 * both:.1f} %)")
    _write_stdout("\n".join(lines) + "\n")


def cmd_keygen(args: argparse.Namespace) -> int:
    from ir3de.signing import generate_key, public_key_path

    private = Path(args.output)
    public = public_key_path(private)  # first: a name of no file ('', '..') is the mistake
    # Both files checked before either is written: a directory is said to be one at once.
    _check_output(private, args.force)
    _check_output(public, args.force)
    generate_key(private, force=args.force)
    if not args.quiet:
        _note(f"{args.output}: private key (keep it; sign with ir3de stats --sign "
              f"{args.output}); {public}: public key (give it to router builders: "
              "ir3de build --trust DIR)")
    return 0


def _check_eval_out(out: Path, force: bool, writes: Sequence[str]) -> None:
    """Refuse, before the run, an output of ``out`` (``writes``: every name the run will
    write, plots included, all known from the settings' names) that cannot be written (a
    directory in the way, even with ``force``), and to replace files named as the run's
    outputs that no previous evaluation wrote, unless ``force``: a previous evaluation's
    outputs are replaced, as ``demo`` replaces its router. That evaluation's results.json
    and report.md are its own, another name only if it lists it or if it stopped while
    moving that file in (:func:`ir3de.eval.report.foreign_outputs`, the rule
    :func:`ir3de.eval.write_report` applies too)."""
    from ir3de.eval.report import check_outputs, foreign_outputs

    check_outputs(out, writes)
    foreign = [] if force else foreign_outputs(out, writes)
    if foreign:
        raise IR3DEError(f"{out} holds {listed(foreign)}, not written by ir3de "
                         "eval; pass --force to replace them, or choose another --out")


def _refuse_non_utf8(argv: Sequence[str]) -> None:
    """Refuse a command-line argument that is not valid UTF-8 (a file name in another
    encoding): the report records the command line and could not be written, after the
    run."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            raise IR3DEError(f"argument {shown_path(arg)} is not valid UTF-8, so the report "
                             "could not record the command line; rename the file or folder"
                             ) from None


def _eval_option_conflict(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of ``ir3de eval``'s options, if anything: an
    option this run would not read (it was accepted without a word and changed nothing),
    or one that needs another. Usage errors, as argparse's own ``--setting`` with
    ``--fit`` is: the command line alone decides them."""
    if args.test and not args.fit:
        if not args.router:
            return ("--test needs --fit (the fit data of your own setting) or --router (saved "
                    "routers, scored on it alone)")
        # test data alone: nothing is fitted, so what would fit or choose fit data is unread
        unread = [option for option, given in (
            ("--setting", args.setting), ("--embedder", args.embedder),
            ("--presets", args.presets), ("--baselines", args.baselines),
            ("--max-fit", args.max_fit), ("--data", args.data), ("--device", args.device))
            if given]
        if unread:
            return (f"{unread[0]} is not read with --test and no --fit: only the --router "
                    "routers are scored (give --fit to fit routers and baselines beside them)")
    if args.data is not None and args.fit:
        return "--data is read only by the built-in settings, and --fit replaces them"
    if args.score_kind is not None and not args.scores:
        return "--score-kind is read only with --scores, which is not given"
    if args.level is not None and args.resamples == 0:
        return "--level is read only for the bootstrap intervals, and --resamples 0 turns them off"
    # With the default baselines, whether knn runs depends on what is installed, which
    # _eval_device finds out; named baselines without knn or modem decide it here.
    if args.device is not None and args.baselines is not None \
            and not {"knn", "modem"} & set(args.baselines):
        return _DEVICE_UNREAD
    return None


def _make_out_dir(out: Path) -> list[Path]:
    """Create ``out`` and prove a file can be written in it, before the run, not after it.
    Returns the folders created, innermost first, for :func:`_remove_empty`."""
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise IR3DEError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") \
            from None
    try:
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        _remove_empty(created)
        raise IR3DEError(f"--out {out}: cannot write files there ({exc.strerror or exc})") \
            from None
    return created


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders a failed command created, innermost first, while empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def cmd_eval(args: argparse.Namespace) -> int:
    import datetime

    from ir3de.baselines import device_label
    from ir3de.eval import (
        SETTINGS,
        Setting,
        custom_setting,
        evaluate,
        load_setting,
        read_scores,
        repeat_setting,
        test_setting,
        write_report,
    )
    from ir3de.eval.harness import (
        DEFAULT_BASELINES,
        check_routers,
        check_scores,
        make_baselines,
    )
    from ir3de.eval.metrics import ScoreKind
    from ir3de.eval.report import machine, output_names, summary_routers

    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError:
        raise IR3DEError("ir3de eval needs scikit-learn and matplotlib: "
                         "pip install 'ir3de[eval]'") from None
    argv = [str(a) for a in (sys.argv[1:] if args.argv is None else args.argv)]
    _refuse_non_utf8(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():  # found now, not after the whole run
        raise IR3DEError(f"--out {out} is not a directory")
    for option, data in (("--fit", args.fit), ("--test", args.test)):
        # Every JSONL file of a data folder is data: the next run would read the report's
        # results.json and decisions.jsonl as prompts.
        folder = Path(data).resolve() if data and Path(data).is_dir() else None
        if folder is not None and folder in (out.resolve(), *out.resolve().parents):
            where = "is" if folder == out.resolve() else "lies inside"
            raise IR3DEError(f"--out {out} {where} the {option} folder {data}, whose JSONL "
                             "files are all read as data; choose another --out")
    data_dir = Path(args.data) if args.data else default_data_dir()
    if not args.fit and data_dir.resolve() in (out.resolve(), *out.resolve().parents):
        # The domains setting reads every domains/*/*.jsonl: a decisions.jsonl written
        # there would be read as a domain by the next run.
        where = "is" if data_dir.resolve() == out.resolve() else "lies inside"
        raise IR3DEError(f"--out {out} {where} the data folder {data_dir}, whose JSONL files "
                         "are read as data; choose another --out")
    caps = {"max_fit": args.max_fit, "max_test": args.max_test}
    # A name given twice would pool each figure twice (or load an embedder twice).
    seeds = list(dict.fromkeys(args.seed))
    # --test without --fit: saved routers alone (the option check refused anything to fit)
    saved_only = bool(args.test and not args.fit)
    presets = [] if saved_only else list(dict.fromkeys(args.presets or ["default", "paper"]))
    # Loaded (and checked) before the slow part; each is named by its path as given.
    routers = {f"router {shown_path(path)}": Router.load(path)
               for path in dict.fromkeys(args.router or [])}
    if args.fit or saved_only:
        names = ["custom"]
    elif args.setting is None or "all" in args.setting:
        names = list(SETTINGS)
    else:
        names = list(dict.fromkeys(args.setting))
    # Every output, the plots included, is named from the settings: all checked now (and
    # that --out is not under a file).
    _check_eval_out(out, args.force, output_names(names, plots=not args.no_plots,
                                                  decisions=args.decisions))

    def load(name: str, seed: int) -> Setting:
        if saved_only:
            first = next(iter(routers.values()))
            return test_setting(args.test, first.experts, seed=seed, max_test=args.max_test)
        if name == "custom":
            return custom_setting(args.fit, args.test, seed=seed, **caps)
        # args.data, not data_dir: when it is None the message can say $IR3DE_DATA chose it.
        return load_setting(name, args.data, seed=seed, **caps)

    # Load every setting before the slow part, so a bad path fails at once.
    settings = [repeat_setting(functools.partial(load, name), seeds) for name in names]
    domains = {d for setting in settings for d in setting.domains}
    scores = read_scores(args.scores, experts=domains) if args.scores else None
    score_kind: ScoreKind = args.score_kind or "task"  # argparse checked its choices
    if scores is not None:
        for setting in settings:  # every setting, before any runs
            check_scores(setting, scores, score_kind, source=args.scores)
    for setting in settings:  # (evaluate checks its own: a later setting's failed after
        check_routers(setting, routers)  # the earlier ones had run)
    embedders = [] if saved_only else _eval_embedders(
        list(dict.fromkeys(args.embedder or ["wordllama", "minilm"])), bool(args.embedder))
    baselines = [] if saved_only else _eval_baselines(
        list(dict.fromkeys(args.baselines if args.baselines is not None
                           else DEFAULT_BASELINES)), args.baselines is not None)
    device = _eval_device(args.device, baselines)
    factories = make_baselines(baselines, seed=seeds[0], progress=_show_progress(args.quiet),
                               device=device or "cpu")
    created = _make_out_dir(out)
    try:
        results = []
        for setting in settings:
            start = time.perf_counter()
            results.append(evaluate(setting, embedders=embedders, baselines=factories,
                                    presets=presets, routers=routers, scores=scores,
                                    score_kind=score_kind,
                                    resamples=args.resamples,
                                    level=0.95 if args.level is None else args.level,
                                    keep_decisions=args.decisions,
                                    progress=_show_progress(args.quiet)))
            if not args.quiet:
                # Among the routers of the report's summary: the best of the whole selector
                # grid would be a pick on the test prompts (and disagreed with the report).
                best = max(summary_routers(results[-1]), key=lambda r: r["balanced"])
                print(f"{setting.name}: {len(results[-1]['routers'])} routers in "
                      f"{time.perf_counter() - start:.0f} s; best balanced accuracy of the "
                      f"preset routers and baselines {100 * best['balanced']:.1f}% "
                      f"({best['name']})", file=sys.stderr)
        # Quoted as a shell takes it: the report's command can be pasted to run again.
        meta = {"command": "ir3de " + shlex.join(argv),
                "date": datetime.datetime.now(datetime.timezone.utc).strftime(
                    "%Y-%m-%d %H:%M UTC"),
                "machine": machine()
                           + (f", kNN / MoDEM-style on {device_label(device)}" if device else ""),
                # The data read: the shared folder (built-in settings) or the user's files.
                # (a --fit run reads no data folder: none is recorded as if it had)
                "data_dir": None if args.fit else str(data_dir), "fit": args.fit,
                "test": args.test,
                "seed": seeds[0], "seeds": seeds, "max_fit": args.max_fit,
                "max_test": args.max_test, "ir3de": __version__,
                "embedders": [e.name for e in embedders], "presets": presets,
                "baselines": baselines, "routers": list(routers)}
        report = write_report({"meta": meta, "settings": results}, args.out,
                              plots=not args.no_plots, force=args.force)
    except BaseException:
        _remove_empty(created)  # a failed or interrupted run leaves no empty --out behind
        raise
    written = ["results.json", *(["decisions.jsonl"] * args.decisions),
               *(["PNG plots"] * (not args.no_plots))]  # what was written, no more
    beside = written[0] if len(written) == 1 else f"{', '.join(written[:-1])} and {written[-1]}"
    _note(f"{report}: report written ({beside} beside it)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ir3de.serve import serve

    return serve(args.config, host=args.host, port=args.port, log_level=args.log_level)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Messages(
        prog="ir3de", formatter_class=fmt, epilog=EPILOG,
        description="IR3DE routes each LLM prompt to the domain expert best suited to it with a "
                    "linear token router solved in closed form from additive per-domain "
                    "statistics.")
    parser.add_argument("--version", action="version", version=f"ir3de {__version__}")
    # _Parser: positionals and options in any order (experts' subcommands inherit it)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    p = sub.add_parser("stats", formatter_class=fmt,
                       help="domain corpus -> statistics file (token counts, b_d)",
                       description="Count the token ids of one domain's corpus and save its "
                                   "sufficient statistics: the token-id counts and document "
                                   "frequencies, b_d = Σ x̃ (A_d = Σ x̃x̃ᵀ is formed from the "
                                   "counts when a ridge router needs it), and the "
                                   "document frequencies of adjacent token pairs (and, with "
                                   "--tfidf-buckets, the TF-IDF ridge's statistics over hashed "
                                   "token ids). The texts never leave the machine; the pairs "
                                   "do reveal local word order (--no-pairs leaves them out).")
    p.add_argument("corpus", nargs="+", type=_corpus,
                   help="JSONL, plain text (one prompt per line) or Parquet files, not "
                        "standard input; with --engine ray also globs and URLs")
    p.add_argument("--domain", required=True, type=_argument_text,
                   help="the domain (expert) name")
    p.add_argument("-o", "--output", required=True, type=_file,
                   help="statistics file to write (missing folders are created)")
    p.add_argument("--format", choices=FORMATS, help="corpus format (default: from the suffix)")
    p.add_argument("--text-field", metavar="FIELD",
                   help="JSON field / Parquet column holding the text (default: text); refused "
                        "for plain text corpora, which have none")
    p.add_argument("--max-tokens", type=_positive_int, default=DEFAULT_MAX_TOKENS,
                   help=f"tokens counted per prompt at most (default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--no-pairs", action="store_true",
                   help="leave out the adjacent-token-pair counts (they reveal local word "
                        "order): the file then serves the unigram, identity, dense and paper "
                        "presets, not the default or pairs")
    p.add_argument("--skip-pairs", action="store_true",
                   help="also count skip pairs (tokens two places apart) into the pair table: "
                        "what --preset skips reads; about doubles the pair table (GSM8K's "
                        "file 2.1 → 4.5 MB) and reveals a little more word order")
    p.add_argument("--tfidf-buckets", type=_tfidf_buckets, metavar="N",
                   help=f"also count the statistics of the prompt-level TF-IDF ridge over N "
                        f"hashed buckets (what --preset tfidf reads; {TFIDF_BUCKETS} there): "
                        f"a sparse (N+1)² Gram matrix, up to ~{_gram_mb(TFIDF_BUCKETS)} MB "
                        "for a large corpus, and files several times larger")
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar (one is drawn only when stderr is a terminal) and no "
                        "summary line")
    _add_embedder_args(p, "wordllama")
    p.add_argument("--sign", metavar="KEY", type=_file,
                   help="sign the file with this private key "
                                                 "(ir3de keygen; extra ir3de[sign])")
    g = p.add_argument_group("distributed counting (extra ir3de[ray])")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: Ray Data workers count files "
                        "(one task each) and the driver sums them (same file, bit for bit)")
    g.add_argument("--address", help="--engine ray: Ray cluster to join (default: start a "
                                     "local one)")
    g.add_argument("--workers", type=_positive_int,
                   help="--engine ray: counting workers (default: one per cluster CPU)")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("merge", formatter_class=fmt, help="sum shards of one domain",
                       description="Sum statistics files of the SAME domain (computed on "
                                   "different machines or corpus parts): equal to one fit.")
    p.add_argument("stats", nargs="+", type=_file, help="statistics files of one domain")
    p.add_argument("-o", "--output", required=True, type=_file,
                   help="statistics file to write (missing folders are created)")
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.add_argument("--no-pairs", action="store_true",
                   help="leave the token-pair counts out of the merged file (needed to merge "
                        "shards made with and without stats --no-pairs; it then serves the "
                        "presets stats --no-pairs serves)")
    p.add_argument("--no-tfidf", action="store_true",
                   help="leave the TF-IDF statistics out of the merged file (needed to merge "
                        "shards made with and without stats --tfidf-buckets; it then serves "
                        "every preset but tfidf)")
    p.add_argument("--sign", metavar="KEY", type=_file,
                   help="sign the merged file with this private key")
    _add_quiet(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("build", formatter_class=fmt, help="statistics files -> router",
                       description="Solve a router from one statistics file per expert. "
                                   "Write NAME=FILE to give an expert another name than its "
                                   "file's domain.")
    p.add_argument("stats", nargs="+", metavar="[NAME=]FILE", type=_named_file,
                   help="statistics files, each optionally with the expert's name (default: "
                        "the file's domain)")
    p.add_argument("-o", "--output", required=True, type=_file,
                   help="router file to write (missing folders are created)")
    p.add_argument("--force", action="store_true", help="overwrite the output file")
    p.add_argument("--max-tokens", type=_positive_int,
                   help="routing cap on prompt tokens (default: the cap the statistics were "
                        "counted with, ir3de stats --max-tokens)")
    _add_router_args(p)
    _add_embedder_args(p, None)
    p.add_argument("--trust", metavar="DIR", type=_folder,
                   help="accept only statistics signed by a public key (*.pub) in DIR, under "
                        "the names they were signed with; an unsigned, untrusted, altered or "
                        "renamed file is refused, nothing is written")
    _add_quiet(p, solve=True)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("keygen", formatter_class=fmt, help="create a signing key pair",
                       description="Create an Ed25519 key pair for signing statistics files: "
                                   "KEY (private, owner-only) and KEY with suffix .pub "
                                   "(public, for router builders' --trust folder). Needs the "
                                   "extra ir3de[sign].")
    p.add_argument("-o", "--output", required=True, metavar="KEY", type=_file,
                   help="private key file, not named .pub (missing folders are created)")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    _add_quiet(p)
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("route", formatter_class=fmt, help="prompts -> JSONL decisions",
                       description="Route prompts given as arguments, in a JSONL file "
                                   "(--input, '-' for stdin) or one per line on stdin (blank "
                                   "lines skipped). Prints one JSON object per prompt: id, "
                                   "expert, confidence and, with a token-pair table (the "
                                   "default preset), coverage: the share of the prompt's "
                                   "token pairs seen in the fit data; --scores adds each "
                                   "expert's score, --explain also the tokens that voted "
                                   "and the evidence: the terms (tokens and, for the geo "
                                   "selector, token pairs, skip pairs with the skips preset "
                                   "and the TF-IDF bias with tfidf) that moved the winner's "
                                   "score most above the runner-up's, each with its lead "
                                   "(the leads of all terms add up to log(winner's score / "
                                   "runner-up's) for geo, to the difference of the scores "
                                   "for the other selectors); "
                                   "--evidence sets how many are printed, --against EXPERT "
                                   "compares the winner with that expert instead, to ask "
                                   "why a prompt did not go there). "
                                   "Options may come before, between or after the "
                                   "prompts.\n\n"
                                   "ids: a prompt argument's or stdin line's position, from 0; "
                                   "a JSONL record's 'id' field (a string or an integer, "
                                   "printed as given), else <file stem>-<n> (stdin-<n> with "
                                   "--input -), n its record number from 1, blank lines not "
                                   "counted: the ids ir3de eval gives. Ids must be unique (7 "
                                   "and \"7\" are one id).\n\n"
                                   "Every prompt is read and checked first: an empty prompt, "
                                   "one without a token to route on (only special tokens "
                                   "such as <s>, or characters the tokenizer drops), a bad "
                                   "record or a repeated id fails the call, naming it (a "
                                   "prompt argument by its number from 1 and its id), and "
                                   "nothing is printed; so does finding no prompt at all. "
                                   "Then each batch's decisions are printed as soon as it is "
                                   "routed, with a progress bar on stderr when that is a "
                                   "terminal.")
    p.add_argument("router", type=_file, help="router file")
    p.add_argument("prompt", nargs="*", default=[],  # (not "required": stdin or --input will do)
                   help="prompts to route (default none: --input, or plain text on stdin)")
    p.add_argument("--input", metavar="FILE", type=_file, action=_Once,
                   help="JSONL, one object per line with the prompt in a text field and "
                        "optionally an id ('-': stdin); one file per call; plain text goes "
                        "on stdin without --input")
    p.add_argument("--text-field", metavar="FIELD",
                   help="JSON field of the --input records holding the prompt (default: text)")
    # --explain already holds the scores: with --scores too, one of them would do nothing
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--explain", action="store_true",
                       help="add per-expert scores, the voting tokens and the evidence")
    shown.add_argument("--scores", action="store_true",
                       help="add each expert's score (what confidence is for the winner: its "
                            "vote share, mean probability or normalised geometric mean "
                            "probability), without the voting tokens")
    p.add_argument("--evidence", type=_term_count, metavar="N",
                   help="with --explain: print the N terms with the largest leads (default "
                        "10; 0: every term)")
    p.add_argument("--against", metavar="EXPERT",
                   help="with --explain: the expert the evidence compares the winner with, "
                        "instead of the runner-up (where EXPERT won, the runner-up)")
    p.add_argument("--k", type=_token_count,
                   help="override the router's k (tokens that vote with --selector topk)")
    p.add_argument("--selector", choices=SELECTORS, help="override the router's selector")
    p.add_argument("--batch-size", type=_positive_int, default=1024,
                   help="prompts per batch (default %(default)s)")
    _add_embedder_args(p, None, router=True)
    p.set_defaults(func=cmd_route)

    p = sub.add_parser(
        "calibrate", formatter_class=fmt,
        help="held-out prompts -> the gateway's fallback cuts",
        description="Choose the gateway's threshold (on a decision's confidence) and "
                    "min_coverage (on its coverage, the share of the prompt's token pairs "
                    "seen in the fit data; routers with a pair table) from prompts the "
                    "router was not fitted on: for each share of prompts to keep (100, 99, "
                    "98, 95, 90, 80 % and --keep), the cut that keeps at least that share, "
                    "and, for labelled prompts, the kept prompts' balanced accuracy and the "
                    "expert whose prompts are kept least. Prints the tables and the "
                    "gateway.yaml lines for --keep; --json prints them as one JSON object, "
                    "--plot draws accuracy against the share kept.\n\n"
                    "DATA is one JSONL file: one object per prompt, its text in a text field "
                    "and, optionally, its expert's name in a label field (every record or "
                    "none; without labels the tables give kept shares only); or NAME=CORPUS "
                    "items, each a corpus of expert NAME read as ir3de stats reads it (blank "
                    "prompts and prompts without a token skipped, as counting skips them): "
                    "the very files the router's statistics were counted from are what "
                    "--folds needs. The prompts must not "
                    "be ones the router was fitted on (their pairs are all seen: coverage 1), "
                    "unless --folds is given: then they are (part of) its fit data, labelled, "
                    "and each fold is routed by the router re-solved without that fold's "
                    "statistics, exactly a fit without it (the statistics are sums; the "
                    "smoothing stays at the full router's values). Prompts that were not "
                    "fitted on give wrong cuts with --folds, or an error where their counts "
                    "go negative.",
        epilog="examples:\n"
               "  ir3de calibrate router.safetensors held.jsonl --keep 0.95\n"
               "  ir3de calibrate router.safetensors math=gsm8k.jsonl coding=mbpp.jsonl "
               "--folds 5 --plot cuts.png\n"
               "  (the corpora ir3de stats counted for the router's experts math and "
               "coding)")
    p.add_argument("router", type=_file, help="router file")
    p.add_argument("data", nargs="+", metavar="DATA",
                   help="a JSONL file of prompts ('-': standard input), or NAME=CORPUS items: "
                        "the corpus files ir3de stats counted for expert NAME (JSONL, plain "
                        "text or Parquet, read as stats reads them; repeat for more files "
                        "or experts)")
    p.add_argument("--text-field", metavar="FIELD",
                   help="JSON field / Parquet column holding the prompt (default: text)")
    p.add_argument("--format", choices=FORMATS,
                   help="format of the NAME=CORPUS files (default: from the suffix)")
    p.add_argument("--label-field", metavar="FIELD",
                   help="field of the JSONL file naming the prompt's expert (default: "
                        "domain)")
    p.add_argument("--keep", type=_share, default=0.95,
                   help="share of prompts to keep, in (0, 1], that the gateway.yaml lines "
                        "are for (default: %(default)s)")
    p.add_argument("--folds", type=_checked(int, lambda v: v >= 2, "an integer >= 2"),
                   help="DATA is the router's labelled fit data: hold out each of this many "
                        "folds exactly by subtracting its statistics")
    p.add_argument("--seed", type=_checked(int, lambda v: 0 <= v < 2**63,
                                           "an integer in 0..2**63 - 1"),
                   help="seed of the folds (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", type=_file,
                   help="write a PNG of accuracy against the share kept (labelled prompts; "
                        "extra ir3de[eval])")
    p.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    _add_quiet(p)
    _add_embedder_args(p, None, router=True)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("experts", formatter_class=fmt, help="list, add or remove experts",
                       description="Change a saved router's experts: the router is re-solved "
                                   "from the statistics it keeps, exactly as a full refit.")
    esub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = esub.add_parser("list", help="list the experts",
                        description="One line per expert, in the router's order: its name "
                                    "and how many prompts and tokens its statistics hold.")
    e.add_argument("router", type=_file, help="router file")
    e.add_argument("--json", action="store_true",
                   help="print one JSON object per expert (name, n_prompts, n_tokens)")
    _add_embedder_args(e, None, router=True)
    e = esub.add_parser("add", help="add an expert from its statistics file",
                        description="Add an expert to a saved router from its statistics "
                                    "file (ir3de stats) and re-solve: the router a build "
                                    "from every statistics file would give, exactly. The "
                                    "statistics must use the router's embedder (same "
                                    "fingerprint).")
    e.add_argument("router", type=_file, help="router file, updated in place unless -o")
    e.add_argument("stats", type=_file, help="statistics file")
    e.add_argument("--name", type=_argument_text,
                   help="expert name (default: the file's domain)")
    e.add_argument("-o", "--output", type=_file,
                   help="write here instead of updating ROUTER in place (missing folders are "
                        "created)")
    e.add_argument("--force", action="store_true",
                   help="let --output replace a file that is not an ir3de router")
    _add_quiet(e, solve=True)
    _add_embedder_args(e, None, router=True)
    e.add_argument("--trust", metavar="DIR", type=_folder,
                   help="accept the statistics only if signed by a public key (*.pub) in DIR, "
                        "as build --trust; an unsigned, untrusted, altered or renamed (--name) "
                        "file is refused, nothing is written")
    e = esub.add_parser("remove", help="remove an expert",
                        description="Remove an expert from a saved router and re-solve from "
                                    "the statistics of the others: the router a build "
                                    "without it would give, exactly.")
    e.add_argument("router", type=_file, help="router file, updated in place unless -o")
    e.add_argument("name", type=_argument_text, help="expert to remove")
    e.add_argument("-o", "--output", type=_file,
                   help="write here instead of updating ROUTER in place (missing folders are "
                        "created)")
    e.add_argument("--force", action="store_true",
                   help="let --output replace a file that is not an ir3de router")
    _add_quiet(e, solve=True)
    _add_embedder_args(e, None, router=True)
    p.set_defaults(func=cmd_experts)

    p = sub.add_parser("inspect", formatter_class=fmt, help="describe a router or statistics file",
                       description="Print what a router or statistics file holds: its "
                                   "embedder and fingerprint; a router's experts, their "
                                   "counts and who signed their statistics, its model "
                                   "with the settings it reads (nb: α and, with the geo "
                                   "selector, the token-pair mass; ridge: λ, "
                                   "balancing, normalisation, "
                                   "bias penalty and the identity μ in use), its selector, k "
                                   "(topk only) and token cap; a statistics file's domain, "
                                   "counts, tables and signature. A router is then loaded as route "
                                   "loads it.")
    p.add_argument("file", type=_file, help="router or statistics file")
    _add_embedder_args(p, None, router=True)
    p.add_argument("--json", action="store_true",
                   help="machine-readable output, printed once a router has loaded (nothing "
                        "on stdout for one that fails)")
    p.add_argument("--trust", metavar="DIR", type=_folder,
                   help="check that the statistics file, or every expert of the router, is "
                        "signed by a key in DIR (a folder of *.pub) and unchanged since, and "
                        "name the key; the first that is not is named, nothing is printed, "
                        "and the exit status is 1")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", formatter_class=fmt,
                       help="fit on ../shared/data Reasoning, save, route, print accuracy",
                       description="The whole job end to end: fit a router on the leakage-free "
                                   "Reasoning fit sets, save it, route example prompts and "
                                   "print the routing accuracy on the held-out test sets.")
    p.add_argument("--data", type=_folder,
                   help="shared data folder (default: $IR3DE_DATA or ../shared/data)")
    p.add_argument("-o", "--output", default="router.safetensors", type=_file,
                   help="router file to write (default %(default)s; an existing router is "
                        "replaced; missing folders are created)")
    p.add_argument("--force", action="store_true",
                   help="let --output replace a file that is not an ir3de router")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (drawn only when stderr is a terminal)")
    p.add_argument("--max-tokens", type=_positive_int,
                   help=f"cap on prompt tokens, fitting and routing (default "
                        f"{DEFAULT_MAX_TOKENS})")
    _add_router_args(p)
    _add_embedder_args(p, "wordllama")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser(
        "eval", formatter_class=fmt, help="compare IR3DE with baselines, write a report",
        description="Reproduce the paper's experiments: fit IR3DE (every embedder, the "
                    "'default' and 'paper' presets, topk k in {1,...,500}, all, avg, geo) and the "
                    "baselines on the same split, then write report.md, results.json and "
                    "PNG plots to --out.\n\nsettings:\n"
                    "  reasoning-paper  the paper's protocol; LEAKS HumanEval/IFEval test "
                    "prompts into the fit\n"
                    "  reasoning-2fold  HumanEval/IFEval halves: fit on one, test on the other\n"
                    "  reasoning-xdata  coding fitted on MBPP, instructions on Alpaca\n"
                    "  domains          the domain corpora (nine), seeded 70/30 split by id\n"
                    "  --fit DIR        your own JSONL data ('domain' field or one file per "
                    "domain)\n\nbaselines: random; knn (all-MiniLM-L6-v2 sentence "
                    "embeddings, cosine, k=1,5,10); tfidf (TF-IDF + logistic regression); modem "
                    "(fine-tuned MiniLM classifier, slow, opt-in). knn and modem need the "
                    "minilm extra.",
        epilog="example:\n  ir3de eval --setting all --out results/\n"
               "  ir3de eval --setting reasoning-xdata --max-fit 500 --max-test 100 "
               "--baselines random tfidf --out quick/\n"
               "  ir3de eval --router router.safetensors --test test.jsonl --out mine/")
    # --fit makes its own setting: with --setting too, one of them would be ignored.
    which = p.add_mutually_exclusive_group()
    which.add_argument("--setting", nargs="+", metavar="SETTING",
                       choices=["all", "reasoning-paper", "reasoning-2fold", "reasoning-xdata",
                                "domains"], help="settings to run: all (default) or some of "
                                                 "those above")
    p.add_argument("--out", required=True, type=_folder,
                   help="output folder (created if missing; not a --fit, --test or data "
                        "folder nor inside one); a previous eval's outputs in it are "
                        "replaced, other files of the same names only with --force")
    p.add_argument("--force", action="store_true",
                   help="replace a report.md, results.json, decisions.jsonl or plot in --out "
                        "that ir3de eval did not write")
    p.add_argument("--data", type=_folder,
                   help="shared data folder of the built-in settings (default: $IR3DE_DATA or "
                        "../shared/data; not with --fit)")
    which.add_argument("--fit", type=_file_or_folder,
                       help="your own fit data: a JSONL file or folder (instead of --setting)")
    p.add_argument("--test", type=_file_or_folder,
                   help="your own test data (default: 30%% of --fit, by id; without --fit: "
                        "the --router routers' test data)")
    p.add_argument("--embedder", nargs="+", metavar="NAME", type=_embedder_source,
                   help="embedders for IR3DE (default: wordllama and, if installed, minilm)")
    p.add_argument("--baselines", nargs="*", metavar="NAME",
                   choices=["random", "knn", "tfidf", "modem"],
                   help="baselines to run (default: random knn tfidf, those installed)")
    p.add_argument("--device", type=_device, metavar="DEVICE",
                   help="torch device of the knn and modem baselines: auto (default: the "
                        "first CUDA GPU torch sees, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--presets", nargs="+", choices=sorted(PRESETS),
                   metavar="PRESET", help="router presets to evaluate, each over the whole "
                   f"selector grid ({', '.join(sorted(PRESETS))}; default: default paper)")
    p.add_argument("--router", nargs="+", type=_file, metavar="FILE",
                   help="saved routers (ir3de build) to score as they are, with their own "
                        "selector and k, on every split's test prompts beside the routers "
                        "fitted here; their experts must be named as the setting's domains. "
                        "With --test and no --fit, they are scored on --test alone. A saved "
                        "router may have been fitted on a built-in setting's test prompts: "
                        "ir3de cannot tell")
    p.add_argument("--seed", type=_seed, nargs="+", default=[0], metavar="SEED",
                   help="seed of splits, subsamples and baselines (0 to 2**32 - 1; default "
                        "0); several seeds repeat the seeded splits (domains, reasoning-2fold, "
                        "subsamples) once per seed and pool them, so a gap is not one split's "
                        "luck; each split's baselines are trained with its seed")
    p.add_argument("--max-fit", type=_positive_int, help="at most N fit prompts per domain")
    p.add_argument("--max-test", type=_positive_int, help="at most N test prompts per domain")
    p.add_argument("--scores", type=_file, help="JSONL of per-prompt expert scores "
                                    '({"id", "expert", "score"}) for normalized performance')
    p.add_argument("--score-kind", choices=["task", "perplexity"],
                   help="of the --scores: task (default): higher is better; perplexity: lower "
                        "is better")
    p.add_argument("--resamples", type=_resamples, default=2000,
                   help="bootstrap resamples of the test prompts for the intervals of "
                        "balanced accuracy and of each preset's gap to the best baseline "
                        "(default %(default)s; 0: no intervals, else at least 100)")
    p.add_argument("--level", type=_open_fraction,
                   help="coverage of those intervals (default 0.95)")
    p.add_argument("--decisions", action="store_true",
                   help="also write decisions.jsonl: every test prompt's gold domain and "
                        "where each preset router and baseline sent it, and for a prompt an "
                        "IR3DE router misrouted the 5 largest terms of its decision against "
                        "the gold expert, which report.md sums up per router (error "
                        "analysis; pairs this run with another of the same setting and seed)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (drawn only when stderr is a terminal)")
    p.set_defaults(func=cmd_eval, argv=None)
    p.conflicts = _eval_option_conflict

    p = sub.add_parser(
        "serve", formatter_class=fmt, help="OpenAI-compatible routing gateway",
        description="Serve an OpenAI-compatible API (/v1/chat/completions, /v1/completions, "
                    "/v1/models, /healthz, /metrics) that routes each request to the right "
                    "expert server (vLLM, Ollama, llama.cpp, TGI, any OpenAI-compatible "
                    "endpoint). Needs the extra ir3de[serve]. The YAML config names the "
                    "router, the experts' endpoints, the fallback expert, the routing text "
                    "policy and the confidence threshold, and optionally api_keys_env: the "
                    "environment variable holding the client API keys (comma-separated) that "
                    "requests must send as 'Authorization: Bearer <key>' (if the config names "
                    "it and that variable is unset or empty, the gateway refuses to start; "
                    "without api_keys_env, any client may call it); see the README.",
        epilog="example with the README's gateway.yaml, whose coding expert's api_key_env "
               "(CODER_KEY)\nand api_keys_env (IR3DE_API_KEYS) must be set:\n"
               "  CODER_KEY=sk-coder IR3DE_API_KEYS=key1,key2 IR3DE_ADMIN_TOKEN=secret \\\n"
               "    ir3de serve --config gateway.yaml --port 8000\n"
               "  curl localhost:8000/v1/chat/completions -H 'content-type: application/json' "
               "\\\n    -H 'authorization: Bearer key1' \\\n"
               "    -d '{\"model\": \"ir3de\", \"messages\": [{\"role\": \"user\", "
               "\"content\": \"What is 17 * 23?\"}]}'")
    p.add_argument("--config", required=True, type=_file, help="gateway YAML config")
    p.add_argument("--host", type=_host, default="127.0.0.1",
                   help="interface to listen on (default %(default)s; 0.0.0.0: every one)")
    p.add_argument("--port", type=_port, default=8000,
                   help="port to listen on (default %(default)s)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="the gateway's log level (default %(default)s)")
    p.set_defaults(func=cmd_serve)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, systemd, Kubernetes) or SIGHUP (the terminal closed) raised as
    an interruption: every cleanup that Ctrl-C runs (temporary files, a key pair being
    replaced, a staging folder) runs for it too, where the default action would kill the
    process mid-write. ``args[0]``: the signal."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(signum)


# The signals a command is stopped by as by Ctrl-C (SIGHUP where there is one).
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                      if hasattr(signal, name))


@contextlib.contextmanager
def _sigterm_as_interrupt(command: str) -> Iterator[None]:
    """While a command other than ``serve`` runs (the gateway drains its own requests on
    SIGTERM and SIGHUP), SIGTERM and SIGHUP interrupt it like Ctrl-C; the previous handlers
    come back after, as tests call :func:`main` in their own process. A signal ignored
    when the command starts (``nohup``) stays ignored. Handlers can only be set from the
    main thread; elsewhere the defaults stay."""
    if command == "serve":
        yield
        return
    with _signal_handlers(_STOP_SIGNALS, _raise_terminated):
        yield


@contextlib.contextmanager
def _signal_handlers(signals: Iterable[int],
                     handler: Callable[[int, Any], None]) -> Iterator[dict[int, Any]]:
    """``handler`` for each of ``signals`` that is not ignored (``nohup``) while the block
    runs, the previous handlers back after; yields those previous handlers. Handlers can
    only be set from the main thread: elsewhere nothing changes (and none are yielded)."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig, old in previous.items():
        if old is not signal.SIG_IGN:
            signal.signal(sig, handler)
    try:
        yield previous
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _interruptions_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP held back until the block ends, then acted on as usual; a
    second one acts at once (a write blocked on a full pipe can still be stopped). What
    the block writes is then whole: a line cut in two by Ctrl-C was left at the end of the
    output, a broken record for whoever reads or resumes from it."""
    held: list[int] = []
    previous: dict[int, Any] = {}

    def hold(signum: int, frame: Any) -> None:
        if held:  # a second one: as usual, now
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        held.append(signum)

    with _signal_handlers((signal.SIGINT, *_STOP_SIGNALS), hold) as old:
        previous.update(old)
        yield
    if held:
        signal.raise_signal(held[0])  # to its own handler (Ctrl-C: KeyboardInterrupt)


def run() -> None:
    """The ``ir3de`` program (its console script and ``python -m ir3de``): :func:`main`,
    then exit with its status. Once main has returned, the command's outcome is decided and
    written: a SIGTERM or SIGHUP during the interpreter's shutdown (~0.1 s) would still
    make the exit status 143, a finished change reported as stopped, which a script would
    retry ("already exists"). So they are ignored from then on; Ctrl-C is not, in case the
    shutdown hangs."""
    try:
        code = main()
    finally:  # (--help and --version leave main by SystemExit)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``ir3de`` command on ``argv`` (default: the program's arguments); returns the
    exit status. Tests call it in their own process."""
    for stream in (sys.stdout, sys.stderr):
        # A character the stream's encoding lacks (an expert name, a "\u2581" token in
        # --explain, with PYTHONIOENCODING=ascii) is escaped, not a UnicodeEncodeError
        # traceback halfway through the output
        with contextlib.suppress(AttributeError, ValueError):  # (not a TextIOWrapper)
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    parser = build_parser()
    try:
        # (inside: --help or --version that cannot be written is an IR3DEError, _Messages)
        args = parser.parse_args(argv)
        if argv is not None:
            args.argv = list(argv)
        with _sigterm_as_interrupt(args.command):
            code = args.func(args)
            _flush_stdout()  # a buffered write fails here, reported as any error, not at exit
        return code
    except IR3DEError as exc:
        print(f"ir3de: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (``ir3de route ... | head``): not an error of ours.
        sys.stderr.close()
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ir3de: error: {_one_line(f'{where}{exc.strerror or exc}')}", file=sys.stderr)
        return 1
    except MemoryError:
        # (files are written whole or not at all, so none is left half-written)
        print("ir3de: error: out of memory; give it less at once (fewer or smaller inputs; "
              "for route, a smaller --batch-size) or more memory", file=sys.stderr)
        return 1
    except _Terminated as stop:
        signum = stop.args[0]
        with contextlib.suppress(OSError):  # (a closed terminal cannot be told)
            print("ir3de: hung up" if signum != signal.SIGTERM else "ir3de: terminated",
                  file=sys.stderr)
        return 128 + signum
    except KeyboardInterrupt:
        print("ir3de: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    run()
