"""The demo model's text: training documents per domain and the held-out text, read from Debian 12 packages.

Every source is a file that a Debian package installs (setup.sh installs the two that a plain system lacks); the
README next to this file lists them with their licences. Documents are raw bytes, since the model is byte-level.
"""
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

FORTUNES = Path("/usr/share/games/fortunes")
COMMON_LICENSES = Path("/usr/share/common-licenses")
PYTHON_DOC_SOURCES = "/usr/share/doc/python3.11/html/_sources/"
PYTHON_LICENSE_DOC = PYTHON_DOC_SOURCES + "license.rst.txt"

# Packages of priority "required" (on every Debian 12 system) and the ones setup.sh installs: their
# machine-readable copyright files are licence text too.
COPYRIGHT_PACKAGES = [
    "apt", "base-files", "bash", "coreutils", "debianutils", "diffutils", "dpkg", "e2fsprogs", "findutils",
    "fortunes", "gpgv", "grep", "gzip", "hostname", "init-system-helpers", "libc6", "libgcc-s1",
    "libpython3.11-stdlib", "libsystemd0", "login", "mawk", "ncurses-base", "perl-base", "python3.11-doc", "sed",
    "tar", "util-linux", "zlib1g",
]

# Held-out text: never trained on, by the base or any adapter (see without_overlap for near copies).
HELD_OUT_CODE = Path("/usr/lib/python3.11/colorsys.py")
HELD_OUT_LICENSE = COMMON_LICENSES / "Apache-2.0"
HELD_OUT_BYTES = 3000
# Every 12th poem (from the 6th) of fortunes' songs-poems is held out.
HELD_OUT_POEM_EVERY, HELD_OUT_POEM_FIRST = 12, 5
# Lines this long that a training document shares with the held-out text mark it as a copy of held-out text.
OVERLAP_LINE_CHARS = 40


@dataclass
class Document:
    source: str
    text: bytes


@dataclass
class Corpus:
    """Training documents by domain (`docs`, `code`, `legal`, `verse`, `quotes`) and held-out text by adapter domain."""
    train: dict
    held_out: dict


def package_files(package):
    out = subprocess.run(["dpkg-query", "-L", package], check=True, capture_output=True, text=True).stdout
    return sorted(Path(line) for line in out.splitlines() if Path(line).is_file())


def fortune_entries(name):
    """A fortune file's entries; the files mark emphasis with overstrikes (`_\\bx`), dropped here."""
    text = re.sub(rb".\x08", b"", (FORTUNES / name).read_bytes())
    return [e for e in text.split(b"\n%\n") if e.strip(b"%\n")]


def join_fortunes(entries):
    """The fortune file format: entries separated by a line holding `%`."""
    return b"\n%\n".join(e.rstrip(b"\n") for e in entries) + b"\n%\n"


def prefix_at_paragraph(text, limit):
    cut = text.rfind(b"\n\n", 0, limit)
    return text[:cut + 1]


def long_lines(text):
    return {line.strip() for line in text.split(b"\n") if len(line.strip()) >= OVERLAP_LINE_CHARS}


def without_overlap(docs, held_out_lines):
    """Drops documents that share a long line with the held-out text (licences quoted inside copyright files,
    a poem that two fortune files both hold)."""
    return [d for d in docs if not long_lines(d.text) & held_out_lines]


def code_documents():
    files = [p for pkg in ("libpython3.11-minimal", "libpython3.11-stdlib") for p in package_files(pkg)]
    skip = ("/test/", "/tests/", "/idle_test/", "/encodings/", "/pydoc_data/")
    return [Document(str(p), p.read_bytes()) for p in sorted(set(files))
            if p.suffix == ".py" and not any(s in str(p) for s in skip) and p != HELD_OUT_CODE]


def docs_documents():
    skip = (PYTHON_LICENSE_DOC, PYTHON_DOC_SOURCES + "whatsnew/changelog.rst.txt")
    return [Document(str(p), p.read_bytes()) for p in package_files("python3.11-doc")
            if str(p).startswith(PYTHON_DOC_SOURCES) and str(p).endswith(".txt") and str(p) not in skip]


def legal_documents():
    paths = [p for p in sorted(COMMON_LICENSES.iterdir()) if p != HELD_OUT_LICENSE]
    paths += [Path(PYTHON_LICENSE_DOC)] + [Path("/usr/share/doc") / pkg / "copyright" for pkg in COPYRIGHT_PACKAGES]
    docs, seen = [], set()
    for p in paths:
        text = p.read_bytes()
        if text not in seen:  # common-licenses has symlinks (GPL -> GPL-3); packages of one source share a file
            seen.add(text)
            docs.append(Document(str(p), text))
    return docs


def fortune_documents(names, keep=lambda i: True):
    return [Document(str(FORTUNES / n), join_fortunes([e for i, e in enumerate(fortune_entries(n)) if keep(i)]))
            for n in names]


def load_corpus():
    poems = fortune_entries("songs-poems")
    held_poems = [e for i, e in enumerate(poems) if i % HELD_OUT_POEM_EVERY == HELD_OUT_POEM_FIRST]
    verse_held_out = b""
    for e in held_poems:
        if len(verse_held_out) >= HELD_OUT_BYTES:
            break
        verse_held_out += join_fortunes([e])
    held_out = {
        "code": HELD_OUT_CODE.read_bytes(),
        "legal": prefix_at_paragraph(HELD_OUT_LICENSE.read_bytes(), HELD_OUT_BYTES),
        "verse": verse_held_out,
    }
    lines = set().union(*(long_lines(t) for t in held_out.values()))
    other_fortunes = sorted(p.name for p in FORTUNES.iterdir()
                            if p.is_file() and "." not in p.name and p.name != "songs-poems")
    train = {
        "docs": docs_documents(),
        "code": code_documents(),
        "legal": legal_documents(),
        # songs-poems without its held-out poems (all of them, not only those in the committed file).
        "verse": fortune_documents(["songs-poems"], lambda i: i % HELD_OUT_POEM_EVERY != HELD_OUT_POEM_FIRST),
        "quotes": [],
    }
    # Fortune files repeat one another's entries, so they are filtered entry by entry.
    for name in other_fortunes:
        entries = [e for e in fortune_entries(name) if not long_lines(e) & lines]
        train["quotes"].append(Document(str(FORTUNES / name), join_fortunes(entries)))
    train = {domain: without_overlap(docs, lines) for domain, docs in train.items()}
    return Corpus(train=train, held_out=held_out)


if __name__ == "__main__":
    corpus = load_corpus()
    for domain, docs in corpus.train.items():
        print(f"{domain:7} {len(docs):5} documents {sum(len(d.text) for d in docs):10} bytes")
    for domain, text in corpus.held_out.items():
        print(f"held-out {domain:6} {len(text):5} bytes")
