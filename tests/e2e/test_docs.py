"""The repository's documentation is self-contained.

Two checks over the files a clone holds:

- no text file points at the design notes that were kept outside the repository (their names and
  the folder that held them are forbidden): every reference must name a document under ``docs/``;
- every relative Markdown link in ``README.md`` and ``docs/*.md`` resolves to a file of the
  repository (for ``path#anchor`` only the file part is checked).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Built from parts, so that this file does not contain what it forbids.
FORBIDDEN = (
    "METHOD" + ".md",
    "PROTOCOL" + ".md",
    "TOOLING" + ".md",
    ".." + "/shared",
    "shared" + "/reference",
    "/work" + "/shared",
)

# Folders that hold tracked source, and the suffixes scanned in them.
SOURCE_DIRS = ("packages", "apps", "tests", "benchmarks")
SUFFIXES = {".py", ".toml", ".md"}
# Never tracked: environments, caches and build outputs (see .gitignore).
SKIP_DIRS = {".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", "dist", "node_modules"}


def _skipped(path: Path) -> bool:
    return any(part in SKIP_DIRS or part.startswith(".venv") or part.startswith(".ci-venv") for part in path.parts)


def text_files() -> list[Path]:
    """README.md, docs/*.md, and the .py / .toml / .md files under the source folders."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            relative = path.relative_to(ROOT)
            if path.suffix in SUFFIXES and path.is_file() and not _skipped(relative):
                files.append(path)
    return files


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)


def relative_links(text: str) -> list[str]:
    """Targets of the inline and reference-style links outside code, minus URLs and same-page anchors."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = LINK.findall(prose) + REFERENCE_LINK.findall(prose)
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t) and not t.startswith("#")]


def test_the_scan_sees_the_repository():
    names = {p.relative_to(ROOT).as_posix() for p in text_files()}
    assert {"README.md", "docs/method.md", "docs/protocol.md", "docs/architecture.md"} <= names
    assert "tests/e2e/test_docs.py" in names
    assert any(n.startswith("packages/fsar-metric/src/") and n.endswith(".py") for n in names)
    assert any(n.endswith(".toml") and n.startswith("packages/fsar-prompts/") for n in names)
    assert not any("/.venv" in "/" + n or "__pycache__" in n for n in names)


def test_no_reference_to_documents_outside_the_repository():
    hits = []
    for path in text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            hits += [f"{path.relative_to(ROOT)}:{number}: {word}" for word in FORBIDDEN if word in line]
    assert not hits, "references to documents outside the repository (cite docs/*.md instead):\n" + "\n".join(hits)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_markdown_links_resolve(path: Path):
    broken = []
    for target in relative_links(path.read_text(encoding="utf-8")):
        file_part = target.split("#", 1)[0]
        resolved = (path.parent / file_part).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


def test_the_link_parser():
    text = (
        'See [a](docs/a.md#x), ![img](b.png "t"), [web](https://x.org/y), [same](#top), [c](<c.md>).\n'
        "`[not](code.md)`\n```\n[nor](fenced.md)\n```\n[ref]: e.md\n"
    )
    assert relative_links(text) == ["docs/a.md#x", "b.png", "c.md", "e.md"]
