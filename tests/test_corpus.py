"""samoyeds_lab.corpus: the shipped three-domain corpus, its deterministic held-out split, the build recipe."""

from __future__ import annotations

import gzip
import hashlib

import pytest

from samoyeds_lab.corpus import (
    DOMAINS,
    RECORD_SEP,
    _is_heldout,
    build_corpus,
    corpus_dir,
    load_corpus,
    load_documents,
)
from samoyeds_lab.errors import CorruptFileError

# Recorded in data/corpus/README.md: the shipped text must be exactly what the recipe built.
SHIPPED_SHA256 = {
    "en": "c26df99011947f72358e85fb812cf61f6bab585dbe90e4c390e654de272aacdf",
    "de": "c974c1edc2805dd1603167572446615b4388a4fa27a00cc934071377948a9cb4",
    "code": "792b4b7d3910db04f01c7795320a3577d9c5fdb42c36e986859e5cd88981f508",
}


@pytest.mark.parametrize("domain", DOMAINS)
def test_shipped_file_matches_recorded_hash_and_decodes(domain):
    raw = gzip.decompress((corpus_dir() / f"{domain}.txt.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == SHIPPED_SHA256[domain]
    raw.decode("utf-8")
    assert 900_000 <= len(raw) <= 1_010_000


def test_split_is_deterministic_disjoint_and_about_five_percent():
    a_train, a_held = load_corpus("train"), load_corpus("heldout")
    b_train, b_held = load_corpus("train"), load_corpus("heldout")
    assert a_train == b_train and a_held == b_held
    assert list(a_train) == list(DOMAINS)
    for d in DOMAINS:
        docs = load_documents(d)
        sides = [_is_heldout(doc) for doc in docs]
        # each split is exactly its documents, in order: every document is on one side only
        assert b"\n\n".join(doc for doc, h in zip(docs, sides) if h) == a_held[d]
        assert b"\n\n".join(doc for doc, h in zip(docs, sides) if not h) == a_train[d]
        held_docs = {doc for doc, h in zip(docs, sides) if h}
        train_docs = {doc for doc, h in zip(docs, sides) if not h}
        assert held_docs and train_docs and not (held_docs & train_docs)
        frac = len(held_docs) / len(docs)
        assert 0.02 <= frac <= 0.09, (d, frac)


def test_domains_differ_in_their_bytes():
    held = load_corpus("heldout")
    assert sum(held["de"].count(c.encode()) for c in "äöüß") > 100
    assert sum(held["en"].count(c.encode()) for c in "äöüß") < 10
    assert held["code"].count(b"def ") > 20 and held["en"].count(b"def ") < 10


def test_domain_subset_and_order():
    out = load_corpus("heldout", ["code", "en"])
    assert list(out) == ["code", "en"]
    assert load_corpus("heldout", "de").keys() == {"de"}


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"split": "test"}, ValueError, ["split", "'test'"]),
        ({"domains": ["fr"]}, ValueError, ["domains", "'fr'"]),
        ({"domains": []}, ValueError, ["domains", "empty"]),
        ({"domains": 3}, TypeError, ["domains", "int"]),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, words):
    with pytest.raises(exc) as ei:
        load_corpus(**kwargs)
    for w in words:
        assert w in str(ei.value)


def test_missing_and_corrupt_files_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="en.txt.gz"):
        load_corpus("train", ["en"], root=tmp_path)
    (tmp_path / "en.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(CorruptFileError, match="en.txt.gz"):
        load_corpus("train", ["en"], root=tmp_path)
    (tmp_path / "de.txt.gz").write_bytes(gzip.compress(b"\xff\xfe bad utf-8"))
    with pytest.raises(CorruptFileError, match="de.txt.gz"):
        load_documents("de", root=tmp_path)
    (tmp_path / "code.txt.gz").write_bytes(gzip.compress(RECORD_SEP * 3))
    with pytest.raises(CorruptFileError, match="no"):
        load_documents("code", root=tmp_path)
    # the environment variable points the loader elsewhere
    monkeypatch.setenv("SAMOYEDS_LAB_CORPUS", str(tmp_path))
    assert corpus_dir() == tmp_path


def _fake_sources(root):
    en, de, std = root / "en", root / "de", root / "std"
    for d in (en, de, std, std / "json"):
        d.mkdir(parents=True)
    (en / "wisdom").write_text("\n%\n".join(f"Wise saying number {i}." for i in range(200)) + "\n%\n")
    (en / "science").write_text("Energy is conserved.\n%\nEntropy grows.\n")
    (de / "zitate").write_text("\n%\n".join(f"Spruch Nummer {i}: Grüße aus Köln." for i in range(150)) + "\n")
    (de / "asciiart").write_text("  /\\_/\\ \n ( o.o )\n")
    (std / "alpha.py").write_text("def alpha():\n    return 1\n")
    (std / "json" / "beta.py").write_text("class Beta:\n    pass\n")
    return en, de, std


def test_build_is_deterministic_and_round_trips(tmp_path):
    en, de, std = _fake_sources(tmp_path / "src")
    s1 = build_corpus(tmp_path / "o1", fortunes_en=en, fortunes_de=de, stdlib=std, cap=3000)
    s2 = build_corpus(tmp_path / "o2", fortunes_en=en, fortunes_de=de, stdlib=std, cap=3000)
    assert s1 == s2
    for d in DOMAINS:
        assert (tmp_path / "o1" / f"{d}.txt.gz").read_bytes() == (tmp_path / "o2" / f"{d}.txt.gz").read_bytes()
    assert s1["en"]["bytes"] <= 3000 + s1["en"]["documents"]
    docs = load_documents("de", root=tmp_path / "o1")
    assert all("Spruch" in d.decode() for d in docs)  # the ASCII-art file is left out
    code = load_documents("code", root=tmp_path / "o1")
    assert sorted(d.split(b"\n")[0] for d in code) == [b"# file: alpha.py", b"# file: json/beta.py"]
    with pytest.raises(FileNotFoundError, match="fortunes_en"):
        build_corpus(tmp_path / "o3", fortunes_en=tmp_path / "nope", fortunes_de=de, stdlib=std)
