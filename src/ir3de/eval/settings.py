"""Evaluation settings: which prompts a router is fitted on and which it is tested on.

Built-in settings, read from the shared data folder (``../shared/data`` or ``$IR3DE_DATA``):

* ``reasoning-paper`` — the paper's own protocol: fit on gsm8k train, m_arc train and the
  HumanEval and IFEval prompts themselves, test on gsm8k test, m_arc test, HumanEval and
  IFEval. **It leaks test prompts into the fit** (those two sets have no train split); it
  is here to compare with the paper, not to judge generalisation.
* ``reasoning-2fold`` — as above, but HumanEval and IFEval are split in two seeded halves:
  fit on one, test on the other, both ways (two splits).
* ``reasoning-xdata`` — coding fitted on MBPP, instruction following on Alpaca: no test
  prompt, nor its dataset, is ever fitted on.
* ``domains`` — the domain corpora of ``domains/`` (nine in the shared data; one folder
  of JSONL files each), a seeded 70/30 split by ``id``.

User data (:func:`custom_setting`): a folder of JSONL files whose records carry a
``domain`` field, or one JSONL file per domain (the file name is the domain). A folder is
read as its ``*.jsonl`` files (also ``*.ndjson`` and ``*.json``, suffixes in any case);
any other visible file in it (a ``tax.txt``, a broken symbolic link) is an error, not
skipped, and so is a file without records: either would silently leave a domain out
(hidden files and subfolders are ignored). File and folder names must be valid UTF-8 (a
file's name is its domain and its records' default ids, which the report prints). Ids are
strings or integers (an integer is its decimal string), unique within the fit data and
within the test data; a record without one is ``<file stem>-<n>``, ``n`` its 1-based
record number in the file (blank lines not counted). Two domains with the same fit prompts
are refused: no router can tell them apart.

In every setting but ``reasoning-paper`` (which leaks on purpose), a test prompt whose text,
leading and trailing whitespace aside, is also a fit prompt of its split is dropped and
counted (:attr:`Split.dropped`).

A setting's name names its plot files and the report's links to them, so it is made of
letters, digits, ``.``, ``_`` and ``-`` (:func:`check_setting_name`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypedDict

import numpy as np

from ..data import (
    JSONL_SUFFIXES,
    REASONING_FIT,
    REASONING_TEST,
    default_data_dir,
    missing_data,
    read_records,
    reasoning_records,
    seeded_split,
)
from ..errors import EmptyInputError, IR3DEError, listed, shown_path
from ..statistics import domain_name_problem

__all__ = ["SETTINGS", "Setting", "Split", "check_setting_name", "custom_setting",
           "load_setting", "refuse_identical_fit", "repeat_setting", "test_setting"]

SETTINGS = ("reasoning-paper", "reasoning-2fold", "reasoning-xdata", "domains")
_DESCRIPTIONS = {
    "reasoning-paper": "The paper's protocol: HumanEval and IFEval prompts are fitted on AND "
                       "tested on (test prompts leak into the fit).",
    "reasoning-2fold": "HumanEval / IFEval split in two seeded halves: fit on one, test on the "
                       "other, both ways; math and multilingual from their train/test splits.",
    "reasoning-xdata": "Coding fitted on MBPP, instruction following on Alpaca: the HumanEval "
                       "and IFEval test prompts come from datasets never fitted on.",
    "domains": "{count} domain corpora, seeded 70/30 split by id (test texts that also occur "
               "in the fit part under another id are dropped).",
}
_PAPER_FIT = {**REASONING_FIT, "coding": ["humaneval/test"],
              "instruction_following": ["ifeval/test"]}
_TWO_FOLD = ("coding", "instruction_following")
_DOMAINS_TRAIN_FRACTION = 0.7
# Safe in a file name on every system and in a markdown link without escaping; long
# enough for any name, short enough that "accuracy_vs_k_<name>.png" stays a legal name.
_SETTING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class Split:
    """One fit/test split: fit prompts per domain, test prompts with ids and gold domains."""

    name: str
    fit: dict[str, list[str]]
    test_ids: list[str]
    test_texts: list[str]
    test_labels: list[str]
    # Test prompts per domain left out because their text is also a fit prompt (compared
    # with leading and trailing whitespace stripped, see _split).
    dropped: dict[str, int] = field(default_factory=dict)
    # The seed the split was drawn with (None for a split built by hand): the harness
    # trains a seeded baseline with it, so repeating a setting over seeds also repeats the
    # baselines' own random draw instead of keeping one draw for every split.
    seed: int | None = None

    @property
    def fit_texts(self) -> list[str]:
        return [t for texts in self.fit.values() for t in texts]

    @property
    def fit_labels(self) -> list[str]:
        return [d for d, texts in self.fit.items() for _ in texts]


@dataclass(frozen=True)
class Setting:
    """A named evaluation setting: its domains and one or more splits."""

    name: str
    description: str
    domains: list[str]
    splits: list[Split]
    leaks_test: bool = False
    sources: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # The seeds whose splits these are (several after repeat_setting: only those that gave
    # a split of their own); empty when not known (a setting built by hand).
    seeds: list[int] = field(default_factory=list)


def check_setting_name(name: object) -> str:
    """``name`` if it can name a setting, else :class:`~ir3de.errors.IR3DEError`: it names
    the plot files (``confusion_<name>.png``) and the report's links to them, so ``a/b``
    would make a subfolder, ``../x`` write outside the output folder and a space break the
    link; letters, digits, ``.``, ``_`` and ``-``, at most 100, the first a letter or digit.

    >>> check_setting_name("my-data_v2")
    'my-data_v2'
    """
    if not isinstance(name, str) or not _SETTING_NAME.fullmatch(name):
        raise IR3DEError(f"setting name {name!r}: use letters, digits, '.', '_' and '-' (at "
                         "most 100, the first a letter or digit): it names the plot files")
    return name


def _require_utf8_name(path: Path) -> None:
    """Refuse a file or folder name that is not valid UTF-8: the domain and default ids
    taken from it, and the report that names them, could not be written, after the run."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise IR3DEError(f"{shown_path(path)}: the name is not valid UTF-8 (the report could not "
                         "name it); rename it") from None


def refuse_identical_fit(where: str, fit: dict[str, list[str]],
                         origins: dict[str, list[str]] | None = None) -> None:
    """Raise :class:`~ir3de.errors.IR3DEError` when two domains of ``fit`` have the same fit
    prompts (in any order): their statistics are identical, which the router refuses only
    once the run has started, naming neither file. ``where`` starts the message;
    ``origins`` (domain -> its files) names the files."""
    first: dict[tuple[str, ...], str] = {}
    for domain, texts in fit.items():
        other = first.setdefault(tuple(sorted(texts)), domain)
        if other == domain:
            continue
        files = list(dict.fromkeys([*(origins or {}).get(other, []),
                                    *(origins or {}).get(domain, [])]))
        named = f" (from {', '.join(files)})" if files else ""
        raise IR3DEError(f"{where}: domains {other!r} and {domain!r} have the same fit "
                         f"prompts{named}, so no router can tell them apart; remove one or "
                         "give it prompts of its own")


def _subsample(records: list[dict], limit: int | None, rng: np.random.Generator) -> list[dict]:
    if limit is None or len(records) <= limit:
        return records
    keep = np.sort(rng.choice(len(records), size=limit, replace=False))
    return [records[i] for i in keep]


def _split(setting: str, name: str, fit: dict[str, list[dict]], test: dict[str, list[dict]],
           *, max_fit: int | None, max_test: int | None, seed: int,
           leak: bool = False, origins: dict[str, list[str]] | None = None) -> Split:
    """One split; ``origins`` (domain -> its fit files) names the files in errors."""
    rng = np.random.default_rng(seed)
    where = f"setting {setting!r}, split {name!r}"
    fit_texts, ids, texts, labels, dropped = {}, [], [], [], {}
    def read_from(domain: str) -> str:
        files = (origins or {}).get(domain)
        return f" (read from {listed([shown_path(f) for f in files])})" if files else ""

    for domain in fit:
        fit_texts[domain] = [r["text"] for r in _subsample(fit[domain], max_fit, rng)]
        if not fit_texts[domain]:
            raise EmptyInputError(f"{where}: domain {domain!r} has no fit prompts"
                                  f"{read_from(domain)}")
    refuse_identical_fit(where, fit_texts, origins)
    # Some corpora hold the same text under two ids: a test prompt whose text was fitted on
    # is dropped, unless the setting leaks on purpose. Texts are compared stripped: a copy
    # with a trailing newline is the same prompt to a router, which would still be tested
    # on memory.
    seen = set() if leak else {t.strip() for group in fit_texts.values() for t in group}
    for domain in test:
        unseen = [r for r in test[domain] if r["text"].strip() not in seen]
        dropped[domain] = len(test[domain]) - len(unseen)
        chosen = _subsample(unseen, max_test, rng)
        if not chosen:
            why = (f": all {dropped[domain]} are also fit prompts (the same text, leading "
                   "and trailing whitespace aside) and were dropped" if dropped[domain] else "")
            raise EmptyInputError(f"{where}: domain {domain!r} has no test prompts{why}"
                                  f"{read_from(domain) if not why else ''}")
        ids += [str(r["id"]) for r in chosen]
        texts += [r["text"] for r in chosen]
        labels += [domain] * len(chosen)
    return Split(name, fit_texts, ids, texts, labels, dropped, seed)


class _Caps(TypedDict):
    """The prompt caps and seed every built-in setting's splits take."""

    max_fit: int | None
    max_test: int | None
    seed: int


def load_setting(name: str, data_dir: str | os.PathLike[str] | None = None, *, seed: int = 0,
                 max_fit: int | None = None, max_test: int | None = None) -> Setting:
    """Load a built-in setting (see the module docs).

    ``max_fit`` / ``max_test`` cap the prompts per domain (a seeded subsample, for quick
    runs and tests); ``seed`` also drives the HumanEval/IFEval halves and the domain split.

    >>> s = load_setting("reasoning-xdata", max_fit=100, max_test=20)  # doctest: +SKIP
    >>> s.domains  # doctest: +SKIP
    ['math', 'multilingual', 'coding', 'instruction_following']
    """
    given = data_dir is not None
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if not data_dir.is_dir():
        raise missing_data(data_dir, given)
    caps: _Caps = {"max_fit": max_fit, "max_test": max_test, "seed": seed}
    if name == "domains":
        return _domains(data_dir, **caps)
    if name not in SETTINGS:
        raise IR3DEError(f"unknown setting {name!r}; choose one of {', '.join(SETTINGS)}, "
                         "or give your own data with --fit")
    tested: dict[str, str] = {}  # test ids unique over the domains, as in _domains
    load = {d: reasoning_records(data_dir, names, seen=tested)
            for d, names in REASONING_TEST.items()}
    if name == "reasoning-paper":
        fit_sources = _PAPER_FIT
        fit = {d: reasoning_records(data_dir, names) for d, names in fit_sources.items()}
        splits = [_split(name, "all", fit, load, **caps, leak=True)]
    elif name == "reasoning-xdata":
        fit_sources = REASONING_FIT
        fit = {d: reasoning_records(data_dir, names) for d, names in fit_sources.items()}
        splits = [_split(name, "all", fit, load, **caps)]
    else:
        fit_sources = _PAPER_FIT
        base = {d: reasoning_records(data_dir, names) for d, names in REASONING_FIT.items()}
        halves = {d: seeded_split(load[d], 0.5, seed) for d in _TWO_FOLD}
        splits = []
        for fold in (0, 1):
            fit = {d: halves[d][fold] if d in halves else base[d] for d in load}
            test = {d: halves[d][1 - fold] if d in halves else load[d] for d in load}
            splits.append(_split(name, f"fold{fold}", fit, test, **caps))
    return Setting(name, _DESCRIPTIONS[name], list(load), splits,
                   leaks_test=name == "reasoning-paper",
                   sources={"fit": {d: list(v) for d, v in fit_sources.items()},
                            "test": {d: list(v) for d, v in REASONING_TEST.items()}},
                   seeds=[seed])


def repeat_setting(load: Callable[[int], Setting], seeds: Sequence[int]) -> Setting:
    """One setting whose splits are those of ``load(seed)`` for every seed.

    A gap of a few tenths of a point can be one split's luck; repeating the seeded split
    (and pooling, as the harness pools folds) measures the router rather than the draw.
    Splits are named ``seed{s}/{name}``; a split equal to one already kept (a setting, or a
    subsample, that the seed does not change, e.g. ``reasoning-xdata`` in full) is kept
    once, so only what the seed really changes is repeated (its seeded baselines are then
    trained once too, with that split's seed). The setting's ``seeds`` are those that gave a
    split of their own, which is what the report says was repeated.

    >>> s = repeat_setting(lambda seed: load_setting("domains", seed=seed), [0, 1])
    ... # doctest: +SKIP
    >>> [split.name for split in s.splits]  # doctest: +SKIP
    ['seed0/70/30', 'seed1/70/30']
    """
    seeds = list(dict.fromkeys(seeds))
    if not seeds:
        raise IR3DEError("no seeds to repeat the setting with")
    settings = [load(seed) for seed in seeds]
    if len(seeds) == 1:
        return settings[0]
    splits: list[Split] = []
    used: list[int] = []
    for seed, setting in zip(seeds, settings, strict=True):
        for split in setting.splits:
            if not any(split.fit == kept.fit and split.test_ids == kept.test_ids
                       for kept in splits):
                splits.append(replace(split, name=f"seed{seed}/{split.name}"))
                used += [seed] if seed not in used else []
    return replace(settings[0], splits=splits, seeds=used)


def _domains(data_dir: Path, *, max_fit: int | None, max_test: int | None,
             seed: int) -> Setting:
    """One domain per folder of ``domains/``, every JSONL file of it read (ids unique over
    them): only the last file of a folder was read, files of another suffix were skipped,
    and a single folder made a run that every router won at 100 %."""
    folder = data_dir / "domains"
    if not folder.is_dir():  # (was "0 domain corpus folder(s)", as for an empty one)
        raise IR3DEError(f"{folder}: missing; is {data_dir} the shared data folder?")
    folders = sorted(p for p in folder.glob("*") if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        found = f" ({listed([p.name for p in folders])})" if folders else ""
        raise IR3DEError(f"{folder}: {len(folders)} domain corpus folder(s){found}; the "
                         "setting needs at least two, one folder of JSONL files per domain")
    fit, test, sources = {}, {}, {}
    # ids unique over every folder, not each: scores and decisions name a test prompt by
    # its id alone (two domains' prompt 5 shared one --scores row, without a word)
    seen: dict[str, str] = {}
    for sub in folders:
        problem = domain_name_problem(sub.name)
        if problem:  # the folder's name is the expert's
            raise IR3DEError(f"{shown_path(sub)}: a domain folder's name names its expert, "
                             f"and this one {problem}")
        files = _jsonl_files(sub, "domain")
        records = [r for path in files for r in read_records(path, seen)]
        fit[sub.name], test[sub.name] = seeded_split(records, _DOMAINS_TRAIN_FRACTION, seed)
        sources[sub.name] = [str(p.relative_to(data_dir)) for p in files]
    split = _split("domains", "70/30", fit, test, max_fit=max_fit, max_test=max_test,
                   seed=seed, origins={d: [str(data_dir / f) for f in fs]
                                       for d, fs in sources.items()})
    description = _DESCRIPTIONS["domains"].format(count=_count_word(len(fit)))
    return Setting("domains", description, list(fit), [split], sources={"fit": sources},
                   seeds=[seed])


def _count_word(n: int) -> str:
    """``n`` as a sentence starts it: "Nine", "Twelve", "42"."""
    words = ("Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten",
             "Eleven", "Twelve")
    return words[n - 2] if 2 <= n <= 12 else str(n)


def _jsonl_files(folder: Path, role: str) -> list[Path]:
    """The JSONL files of ``folder`` (:data:`~ir3de.data.JSONL_SUFFIXES`, in any case),
    sorted by name. Any other visible file is refused rather than skipped: a ``tax.txt``
    left out would silently make a run with one domain fewer, and so would a broken
    symbolic link or anything else that is not a regular file. Hidden files (``.name``) and
    subfolders are ignored."""
    files: list[Path] = []
    others: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.is_dir():
            continue
        if not entry.is_file():
            what = "a broken symbolic link" if entry.is_symlink() else "not a regular file"
            raise IR3DEError(f"{shown_path(entry)}: {what} in the {role} data folder (its "
                             "domain would be left out); fix it or move it out")
        (files if entry.suffix.lower() in JSONL_SUFFIXES else others).append(entry)
    kinds = ", ".join(f"*{s}" for s in JSONL_SUFFIXES)
    if others:
        names = listed([shown_path(p.name) for p in others])
        them = "it" if len(others) == 1 else "them"
        raise IR3DEError(f"{folder}: a {role} data folder may hold only JSONL files ({kinds}, "
                         f"in any case; hidden files are ignored), not {names}: convert "
                         f"{them} to JSONL or move {them} out")
    if not files:
        raise IR3DEError(f"{folder}: no JSONL files ({kinds}, any case)")
    return files


def _labelled_records(path: Path, role: str = "data"
                      ) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """Records per domain from a JSONL file or folder (``domain`` field, else file name),
    each with a string ``id`` unique across ``path`` (see the module docs), and the files
    each domain's records came from; ``role`` (``fit``, ``test``) names the folder in
    errors. A file without records is refused: it would leave its domain out unsaid."""
    _require_utf8_name(path)
    if not path.exists():
        raise IR3DEError(f"{path}: no such file or folder")
    files = _jsonl_files(path, role) if path.is_dir() else [path]
    out: dict[str, list[dict]] = {}
    origins: dict[str, list[str]] = {}
    # Scores and decisions name a test prompt by its id alone, the split sorts and draws
    # ids, and the bootstrap counts an id once: a repeated id would merge two prompts.
    first_seen: dict[str, str] = {}
    for file in files:
        _require_utf8_name(file)

        def check_domain(record: dict, here: str, file: Path = file) -> None:
            domain = record.get("domain", file.stem)
            problem = domain_name_problem(domain)
            if problem is not None:  # (here, naming the line, not when it is fitted)
                raise IR3DEError(f"{here}: 'domain' {json.dumps(domain)} {problem}")

        # records without an id are <file stem>-<n> (documented); errors name lines
        records = read_records(file, first_seen, default_id=file.stem, check=check_domain)
        if not records:
            raise IR3DEError(f"{file}: no records")
        for record in records:
            domain = record.get("domain", file.stem)
            out.setdefault(domain, []).append(record)
            if str(file) not in origins.setdefault(domain, []):
                origins[domain].append(str(file))
    return out, origins


def custom_setting(fit_path: str | os.PathLike[str],
                   test_path: str | os.PathLike[str] | None = None, *, name: str = "custom",
                   seed: int = 0, max_fit: int | None = None,
                   max_test: int | None = None) -> Setting:
    """A setting from user JSONL data; without ``test_path``, a seeded 70/30 split by id.
    ``name`` must pass :func:`check_setting_name`."""
    check_setting_name(name)
    fit, origins = _labelled_records(Path(fit_path), "fit")
    if len(fit) < 2:
        raise IR3DEError(f"{fit_path}: need at least two domains, found {sorted(fit)} (a "
                         "record's domain is its 'domain' field, else its file's name)")
    if test_path is None:
        pairs = {d: seeded_split(records, _DOMAINS_TRAIN_FRACTION, seed)
                 for d, records in fit.items()}
        for domain, (part, _) in pairs.items():
            if not part:  # int(0.7 n) is 0 for n = 1 only; the test part is never empty
                raise IR3DEError(f"{fit_path}: domain {domain!r} has {len(fit[domain])} "
                                 "prompt(s): the 70/30 split by id leaves it no fit prompts "
                                 "(give it more, or separate test data)")
        fit = {d: p[0] for d, p in pairs.items()}
        test = {d: p[1] for d, p in pairs.items()}
    else:
        test, _ = _labelled_records(Path(test_path), "test")
        unknown = sorted(set(test) - set(fit))
        if unknown:
            raise IR3DEError(f"{test_path}: test domains {unknown} have no fit data in {fit_path}")
    test = {d: test.get(d, []) for d in fit if test.get(d)}
    split = _split(name, "all", fit, test, max_fit=max_fit, max_test=max_test, seed=seed,
                   origins=origins)
    return Setting(name, f"User data: fit {fit_path}, test {test_path or '30% of the fit data'}.",
                   list(fit), [split], seeds=[seed])


def test_setting(test_path: str | os.PathLike[str], domains: Sequence[str] | None = None, *,
                 name: str = "custom", seed: int = 0, max_test: int | None = None) -> Setting:
    """A setting of user test data alone (no fit prompts), for saved routers
    (``evaluate(..., routers=...)``, ``ir3de eval --router R --test DATA``). ``domains``:
    the setting's domains, the experts of the routers to score (default: the test data's
    own); every test domain must be one of them, and one without test prompts is routed to
    but not tested. ``name`` must pass :func:`check_setting_name`."""
    check_setting_name(name)
    test, origins = _labelled_records(Path(test_path), "test")
    domains = list(domains) if domains is not None else list(test)
    unknown = [d for d in test if d not in domains]
    if unknown:
        raise IR3DEError(f"{test_path}: test domains {listed(unknown)} are not experts of the "
                         f"router ({listed(domains)}); name them as its experts are")
    split = _split(name, "all", {}, {d: test[d] for d in domains if d in test},
                   max_fit=None, max_test=max_test, seed=seed, origins=origins)
    return Setting(name, f"User test data: {test_path}, scored by saved routers.", domains,
                   [split], seeds=[seed])
