"""Evaluation settings: what each fits and tests on, leakage, seeded splits, user data."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ir3de.errors import IR3DEError
from ir3de.eval.settings import SETTINGS, custom_setting, load_setting, repeat_setting


def test_reasoning_paper_leaks_and_says_so(data_dir: Path) -> None:
    s = load_setting("reasoning-paper", data_dir)
    (split,) = s.splits
    assert s.leaks_test and "leak" in s.description
    fit = set(split.fit_texts)
    for domain in ("coding", "instruction_following"):
        tested = [t for t, d in zip(split.test_texts, split.test_labels, strict=True)
                  if d == domain]
        assert tested and all(t in fit for t in tested)
    assert len(split.test_texts) == 1319 + 1860 + 164 + 541


def test_xdata_and_2fold_never_fit_a_test_prompt(data_dir: Path) -> None:
    for name in ("reasoning-xdata", "reasoning-2fold", "domains"):
        s = load_setting(name, data_dir)
        assert not s.leaks_test
        for split in s.splits:
            assert not set(split.fit_texts) & set(split.test_texts), (name, split.name)
            assert len(set(split.test_ids)) == len(split.test_ids)


def test_two_folds_are_complementary_halves(data_dir: Path) -> None:
    s = load_setting("reasoning-2fold", data_dir, seed=3)
    f0, f1 = s.splits
    for domain, total in (("coding", 164), ("instruction_following", 541)):
        t0 = {i for i, d in zip(f0.test_ids, f0.test_labels, strict=True) if d == domain}
        t1 = {i for i, d in zip(f1.test_ids, f1.test_labels, strict=True) if d == domain}
        assert not t0 & t1 and len(t0 | t1) == total
        assert abs(len(t0) - len(t1)) <= 1
        assert len(f0.fit[domain]) == len(t1) and len(f1.fit[domain]) == len(t0)
    other = load_setting("reasoning-2fold", data_dir, seed=4).splits[0]
    assert other.test_ids != f0.test_ids  # the seed moves the halves


def test_domains_split_is_70_30_by_id_and_seeded(data_dir: Path) -> None:
    a = load_setting("domains", data_dir, seed=0).splits[0]
    b = load_setting("domains", data_dir, seed=0).splits[0]
    c = load_setting("domains", data_dir, seed=1).splits[0]
    assert a.test_ids == b.test_ids and a.test_ids != c.test_ids
    n_fit = len(a.fit_texts)
    assert n_fit / (n_fit + len(a.test_texts)) == pytest.approx(0.7, abs=0.01)
    assert len(set(a.test_labels)) == 9


def test_domains_reads_every_file_of_a_folder_and_needs_two(tmp_path: Path) -> None:
    """A domain folder of two files was read as its last file alone, an all.JSONL or a
    notes.txt was skipped, and one folder made a run every router won at 100 %."""
    for domain in ("aaa", "bbb"):
        (tmp_path / "domains" / domain).mkdir(parents=True)
    _write(tmp_path / "domains/aaa/all.jsonl",
           [{"id": f"a{i}", "text": f"sum {i} and {i}"} for i in range(20)])
    _write(tmp_path / "domains/bbb/part1.jsonl",
           [{"id": i, "text": f"def f{i}(): pass"} for i in range(10)])
    _write(tmp_path / "domains/bbb/part2.JSONL",
           [{"id": i, "text": f"def g{i}(): pass"} for i in range(10, 30)])
    setting = load_setting("domains", tmp_path)
    (split,) = setting.splits
    assert setting.sources["fit"]["bbb"] == ["domains/bbb/part1.jsonl",
                                             "domains/bbb/part2.JSONL"]
    assert len(split.fit["bbb"]) + split.test_labels.count("bbb") == 30
    assert setting.description.startswith("Two domain corpora")
    _write(tmp_path / "domains/bbb/part3.jsonl", [{"id": 3, "text": "def h(): pass"}])
    with pytest.raises(IR3DEError, match=r"part3.jsonl:1: .*id '3' .*part1.jsonl:4"):
        load_setting("domains", tmp_path)
    # ... and across the folders: two domains' prompt 3 shared a --scores row
    _write(tmp_path / "domains/bbb/part3.jsonl", [{"id": "a3", "text": "def h(): pass"}])
    with pytest.raises(IR3DEError, match=r"bbb/part3.jsonl:1: repeats id 'a3' of "
                                         r".*aaa/all.jsonl:4; ids must be unique"):
        load_setting("domains", tmp_path)
    (tmp_path / "domains/bbb/part3.jsonl").unlink()
    (tmp_path / "domains/bbb/notes.txt").write_text("to do\n")
    with pytest.raises(IR3DEError, match=r"bbb: a domain data folder may hold only JSONL "
                                         r"files .* not notes.txt"):
        load_setting("domains", tmp_path)
    (tmp_path / "domains/bbb/notes.txt").unlink()
    (tmp_path / "domains/bbb/part1.jsonl").rename(tmp_path / "domains/aaa/part1.jsonl")
    (tmp_path / "domains/bbb/part2.JSONL").unlink()
    (tmp_path / "domains/bbb").rmdir()
    with pytest.raises(IR3DEError, match=r"domains: 1 domain corpus folder\(s\) \(aaa\); "
                                         r"the setting needs at least two"):
        load_setting("domains", tmp_path)
    # no domains folder at all: said so (was "0 domain corpus folder(s)")
    with pytest.raises(IR3DEError, match=rf"^{tmp_path / 'none'}/domains: missing; is "
                                         rf"{tmp_path / 'none'} the shared data folder\?$"):
        (tmp_path / "none").mkdir()
        load_setting("domains", tmp_path / "none")


def test_subsample_caps_per_domain(data_dir: Path) -> None:
    s = load_setting("reasoning-xdata", data_dir, max_fit=30, max_test=7)
    (split,) = s.splits
    assert all(len(t) == 30 for t in split.fit.values())
    assert [split.test_labels.count(d) for d in s.domains] == [7] * 4


def test_unknown_setting_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(IR3DEError, match="unknown setting 'nope'"):
        load_setting("nope", tmp_path)
    with pytest.raises(IR3DEError, match="no such data folder"):
        load_setting(SETTINGS[0], tmp_path / "missing")
    with pytest.raises(IR3DEError, match="missing"):
        load_setting("reasoning-xdata", tmp_path)


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_custom_setting_from_domain_field_and_from_file_names(tmp_path: Path) -> None:
    folder = tmp_path / "labelled"
    folder.mkdir()
    _write(folder / "all.jsonl", [{"id": f"m{i}", "text": f"sum {i} and {i + 1}",
                                   "domain": "math"} for i in range(20)]
           + [{"id": f"c{i}", "text": f"def f{i}(): pass", "domain": "code"} for i in range(10)])
    s = custom_setting(folder, seed=1)
    (split,) = s.splits
    assert s.domains == ["math", "code"]
    assert len(split.fit["math"]) == 14 and split.test_labels.count("math") == 6
    per_file = tmp_path / "per_file"
    per_file.mkdir()
    _write(per_file / "math.jsonl", [{"text": f"what is 2 + {i}"} for i in range(3)])
    _write(per_file / "code.jsonl", [{"text": f"import os{i}"} for i in range(3)])
    test_file = tmp_path / "test.jsonl"
    _write(test_file, [{"text": "what is 2 + 1", "domain": "math"},  # fitted on: dropped
                       {"text": "what is 9 + 9", "domain": "math"},
                       {"text": "import sys", "domain": "code"}])
    s = custom_setting(per_file, test_file)
    assert sorted(s.domains) == ["code", "math"]
    assert sorted(s.splits[0].test_texts) == ["import sys", "what is 9 + 9"]


def test_custom_setting_errors(tmp_path: Path) -> None:
    with pytest.raises(IR3DEError, match="no such file or folder"):
        custom_setting(tmp_path / "missing")
    (tmp_path / "one.jsonl").write_text('{"text": "a", "domain": "x"}\n')
    with pytest.raises(IR3DEError, match="at least two domains"):
        custom_setting(tmp_path / "one.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": ""}\n')
    with pytest.raises(IR3DEError, match=":1: record has no non-empty string field 'text'"):
        custom_setting(tmp_path / "bad.jsonl")
    fit = tmp_path / "fit.jsonl"
    _write(fit, [{"text": "a", "domain": "x"}, {"text": "b", "domain": "y"}])
    test = tmp_path / "test.jsonl"
    _write(test, [{"text": "c", "domain": "z"}])
    with pytest.raises(IR3DEError, match=r"test domains \['z'\] have no fit data"):
        custom_setting(fit, test)


def test_repeated_seeds_pool_the_splits_the_seed_changes(data_dir: Path) -> None:
    domains = repeat_setting(lambda seed: load_setting("domains", data_dir, seed=seed), [0, 1])
    assert [s.name for s in domains.splits] == ["seed0/70/30", "seed1/70/30"]
    assert [s.seed for s in domains.splits] == [0, 1]  # what trains the split's baselines
    assert domains.splits[0].test_ids != domains.splits[1].test_ids
    seed1 = load_setting("domains", data_dir, seed=1).splits[0]
    assert domains.splits[1].test_ids == seed1.test_ids and domains.splits[1].fit == seed1.fit
    folds = repeat_setting(lambda seed: load_setting("reasoning-2fold", data_dir, seed=seed),
                           [3, 4])
    assert [s.name for s in folds.splits] == ["seed3/fold0", "seed3/fold1", "seed4/fold0",
                                              "seed4/fold1"]
    # reasoning-xdata in full does not depend on the seed: its one split is kept once.
    xdata = repeat_setting(lambda seed: load_setting("reasoning-xdata", data_dir, seed=seed),
                           [0, 1, 2])
    assert [s.name for s in xdata.splits] == ["seed0/all"] and xdata.splits[0].seed == 0
    # One seed (or the same seed twice) is the plain setting.
    once = repeat_setting(lambda seed: load_setting("domains", data_dir, seed=seed), [2, 2])
    assert [s.name for s in once.splits] == ["70/30"]
    with pytest.raises(IR3DEError, match="no seeds"):
        repeat_setting(lambda seed: load_setting("domains", data_dir, seed=seed), [])


def _two_domains(n: int = 4) -> list[dict]:
    return [{"text": f"{word} {i}", "domain": d} for d, word in (("math", "sum"), ("code", "def"))
            for i in range(n)]


@pytest.mark.parametrize(("ident", "shown"), [(None, "null"), ([1], "[1]"), (True, "true"),
                                              (1.5, "1.5")])
def test_custom_ids_must_be_strings_or_integers(ident, shown, tmp_path: Path) -> None:
    """null, lists and floats used to fail with a TypeError; a boolean is no id either."""
    data = tmp_path / "mine.jsonl"
    _write(data, [*_two_domains(), {"id": ident, "text": "x", "domain": "math"}])
    with pytest.raises(IR3DEError, match=rf"mine.jsonl:9: 'id' must be a string or an "
                                         rf"integer, got {re.escape(shown)}$"):
        custom_setting(data)


def test_custom_integer_ids_are_their_decimal_strings(tmp_path: Path) -> None:
    """Mixed int and str ids used to fail sorting in the 70/30 split."""
    data = tmp_path / "mine.jsonl"
    _write(data, [{**r, "id": i if i % 2 else f"s{i}"} for i, r in enumerate(_two_domains())])
    (split,) = custom_setting(data).splits
    assert all(isinstance(i, str) for i in split.test_ids)
    assert set(split.test_ids) <= {str(i) if i % 2 else f"s{i}" for i in range(8)}


@pytest.mark.parametrize("repeat", ["a", 7])
def test_custom_repeated_ids_are_refused(repeat, tmp_path: Path) -> None:
    """A repeated id used to count as one prompt in the bootstrap (and share scores); 7 and
    "7" are the same id."""
    fit = tmp_path / "fit.jsonl"
    _write(fit, _two_domains())
    test = tmp_path / "test.jsonl"
    _write(test, [{"id": "a" if repeat == "a" else "7", "text": "sum 9", "domain": "math"},
                  {"id": repeat, "text": "def 9", "domain": "code"}])
    with pytest.raises(IR3DEError, match=rf"test.jsonl:2: repeats id '{repeat}' of "
                                         r".*test.jsonl:1; ids must be unique"):
        custom_setting(fit, test)
    # Across the files of a folder too: files of one folder are one data set.
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder / "math.jsonl", [{"id": "x", "text": "sum 1"}, {"text": "sum 2"}])
    _write(folder / "code.jsonl", [{"id": "x", "text": "def 1"}, {"text": "def 2"}])
    with pytest.raises(IR3DEError, match=r"math.jsonl:1: repeats id 'x' of .*code.jsonl"):
        custom_setting(folder)


def test_custom_records_without_id_are_named_by_file_and_record(tmp_path: Path) -> None:
    """``<file stem>-<n>``, n the record's 1-based number in its file (blank lines skipped)."""
    fit = tmp_path / "fit.jsonl"
    _write(fit, _two_domains())
    test = tmp_path / "test.jsonl"
    test.write_text('{"text": "sum 9", "domain": "math"}\n\n{"text": "def 9", "domain": "code"}\n'
                    '{"id": 5, "text": "sum 8", "domain": "math"}\n')
    (split,) = custom_setting(fit, test).splits
    assert split.test_ids == ["test-1", "5", "test-2"]


def test_custom_empty_or_too_small_data_say_why(tmp_path: Path) -> None:
    fit = tmp_path / "fit.jsonl"
    _write(fit, _two_domains())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    # An empty test set used to end in a ZeroDivisionError after the fit.
    with pytest.raises(IR3DEError, match=r"empty.jsonl: no records$"):
        custom_setting(fit, empty)
    one = tmp_path / "one.jsonl"
    _write(one, [*_two_domains(), {"text": "lone", "domain": "law"}])
    with pytest.raises(IR3DEError, match=r"one.jsonl: domain 'law' has 1 prompt\(s\): the 70/30 "
                                         "split by id leaves it no fit prompts"):
        custom_setting(one)
    nodomain = tmp_path / "nodomain.jsonl"
    _write(nodomain, [{"text": f"t {i}"} for i in range(4)])
    with pytest.raises(IR3DEError, match=r"found \['nodomain'\] \(a record's domain is its "
                                         r"'domain' field, else its file's name\)"):
        custom_setting(nodomain)


def test_test_prompts_that_are_fit_prompts_are_counted(tmp_path: Path) -> None:
    fit = tmp_path / "fit.jsonl"
    _write(fit, _two_domains())
    same = tmp_path / "same.jsonl"
    _write(same, _two_domains())
    with pytest.raises(IR3DEError, match=r"setting 'custom', split 'all': domain 'math' has no "
                                         r"test prompts: all 4 are also fit prompts \(the same "
                                         r"text, leading and trailing whitespace aside\) and "
                                         r"were dropped"):
        custom_setting(fit, same)
    partial = tmp_path / "partial.jsonl"
    _write(partial, [*_two_domains(2), {"text": "sum 9", "domain": "math"},
                     {"text": "def 9", "domain": "code"}])
    (split,) = custom_setting(fit, partial).splits
    assert split.dropped == {"math": 2, "code": 2} and split.test_texts == ["sum 9", "def 9"]


def test_test_prompts_that_are_fit_prompts_but_for_surrounding_whitespace_are_dropped(
        tmp_path: Path) -> None:
    """A fit prompt plus a trailing "\n" was tested as a new prompt: a leak."""
    fit = tmp_path / "fit.jsonl"
    _write(fit, _two_domains())
    test = tmp_path / "test.jsonl"
    _write(test, [{"text": "sum 0\n", "domain": "math"}, {"text": "  sum 1\t", "domain": "math"},
                  {"text": "sum  2", "domain": "math"}, {"text": "\ndef 3", "domain": "code"},
                  {"text": "def 9", "domain": "code"}])
    (split,) = custom_setting(fit, test).splits
    # Whitespace inside a text still makes another prompt.
    assert split.dropped == {"math": 2, "code": 1} and split.test_texts == ["sum  2", "def 9"]
    # A fit prompt with surrounding whitespace hides a plain test prompt as well.
    _write(fit, [{"text": f" {r['text']}\n", "domain": r["domain"]} for r in _two_domains()])
    test.write_text(json.dumps({"text": "sum 0", "domain": "math"}) + "\n"
                    + json.dumps({"text": "def 9", "domain": "code"}) + "\n")
    with pytest.raises(IR3DEError, match="domain 'math' has no test prompts: all 1 are also "
                                         "fit prompts"):
        custom_setting(fit, test)


def test_custom_errors_name_the_line_and_ids_count_records(tmp_path: Path) -> None:
    """Blank lines make a record's line differ from its number: errors name the line (to
    find it in an editor), default ids the record number (as documented)."""
    data = tmp_path / "mine.jsonl"
    lines = [json.dumps(r) for r in _two_domains()]
    data.write_text("\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    (split,) = custom_setting(data).splits
    assert split.test_ids and set(split.test_ids) <= {f"mine-{n}" for n in range(1, 9)}
    data.write_text("\n\n" + "\n".join([*lines, json.dumps({"text": "x", "domain": ""})]),
                    encoding="utf-8")
    with pytest.raises(IR3DEError, match=r"mine\.jsonl:11: 'domain' \"\" must be non-empty"):
        custom_setting(data)
    # a line break would break the report's tables and every listing of experts
    data.write_text("\n".join([*lines, json.dumps({"text": "x", "domain": "cod\ning"})]),
                    encoding="utf-8")
    with pytest.raises(IR3DEError, match=r"mine\.jsonl:9: 'domain' \"cod\\ning\" holds a "
                                         r"control character \(U\+000A\)"):
        custom_setting(data)


def test_custom_folder_reads_jsonl_in_any_case_and_ndjson(tmp_path: Path) -> None:
    """tax.JSONL used to be skipped without a word: the run had a domain fewer."""
    folder = tmp_path / "fit"
    folder.mkdir()
    for name in ("astronomy.jsonl", "tax.JSONL", "cooking.ndjson", "law.Json"):
        _write(folder / name, [{"text": f"{name} prompt {i}"} for i in range(10)])
    (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored
    (folder / "notes").mkdir()  # a subfolder: ignored
    (folder / "notes" / "readme.txt").write_text("mine")
    s = custom_setting(folder)
    assert sorted(s.domains) == ["astronomy", "cooking", "law", "tax"]
    assert {i.rsplit("-", 1)[0] for i in s.splits[0].test_ids} == set(s.domains)


@pytest.mark.parametrize("role", ["fit", "test"])
def test_custom_folder_with_other_files_is_refused(role: str, tmp_path: Path) -> None:
    """A tax.txt in the folder used to be skipped without a word."""
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "astronomy.jsonl", [{"text": f"star {i}"} for i in range(10)])
    _write(folder / "cooking.jsonl", [{"text": f"soup {i}"} for i in range(10)])
    (folder / "tax.txt").write_text("Can I deduct my home office?\n")
    fit = tmp_path / "fit.jsonl"
    _write(fit, [{"text": f"{w} {i}", "domain": d} for i in range(10)
                 for w, d in (("planet", "astronomy"), ("stew", "cooking"))])
    args = (folder,) if role == "fit" else (fit, folder)
    message = (f"{folder}: a {role} data folder may hold only JSONL files (*.jsonl, *.json, "
               "*.ndjson, in any case; hidden files are ignored), not tax.txt: convert it to "
               "JSONL or move it out")
    with pytest.raises(IR3DEError) as exc:
        custom_setting(*args)
    assert str(exc.value) == message
    for i in range(6):
        (folder / f"extra{i}.csv").write_text("x\n")
    with pytest.raises(IR3DEError, match=r"not extra0\.csv, extra1\.csv, extra2\.csv, "
                                         r"extra3\.csv, extra4\.csv and 2 more: convert them"):
        custom_setting(*args)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IR3DEError, match=r"empty: no JSONL files \(\*\.jsonl, \*\.json, "
                                         r"\*\.ndjson, any case\)"):
        custom_setting(empty)


# ----------------------------------------------------------------------------- probe fixes
def test_a_file_name_that_is_not_utf8_is_refused_before_the_run(tmp_path: Path) -> None:
    """b"caf\\xe9.jsonl" made the domain 'caf\\udce9': the plots, report.md and
    decisions.jsonl failed to encode it after the whole run."""
    folder = tmp_path / "fit"
    folder.mkdir()
    _write(folder / "math.jsonl", [{"text": f"sum {i}"} for i in range(4)])
    odd = folder / os.fsdecode(b"caf\xe9.jsonl")
    try:
        _write(odd, [{"text": f"espresso {i}"} for i in range(4)])
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(IR3DEError) as exc:
        custom_setting(folder)
    assert str(exc.value) == (f"{folder}/caf\\xe9.jsonl: the name is not valid UTF-8 (the "
                              "report could not name it); rename it")
    # Even with a 'domain' field in every record: the default ids come from the name.
    _write(odd, [{"text": f"espresso {i}", "domain": "coffee"} for i in range(4)])
    with pytest.raises(IR3DEError, match="the name is not valid UTF-8"):
        custom_setting(folder)
    with pytest.raises(IR3DEError, match="the name is not valid UTF-8"):
        custom_setting(odd)


def _data_folder(root: Path, bad: dict | None, where: str) -> Path:
    """A shared data folder with two domain corpora, ``bad`` (if any) appended to
    ``where`` (``domains/<name>/<file>``)."""
    for domain, word in (("law", "court"), ("math", "sum")):
        (root / "domains" / domain).mkdir(parents=True)
        _write(root / "domains" / domain / "all.jsonl",
               [{"id": f"{domain}{i}", "text": f"{word} {i}"} for i in range(10)])
    if bad is not None:
        with (root / where).open("a") as fh:
            fh.write(json.dumps(bad) + "\n")
    return root


@pytest.mark.parametrize(("bad", "message"), [
    ({"id": "x"}, ":11: record has no non-empty string field 'text'"),
    ({"text": "sum 99"}, r":11: record has no 'id' \(a string or an integer\)"),
    ({"id": 1.5, "text": "sum 99"}, ":11: 'id' must be a string or an integer, got 1.5"),
    ({"id": "", "text": "sum 99"}, ":11: empty 'id'; give a non-empty string or an integer"
                                   ".*"),
    ({"id": "math3", "text": "sum 99"}, ":11: repeats id 'math3' of .*all.jsonl:4; ids must "
                                        "be unique")])
def test_builtin_settings_name_the_line_of_a_bad_record(bad: dict, message: str,
                                                        tmp_path: Path) -> None:
    """A record without 'text' or 'id' failed with a bare KeyError in the split."""
    data = _data_folder(tmp_path, bad, "domains/math/all.jsonl")
    with pytest.raises(IR3DEError, match=rf"^{re.escape(str(data))}/domains/math/all.jsonl"
                                         f"{message}$"):
        load_setting("domains", data)
    assert load_setting("domains", _data_folder(tmp_path / "good", None, "")).domains == [
        "law", "math"]


def test_empty_files_and_broken_links_in_a_folder_are_refused(tmp_path: Path) -> None:
    """Either left its domain out of the run without a word."""
    folder = tmp_path / "fit"
    folder.mkdir()
    for domain, word in (("law", "court"), ("math", "sum"), ("code", "def")):
        _write(folder / f"{domain}.jsonl", [{"text": f"{word} {i}"} for i in range(4)])
    (folder / "cooking.jsonl").write_text("\n")
    with pytest.raises(IR3DEError) as exc:
        custom_setting(folder)
    assert str(exc.value) == f"{folder / 'cooking.jsonl'}: no records"
    (folder / "cooking.jsonl").unlink()
    (folder / "tax.jsonl").symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(IR3DEError) as exc:
        custom_setting(folder)
    assert str(exc.value) == (f"{folder / 'tax.jsonl'}: a broken symbolic link in the fit data "
                              "folder (its domain would be left out); fix it or move it out")
    (folder / "tax.jsonl").unlink()
    assert sorted(custom_setting(folder).domains) == ["code", "law", "math"]


def test_setting_names_must_be_safe_file_names(tmp_path: Path) -> None:
    """'a/b' made plot subfolders, '../x' wrote beside --out, a space broke the links."""
    data = tmp_path / "mine.jsonl"
    _write(data, _two_domains())
    for name in ("a/b", "../x", "my data", "", ".hidden", "x" * 101):
        with pytest.raises(IR3DEError, match=r"setting name .*: use letters, digits"):
            custom_setting(data, name=name)
    assert custom_setting(data, name="my-data_v2.1").name == "my-data_v2.1"


def test_domains_with_the_same_fit_prompts_are_refused_naming_their_files(
        tmp_path: Path) -> None:
    """They failed after the run had started with "identical statistics: experts 'a'
    (<memory>) and 'b' (<memory>)"."""
    folder = tmp_path / "fit"
    folder.mkdir()
    for name in ("a", "b", "c"):
        word = "def" if name == "c" else "sum"
        _write(folder / f"{name}.jsonl", [{"text": f"{word} {i}"} for i in range(4)])
    test = tmp_path / "test.jsonl"
    _write(test, [{"text": "sum 9", "domain": "a"}, {"text": "def 9", "domain": "c"}])
    with pytest.raises(IR3DEError) as exc:
        custom_setting(folder, test)
    assert str(exc.value) == (f"setting 'custom', split 'all': domains 'a' and 'b' have the "
                              f"same fit prompts (from {folder / 'a.jsonl'}, "
                              f"{folder / 'b.jsonl'}), so no router can tell them apart; "
                              "remove one or give it prompts of its own")


def test_a_setting_records_the_seeds_that_gave_its_splits(tmp_path: Path) -> None:
    """The report said "seeded splits repeated once per seed and pooled" of a custom
    setting with its own test data, whose one split no seed changes."""
    fit = tmp_path / "fit.jsonl"
    _write(fit, _two_domains())
    test = tmp_path / "test.jsonl"
    _write(test, [{"text": "sum 9", "domain": "math"}, {"text": "def 9", "domain": "code"}])
    fixed = repeat_setting(lambda seed: custom_setting(fit, test, seed=seed), [0, 1, 2])
    assert fixed.seeds == [0] and len(fixed.splits) == 1
    drawn = repeat_setting(lambda seed: custom_setting(fit, seed=seed), [3, 4])
    assert drawn.seeds == [3, 4] and len(drawn.splits) == 2
    assert custom_setting(fit, seed=5).seeds == [5]
    assert [s.seed for s in drawn.splits] == [3, 4] and fixed.splits[0].seed == 0
