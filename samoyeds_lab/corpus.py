"""A small, real, multi-domain text corpus for training the lab's tiny MoE — no model or data hub needed.

Why this corpus
---------------
The lab's machines reach only package registries (PyPI, Debian, npm), never a model or data hub, so
the tiny MoE (:mod:`samoyeds_lab.moe.train`) is trained on text that comes from a registry and is
shipped, small and compressed, in ``data/corpus/``. Three domains are mixed so that data-aware routing
(SiDA) has something to see — bytes of German prose, English prose and Python code look different to a
byte-level router:

============  ======================================================================  ==================
domain        source                                                                  license
============  ======================================================================  ==================
``"en"``      Debian package ``fortunes`` 1:1.99.1-7.3 (bookworm): the fortune-mod     BSD-style (Regents
              quotation files (``/usr/share/games/fortunes/*``: science, wisdom,       of the University
              songs-poems, people, computers, …; ASCII-art files left out)             of California)
``"de"``      Debian package ``fortunes-de`` 0.35-1 (bookworm): German quotations,      GPL-2+
              proverbs, poems, jokes (``/usr/share/games/fortunes/de/*``)
``"code"``    CPython 3.11.7 standard library ``*.py`` modules (top level and          PSF-2.0
              selected packages; tests, idlelib, lib2to3 left out)
============  ======================================================================  ==================

Why these and not others: Debian's ``fortunes`` packages are plain UTF-8 prose installable with
``apt-get`` by name (the KJV Bible package stores its text in a binary format; PyPI "corpus" packages
download from hubs at run time); the German set gives a second *language* with its own bytes (ä, ö, ü,
ß); the standard library is real, well-written code. Each domain is capped at about 1 MB of raw text
so the shipped ``.txt.gz`` files stay under 1.2 MB in total, and ``make test`` on a fresh machine needs
no ``apt-get`` at all: the files are in the repository. :func:`build_corpus` is the exact, deterministic
recipe that made them (run ``python -m samoyeds_lab.corpus build`` on a machine where the two Debian
packages are unpacked, see ``data/corpus/README.md``).

Documents and the held-out split
--------------------------------
A *document* is one fortune (the text between ``%`` lines) or one Python source file. Inside a shipped
file documents are separated by the ASCII record separator byte ``0x1E`` (it occurs in none of them).
A document belongs to the held-out split iff

.. math::  \\operatorname{int}(\\mathrm{sha1}(\\text{document})[:8]) \\bmod 20 = 0,

about 5 % of the documents. The split depends on the document's content only, so it is deterministic,
disjoint (identical duplicates fall on the same side), and stable if documents are re-ordered.
:func:`load_corpus` joins a split's documents with a blank line (``b"\\n\\n"``) between them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

from .errors import CorruptFileError

__all__ = ["DOMAINS", "SPLITS", "RECORD_SEP", "corpus_dir", "load_documents", "load_corpus", "build_corpus"]

DOMAINS: tuple[str, ...] = ("en", "de", "code")
SPLITS: tuple[str, ...] = ("train", "heldout")
RECORD_SEP = b"\x1e"
HELDOUT_MODULUS = 20  # one document in 20 (by content hash) is held out

# English fortune files used (ASCII-art and a few topical files that are mostly jokes about groups of
# people are left out: a teaching corpus need not carry them).
_EN_FILES = (
    "computers", "cookie", "debian", "definitions", "disclaimer", "education", "food", "goedel",
    "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie", "love", "magic", "medicine",
    "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes", "pratchett",
    "science", "songs-poems", "sports", "startrek", "tao", "translate-me", "wisdom", "work", "zippy",
)
_DE_EXCLUDE = ("asciiart",)
_CODE_PACKAGES = (
    "", "asyncio", "collections", "concurrent/futures", "email", "html", "http", "importlib",
    "json", "logging", "multiprocessing", "sqlite3", "unittest", "urllib", "xml/dom", "xml/etree",
    "ctypes", "curses", "dbm", "re", "tomllib", "venv", "wsgiref", "xmlrpc", "zoneinfo", "xml/sax",
)
_CODE_MAX_FILE = 24_000  # bytes; larger modules are left out so no single file dominates
_DOMAIN_CAP = 1_000_000  # raw bytes per domain in the shipped file


def corpus_dir() -> Path:
    """Directory holding the shipped corpus files (``<repo>/data/corpus``).

    ``SAMOYEDS_LAB_CORPUS`` in the environment overrides it (used by tests and by users who rebuilt
    the corpus elsewhere).
    """
    env = os.environ.get("SAMOYEDS_LAB_CORPUS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "data" / "corpus"


def _check_domains(domains: object) -> tuple[str, ...]:
    if isinstance(domains, str):
        domains = (domains,)
    if not isinstance(domains, (tuple, list)):
        raise TypeError(f"domains: expected a sequence of domain names from {DOMAINS}, got {type(domains).__name__}")
    out = []
    for d in domains:
        if d not in DOMAINS:
            raise ValueError(f"domains: expected names from {DOMAINS}, got {d!r}")
        if d not in out:
            out.append(d)
    if not out:
        raise ValueError(f"domains: expected at least one domain from {DOMAINS}, got an empty sequence")
    return tuple(out)


def _is_heldout(doc: bytes) -> bool:
    return int(hashlib.sha1(doc).hexdigest()[:8], 16) % HELDOUT_MODULUS == 0


def load_documents(domain: str, *, root: str | os.PathLike | None = None) -> list[bytes]:
    """All documents of one domain, in the shipped order.

    Parameters
    ----------
    domain : str
        One of :data:`DOMAINS`.
    root : path, optional
        Directory with ``<domain>.txt.gz``; default :func:`corpus_dir`.

    Raises
    ------
    FileNotFoundError
        When the domain's file is missing (the message names it).
    CorruptFileError
        When the file is not gzip or not UTF-8, or holds no document.
    """
    (domain,) = _check_domains((domain,))
    path = Path(root) if root is not None else corpus_dir()
    path = path / f"{domain}.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} not found (domain {domain!r}); see samoyeds_lab.corpus")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"corpus file {path}: expected gzip-compressed UTF-8 text, got {e}") from None
    docs = [d for d in raw.split(RECORD_SEP) if d.strip()]
    if not docs:
        raise CorruptFileError(f"corpus file {path}: expected documents separated by 0x1E, got none")
    return docs


def load_corpus(
    split: str = "train",
    domains: Sequence[str] | str = DOMAINS,
    *,
    root: str | os.PathLike | None = None,
) -> dict[str, bytes]:
    """The corpus split as one byte string per domain.

    Parameters
    ----------
    split : {"train", "heldout"}
        ``"heldout"`` is the ~5 % of documents whose content hash is 0 modulo 20 (see the module
        docstring); ``"train"`` is the rest. The two are disjoint and deterministic.
    domains : sequence of str
        Any of :data:`DOMAINS` (``"en"``, ``"de"``, ``"code"``), in the order wanted.
    root : path, optional
        Directory with the ``<domain>.txt.gz`` files; default :func:`corpus_dir`.

    Returns
    -------
    dict[str, bytes]
        ``{domain: b"\\n\\n".join(documents of the split)}``, UTF-8 bytes, in the order of ``domains``.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    doms = _check_domains(domains)
    want_heldout = split == "heldout"
    out: dict[str, bytes] = {}
    for d in doms:
        docs = [doc for doc in load_documents(d, root=root) if _is_heldout(doc) == want_heldout]
        out[d] = b"\n\n".join(docs)
    return out


# ----------------------------------------------------------------------------------------------------
# The recipe that built data/corpus (run once; not needed at run time)
# ----------------------------------------------------------------------------------------------------
def _fortune_docs(files: Iterable[Path]) -> list[bytes]:
    docs = []
    for p in files:
        text = p.read_bytes()
        text.decode("utf-8")  # refuse anything that is not UTF-8
        for doc in text.split(b"\n%\n"):
            doc = doc.strip(b"\n%").rstrip()
            if doc.strip():
                docs.append(doc + b"\n")
    return docs


def _cap(docs: list[bytes], cap: int) -> list[bytes]:
    """Deterministic, diverse subset: order by content hash, keep documents until ``cap`` bytes."""
    uniq = sorted(set(docs), key=lambda d: hashlib.sha1(d).hexdigest())
    out, total = [], 0
    for d in uniq:
        if RECORD_SEP in d:
            continue
        if total + len(d) > cap:
            continue
        out.append(d)
        total += len(d)
    return out


def build_corpus(
    out_dir: str | os.PathLike,
    *,
    fortunes_en: str | os.PathLike = "/usr/share/games/fortunes",
    fortunes_de: str | os.PathLike = "/usr/share/games/fortunes/de",
    stdlib: str | os.PathLike | None = None,
    cap: int = _DOMAIN_CAP,
) -> dict[str, dict]:
    """Write ``<out_dir>/{en,de,code}.txt.gz`` from the Debian fortune files and the Python stdlib.

    Deterministic for the same inputs (gzip header time set to 0). Returns per-domain statistics
    (documents, bytes, sha256 of the uncompressed file) that ``data/corpus/README.md`` records.
    """
    import sysconfig

    en_dir, de_dir = Path(fortunes_en), Path(fortunes_de)
    std = Path(stdlib) if stdlib is not None else Path(sysconfig.get_paths()["stdlib"])
    for name, p in (("fortunes_en", en_dir), ("fortunes_de", de_dir), ("stdlib", std)):
        if not p.is_dir():
            raise FileNotFoundError(f"{name}: directory {p} not found")
    en_files = [en_dir / f for f in _EN_FILES if (en_dir / f).is_file()]
    de_files = sorted(
        p for p in de_dir.iterdir() if p.is_file() and not p.is_symlink() and p.suffix == "" and p.name not in _DE_EXCLUDE
    )
    code_docs = []
    for pkg in _CODE_PACKAGES:
        d = std / pkg
        for p in sorted(d.glob("*.py")):
            b = p.read_bytes()
            if 0 < len(b) <= _CODE_MAX_FILE:
                b.decode("utf-8")
                rel = p.relative_to(std).as_posix()
                code_docs.append(f"# file: {rel}\n".encode() + b)
    stats = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for dom, docs in (("en", _fortune_docs(en_files)), ("de", _fortune_docs(de_files)), ("code", code_docs)):
        kept = _cap(docs, cap)
        raw = RECORD_SEP.join(kept)
        with open(out / f"{dom}.txt.gz", "wb") as f:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as g:
                g.write(raw)
        n_held = sum(_is_heldout(d) for d in kept)
        stats[dom] = {
            "documents": len(kept),
            "heldout_documents": n_held,
            "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
    return stats


if __name__ == "__main__":  # pragma: no cover - the one-off build recipe
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m samoyeds_lab.corpus")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="rebuild data/corpus from unpacked Debian fortunes packages + the stdlib")
    b.add_argument("--out", default=str(corpus_dir()))
    b.add_argument("--fortunes-en", default="/usr/share/games/fortunes")
    b.add_argument("--fortunes-de", default="/usr/share/games/fortunes/de")
    b.add_argument("--stdlib", default=None)
    a = ap.parse_args()
    st = build_corpus(a.out, fortunes_en=a.fortunes_en, fortunes_de=a.fortunes_de, stdlib=a.stdlib)
    json.dump(st, sys.stdout, indent=2)
    print()
