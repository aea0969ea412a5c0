"""Signed statistics for federations: keygen, sign, verify, and refusals that name the file."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPORA

from ir3de import DomainStats, Embedder, Router, RouterConfig, compute_stats, merge
from ir3de.cli import main
from ir3de.errors import IR3DEError
from ir3de.statistics import PairCounts
from ir3de.store import read_safetensors, write_safetensors

pytest.importorskip("cryptography", reason="signing needs pip install 'ir3de[sign]'")

from ir3de.signing import (
    digest,
    generate_key,
    load_private_key,
    load_trusted,
    public_key_path,
    sign,
    verify,
)

# Keys cryptography cannot load (UnsupportedAlgorithm), made with openssl: genpkey
# -algorithm SM2, and ecparam -name brainpoolP160r1 -genkey (private, then -pubout).
SM2_PRIVATE = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqBHM9VAYItBG0wawIBAQQgcfM3b8K1ku6vtz3C
uFuFfyDVYvsAugLEQibZqsC5J5mhRANCAARj6kx1zYV8Sltkf0xki1J231Z/yS51
aDI9Yc5U8dSuk8RG3iqJHA0a1xuaSYQxKZPt4RPZoZjxzJKGk/nkKxys
-----END PRIVATE KEY-----
"""
BRAINPOOL_PRIVATE = """-----BEGIN EC PRIVATE KEY-----
MFQCAQEEFJMLoK//xELbVm4JvzrY6xHUGGyWoAsGCSskAwMCCAEBAaEsAyoABEbP
QnDfIv+Aa8HsBiLPyhUz1ikYYDU7Fi1Kx7SXI5sXv6rP+eoykOM=
-----END EC PRIVATE KEY-----
"""
BRAINPOOL_PUBLIC = """-----BEGIN PUBLIC KEY-----
MEIwFAYHKoZIzj0CAQYJKyQDAwIIAQEBAyoABEbPQnDfIv+Aa8HsBiLPyhUz1ikY
YDU7Fi1Kx7SXI5sXv6rP+eoykOM=
-----END PUBLIC KEY-----
"""


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path]:
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    out = {}
    for party in ("alice", "bob", "mallory"):
        out[party] = tmp_path / f"{party}.key"
        public = generate_key(out[party])
        if party != "mallory":
            public.rename(trusted / public.name)
    out["trusted"] = trusted
    return out


def test_keygen_writes_private_key_owner_only_and_refuses_overwrite(tmp_path: Path) -> None:
    public = generate_key(tmp_path / "p.key")
    assert public == tmp_path / "p.pub" and b"PUBLIC KEY" in public.read_bytes()
    assert stat.S_IMODE((tmp_path / "p.key").stat().st_mode) == 0o600
    # The library's own spelling first (the CLI shares the message: --force there)
    with pytest.raises(IR3DEError, match=r"p\.key exists; pass force=True \(--force on "
                                         r"the command line\) to overwrite it"):
        generate_key(tmp_path / "p.key")
    # a .pub name would make the public key overwrite the private one
    with pytest.raises(IR3DEError, match=r"name the private key, not a \.pub file"):
        generate_key(tmp_path / "q.pub", force=True)
    assert not (tmp_path / "q.pub").exists()
    with pytest.raises(IR3DEError, match=r"name the private key, not a \.pub file"):
        generate_key(tmp_path / "q.PUB", force=True)  # one file with q.pub where case folds
    # a name that is no file name (pathlib's "has an empty name" escaped as a ValueError)
    for name in ("", ".", "/", ".."):
        with pytest.raises(IR3DEError, match=rf"^{re.escape(repr(name))} is not a file name: "
                                             r"name the private key file \(e\.g\. party\.key"):
            public_key_path(name)
    assert main(["keygen", "-o", ".."]) == 1
    with pytest.raises(SystemExit) as exc:  # a path ending in "/" names a folder: usage
        main(["keygen", "-o", "/"])
    assert exc.value.code == 2


def test_keygen_racing_another_keeps_a_whole_pair(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without force, a key file that appears after the check (another keygen writing the
    same names) is not replaced, and no half of a pair is left behind."""
    import ir3de.signing as signing_module
    import ir3de.store as store_module

    real = store_module.atomic_write_bytes

    def other_keygen_meanwhile(path, data, **kwargs):
        if Path(path).suffix == ".pub":
            Path(path).write_bytes(b"the other keygen's public key")
        return real(path, data, **kwargs)

    monkeypatch.setattr(signing_module, "atomic_write_bytes", other_keygen_meanwhile)
    with pytest.raises(IR3DEError, match=r"p\.pub exists now; it was left as it is"):
        generate_key(tmp_path / "p.key")
    assert not (tmp_path / "p.key").exists()
    assert (tmp_path / "p.pub").read_bytes() == b"the other keygen's public key"
    generate_key(tmp_path / "p.key", force=True)  # force: both replaced
    assert b"PUBLIC KEY" in (tmp_path / "p.pub").read_bytes()


def test_keygen_that_fails_halfway_keeps_the_previous_key(tmp_path: Path) -> None:
    """The public key cannot be written: with --force the previous private key is put
    back, not lost; without, the new one is removed. Through a symbolic link both act on
    the link's target, and the link stays."""
    public = generate_key(tmp_path / "p.key")
    old = (tmp_path / "p.key").read_bytes()
    public.unlink()
    public.mkdir()
    with pytest.raises(IR3DEError, match=r"p\.pub is a directory"):
        generate_key(tmp_path / "p.key", force=True)
    assert (tmp_path / "p.key").read_bytes() == old
    assert (tmp_path / "p.key").stat().st_mode & 0o777 == 0o600
    (tmp_path / "keys").mkdir()
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "keys" / "real.key")  # dangling: no key yet
    (tmp_path / "a-file").write_text("")
    (tmp_path / "link.pub").symlink_to(tmp_path / "a-file" / "link.pub")  # unwritable
    with pytest.raises(IR3DEError, match=r"a-file"):
        generate_key(link)
    assert link.is_symlink() and not (tmp_path / "keys" / "real.key").exists()
    (tmp_path / "link.pub").unlink()
    (tmp_path / "link.pub").mkdir()
    (tmp_path / "keys" / "real.key").write_bytes(old)
    with pytest.raises(IR3DEError, match=r"link\.pub is a directory"):
        generate_key(link, force=True)
    assert link.is_symlink() and link.read_bytes() == old
    # a loop of links is named, not a traceback
    (tmp_path / "loop-a.key").symlink_to(tmp_path / "loop-b.key")
    (tmp_path / "loop-b.key").symlink_to(tmp_path / "loop-a.key")
    with pytest.raises(IR3DEError, match=r"^cannot write .*loop-a\.key: "):
        generate_key(tmp_path / "loop-a.key", force=True)


def test_a_private_key_whose_public_key_is_another_keys_is_refused(emb: Embedder,
                                                                     tmp_path: Path) -> None:
    """keygen --force killed (kill -9) between its two writes left the new private key
    beside the old public key: whatever it signed then failed to verify against the
    public key handed out, as "signed by a key not in DIR"."""
    generate_key(tmp_path / "old.key")
    generate_key(tmp_path / "p.key")
    stats = compute_stats(emb, ["What is 2 + 2?"], domain="math")
    sign(stats, tmp_path / "p.key")  # a whole pair signs
    (tmp_path / "p.pub").write_bytes((tmp_path / "old.pub").read_bytes())
    with pytest.raises(IR3DEError, match=r"p\.key: .*p\.pub beside it is another key's "
                                         r"public key \(a keygen cut short\?\).*ir3de "
                                         r"keygen -o \S+p\.key --force$"):  # (a command
        # that runs: "keygen --force p.key" lacked -o, a usage error)
        sign(stats, tmp_path / "p.key")
    (tmp_path / "p.pub").unlink()  # no public key beside it: nothing to check
    assert sign(stats, tmp_path / "p.key").signature is not None
    if hasattr(os, "mkfifo"):  # a pipe there blocked the read for ever: not checked
        os.mkfifo(tmp_path / "p.pub")
        assert sign(stats, tmp_path / "p.key").signature is not None


def test_signed_file_round_trips_and_verifies(emb: Embedder, keys, tmp_path: Path) -> None:
    stats = sign(compute_stats(emb, CORPORA["math"], domain="math"), keys["alice"])
    stats.save(tmp_path / "math.stats")
    loaded = DomainStats.load(tmp_path / "math.stats")
    assert verify(loaded, load_trusted(keys["trusted"])) == "alice.pub"
    assert digest(loaded) == digest(stats)
    # a key named in capitals is a key too (it was skipped: "signed by a key that is not
    # trusted"), as keygen takes any case of .pub
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "ALICE.PUB").write_bytes((keys["trusted"] / "alice.pub").read_bytes())
    assert verify(loaded, load_trusted(upper)) == "ALICE.PUB"
    # Derived statistics are new data: they carry no signature.
    assert loaded.renamed("arithmetic").signature is None
    assert (loaded + stats).signature is None


def test_unsigned_untrusted_and_tampered_files_are_refused(emb: Embedder, keys,
                                                          tmp_path: Path) -> None:
    trusted = load_trusted(keys["trusted"])
    base = compute_stats(emb, CORPORA["law"], domain="law")
    base.save(tmp_path / "unsigned.stats")
    with pytest.raises(IR3DEError, match=r"unsigned.stats: not signed"):
        verify(DomainStats.load(tmp_path / "unsigned.stats"), trusted)
    sign(base, keys["mallory"]).save(tmp_path / "mallory.stats")
    with pytest.raises(IR3DEError, match=r"mallory.stats: signed by a key that is not trusted"):
        verify(DomainStats.load(tmp_path / "mallory.stats"), trusted)
    # Tamper: inflate the counts consistently (A, b and n_tokens x 100) and keep the
    # signature: the file still parses but no longer matches what was signed.
    sign(base, keys["bob"]).save(tmp_path / "law.stats")
    tensors, meta = read_safetensors(tmp_path / "law.stats")
    meta["n_tokens"] *= 100
    meta["n_prompts"] *= 100
    write_safetensors(tmp_path / "law.stats",
                      {k: v if k == "pair_keys" else v * 100 for k, v in tensors.items()}, meta)
    with pytest.raises(IR3DEError, match=r"law.stats: signature does not match"):
        verify(DomainStats.load(tmp_path / "law.stats"), trusted)


def test_verify_says_what_it_expects(emb: Embedder, keys) -> None:
    """A folder where load_trusted's keys belong, or a path where statistics belong."""
    stats = sign(compute_stats(emb, CORPORA["math"], domain="math"), keys["alice"])
    with pytest.raises(IR3DEError, match=r"verify: trusted must be the keys "
                                         r"load_trusted\(folder\) returns, not str 'keys/'"):
        verify(stats, "keys/")
    with pytest.raises(IR3DEError, match=r"verify: stats must be DomainStats "
                                         r"\(DomainStats\.load\(path\)\), not str"):
        verify("math.stats", load_trusted(keys["trusted"]))
    with pytest.raises(IR3DEError, match=r"sign: stats must be DomainStats"):
        sign("math.stats", keys["alice"])


def test_cli_keygen_sign_and_build_with_trust(keys, tmp_path: Path, capsys) -> None:
    corpora = {}
    for domain in ("math", "coding"):
        corpora[domain] = tmp_path / f"{domain}.txt"
        corpora[domain].write_text("\n".join(CORPORA[domain]))
    assert main(["keygen", "-o", str(tmp_path / "cli.key")]) == 0
    (tmp_path / "cli.pub").rename(keys["trusted"] / "cli.pub")
    files = []
    for domain, path in corpora.items():
        files.append(tmp_path / f"{domain}.stats")
        assert main(["stats", str(path), "--domain", domain, "-o", str(files[-1]), "-q",
                     "--sign", str(tmp_path / "cli.key")]) == 0
    out = tmp_path / "router.safetensors"
    assert main(["build", *map(str, files), "--trust", str(keys["trusted"]), "-o",
                 str(out)]) == 0
    assert Router.load(out).experts == ["math", "coding"]
    capsys.readouterr()
    # One unsigned file in the set: refused, named, and no router written.
    assert main(["stats", str(corpora["math"]), "--domain", "extra", "-o",
                 str(tmp_path / "extra.stats"), "-q"]) == 0
    out2 = tmp_path / "router2.safetensors"
    code = main(["build", *map(str, files), str(tmp_path / "extra.stats"), "--trust",
                 str(keys["trusted"]), "-o", str(out2)])
    assert code == 1 and "extra.stats: not signed" in capsys.readouterr().err
    assert not out2.exists()
    # A key file that is not a key fails before the corpus is read.
    (tmp_path / "bad.key").write_text("nope")
    assert main(["stats", str(corpora["math"]), "--domain", "m", "-o",
                 str(tmp_path / "m.stats"), "-q", "--sign", str(tmp_path / "bad.key")]) == 1
    assert "bad.key: not a PEM private key" in capsys.readouterr().err
    assert not (tmp_path / "m.stats").exists()


def test_balancing_stops_an_inflated_domain_from_taking_over(emb: Embedder,
                                                             data_dir: Path) -> None:
    """Poisoning guard: a party shipping 100x inflated (but self-consistent) statistics."""
    from ir3de.data import read_jsonl

    fit, test = {}, {}
    for domain, rel in (("math", "reasoning/gsm8k"), ("multilingual", "reasoning/m_arc"),
                        ("coding", "reasoning/mbpp")):
        fit[domain] = [r["text"] for r in read_jsonl(data_dir / f"{rel}/train.jsonl")][:300]
        test[domain] = [r["text"] for r in read_jsonl(data_dir / f"{rel}/test.jsonl")][:100]
    stats = {d: compute_stats(emb, t, domain=d) for d, t in fit.items()}
    honest = stats["coding"]
    stats["coding"] = DomainStats(domain="coding", A=None, b=honest.b * 100,
                                  n_tokens=honest.n_tokens * 100,
                                  n_prompts=honest.n_prompts * 100,
                                  fingerprint=honest.fingerprint, embedder=honest.embedder,
                                  counts=honest.counts * 100,
                                  doc_counts=honest.doc_counts * 100,
                                  pairs=PairCounts(honest.pairs.keys, honest.pairs.counts * 100))

    def share_to_coding(router: Router) -> dict[str, float]:
        return {d: float(np.mean([p == "coding" for p in router.predict(t)]))
                for d, t in test.items() if d != "coding"}

    dense = {"model": "ridge", "selector": "all", "identity": None}
    unbalanced = share_to_coding(Router(emb, balance=False, **dense).fit_stats(stats))
    balanced = share_to_coding(Router(emb, balance=True, **dense).fit_stats(stats))
    default = share_to_coding(Router(emb).fit_stats(stats))
    # Unbalanced, the inflated domain swallows the math prompts (other scripts resist);
    # balanced, it weighs what every domain weighs and takes (almost) nothing.
    assert unbalanced["math"] > 0.9, unbalanced
    assert max(balanced.values()) < 0.05, balanced
    assert max(default.values()) < 0.05, default  # the default (nb) weighs domains equally
    identity = share_to_coding(Router(emb, RouterConfig.preset("identity")).fit_stats(stats))
    assert max(identity.values()) < 0.05, identity


def test_malformed_signatures_are_named_as_such(emb: Embedder, keys) -> None:
    """A signature that is not hex used to read as "the file was changed after it was
    signed"."""
    trusted = load_trusted(keys["trusted"])
    signed = sign(compute_stats(emb, CORPORA["math"], domain="math"), keys["alice"])
    for field, bad, digits in (("signature", "zz" * 64, 128), ("signature", "ab" * 63, 128),
                               ("signature", "ab " * 42 + "ab", 128), ("signature", 5, 128),
                               ("public_key", "g" * 64, 64), ("public_key", None, 64)):
        forged = dataclasses.replace(signed, signature={**signed.signature, field: bad},
                                     source="forged.stats")
        with pytest.raises(IR3DEError, match=rf"^forged\.stats: malformed signature metadata: "
                                             rf"'{field}' must be {digits} hexadecimal "
                                             r"digits$"):
            verify(forged, trusted)
    with pytest.raises(IR3DEError, match=r"^forged\.stats: malformed signature metadata "
                                         r"\(expected an object with alg 'ed25519'\)$"):
        verify(dataclasses.replace(signed, signature="abc", source="forged.stats"), trusted)
    assert verify(signed, trusted) == "alice.pub"
    # hex digits in either case, the public key's as the signature's
    upper = {**signed.signature, "public_key": signed.signature["public_key"].upper()}
    assert verify(dataclasses.replace(signed, signature=upper), trusted) == "alice.pub"


def test_trusted_keys_must_be_a_folder(keys, monkeypatch: pytest.MonkeyPatch) -> None:
    pub = keys["trusted"] / "alice.pub"
    with pytest.raises(IR3DEError, match=rf"^{pub}: a file, not a folder of trusted keys"):
        load_trusted(pub)
    with pytest.raises(IR3DEError, match=r": no such folder of trusted keys"):
        load_trusted(keys["trusted"] / "missing")
    # An unreadable folder used to read as one without keys ("no *.pub trusted keys")
    folder = keys["trusted"]
    folder.chmod(0)
    try:
        if os.access(folder, os.R_OK):  # root reads it anyway: fail the listing as for a user
            def denied(self: Path) -> None:
                raise PermissionError(13, "Permission denied", str(self))

            monkeypatch.setattr(Path, "iterdir", denied)
        with pytest.raises(IR3DEError, match=rf"^{folder}: cannot list this folder of trusted "
                                             r"keys \(Permission denied\)$"):
            load_trusted(folder)
    finally:
        folder.chmod(0o755)


def test_keys_that_are_not_key_files_or_of_other_types(emb: Embedder, keys,
                                                       tmp_path: Path) -> None:
    stats = compute_stats(emb, CORPORA["math"], domain="math")
    # a folder given as the key used to be "no such key file"
    with pytest.raises(IR3DEError, match=rf"^{tmp_path}: is a directory$"):
        sign(stats, tmp_path)
    # key types cryptography does not support escaped as UnsupportedAlgorithm tracebacks
    supported = r"; ir3de signs with Ed25519 keys only \(ir3de keygen makes them\)$"
    for name, pem in (("sm2.key", SM2_PRIVATE), ("brainpool.key", BRAINPOOL_PRIVATE)):
        (tmp_path / name).write_text(pem)
        with pytest.raises(IR3DEError, match=rf"^{tmp_path / name}: unsupported key type "
                                             rf"\(.*\){supported}"):
            load_private_key(tmp_path / name)
    if hasattr(os, "mkfifo"):  # its read blocked build --trust for ever
        os.mkfifo(tmp_path / "junk.pub")
        (tmp_path / "alice.pub").write_bytes((keys["trusted"] / "alice.pub").read_bytes())
        with pytest.raises(IR3DEError, match=rf"^{tmp_path / 'junk.pub'}: not a regular "
                                             r"file$"):
            load_trusted(tmp_path)
    (keys["trusted"] / "brainpool.pub").write_text(BRAINPOOL_PUBLIC)
    with pytest.raises(IR3DEError, match=rf"^{keys['trusted'] / 'brainpool.pub'}: unsupported "
                                         rf"key type \(.*\){supported}"):
        load_trusted(keys["trusted"])


def test_derived_statistics_say_their_signature_was_dropped(emb: Embedder, keys,
                                                            tmp_path: Path) -> None:
    """A renamed signed file used to be reported as "not signed", as if never signed."""
    trusted = load_trusted(keys["trusted"])
    sign(compute_stats(emb, CORPORA["math"], domain="math"), keys["alice"]).save(
        tmp_path / "math.stats")
    loaded = DomainStats.load(tmp_path / "math.stats")
    other = compute_stats(emb, ["What is 2 + 2?"], domain="math")
    for derived, why in ((loaded.renamed("x"), "it was renamed from 'math' to 'x'"),
                         (loaded + other, r"it was combined \(\+, -, sum or merge\) from "
                                          "signed statistics"),
                         (merge([loaded], drop_pairs=True)["math"],
                          r"its token-pair counts were dropped \(merge with drop_pairs=True\)")):
        with pytest.raises(IR3DEError, match=rf"^{re.escape(derived.source)}: not signed any "
                                             rf"more: the signature was dropped when {why}"):
            verify(derived, trusted)
    assert verify(loaded, trusted) == "alice.pub"
    # A saved file does not record why it has no signature: the message says how a merged
    # or renamed file gets one (it said only "sign it with ir3de stats --sign KEY")
    merge([loaded, other])["math"].save(tmp_path / "merged.stats")
    with pytest.raises(IR3DEError) as info:
        verify(DomainStats.load(tmp_path / "merged.stats"), trusted)
    assert str(info.value) == (f"{tmp_path / 'merged.stats'}: not signed (sign it with ir3de "
                               "stats --sign KEY, or a merged file with ir3de merge --sign "
                               "KEY: merging or renaming signed statistics drops their "
                               "signature)")


def test_routers_keep_their_experts_signatures(emb: Embedder, keys, tmp_path: Path,
                                               capsys) -> None:
    """A saved router dropped its experts' signatures, so a router could not be checked
    once built (by the gateway's `trust`, or `inspect --trust`). It keeps them now, with
    the recipe they were signed with where it is not the router's own."""
    trusted = load_trusted(keys["trusted"])
    math = sign(compute_stats(emb, CORPORA["math"], domain="math"), keys["alice"])
    # same embedding (fingerprint), another recipe: the signature covers the recipe
    other = dataclasses.replace(compute_stats(emb, CORPORA["coding"], domain="coding"),
                                embedder={**emb.spec, "note": "bob's copy"})
    coding = sign(other, keys["bob"])
    law = compute_stats(emb, CORPORA["law"], domain="law")
    path = tmp_path / "r.safetensors"
    Router(emb).fit_stats([math, coding]).save(path)
    loaded = Router.load(path)
    assert [verify(loaded.stats[n], trusted) for n in ("math", "coding")] == \
        ["alice.pub", "bob.pub"]
    loaded.add_expert("law", law).save(path)  # add and remove keep the others' signatures
    loaded = Router.load(path)
    with pytest.raises(IR3DEError, match=rf"^{re.escape(str(path))}:law: not signed"):
        verify(loaded.stats["law"], trusted)
    loaded.remove_expert("law")
    loaded.save(path)
    assert verify(Router.load(path).stats["coding"], trusted) == "bob.pub"

    assert main(["inspect", str(path), "--trust", str(keys["trusted"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].split()[0] == "math" and lines[-2].endswith("signed by alice.pub")
    assert lines[-1].split()[0] == "coding" and lines[-1].endswith("signed by bob.pub")
    assert main(["inspect", str(path)]) == 0  # without --trust: the key's first digits
    key = coding.signature["public_key"]
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"signed, key {key[:16]}…")
    # A number changed in the router file: that expert no longer verifies.
    tensors, meta = read_safetensors(path)
    assert "A" not in tensors  # formed from the counts, which the signature covers too
    tensors["b"] = tensors["b"].copy()
    tensors["b"][1, 0] += 1.0
    write_safetensors(path, tensors, meta)
    with pytest.raises(IR3DEError, match=r":coding: signature does not match its contents"):
        verify(Router.load(path).stats["coding"], trusted)
    assert main(["inspect", str(path), "--trust", str(keys["trusted"])]) == 1
    out, err = capsys.readouterr()
    assert out == "" and f"{path}:coding: signature does not match its contents" in err
    # A statistics file: its signature line.
    math.save(tmp_path / "math.stats")
    assert main(["inspect", str(tmp_path / "math.stats"), "--trust",
                 str(keys["trusted"])]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split() == \
        ["signature", "signed", "by", "alice.pub"]
    meta["experts"][0]["signature"] = "alice"
    write_safetensors(path, tensors, meta)
    with pytest.raises(IR3DEError, match=r"'experts\[0\]\.signature' must be an object"):
        Router.load(path)
