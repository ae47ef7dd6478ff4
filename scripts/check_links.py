"""Check that every relative link in the project's Markdown resolves (`make lint` runs it).

The files: README.md, CONTRIBUTING.md and every `.md` under docs/. The links: inline links and
images, `[text](target)` and `![alt](target)`, and reference definitions, `[name]: target`.
A target with a scheme (`https:`, `mailto:`, ...) or only an anchor (`#section`) is not checked;
from any other, the `#anchor` and `?query` are dropped and the rest must name a file or folder
that exists, relative to the file the link is in (a leading `/`: relative to the root), inside
the root. Links inside code (fenced blocks, `inline spans`) are not links and are skipped.

Exit status 0 when every link resolves; 1 with one line per broken link, `file:line: target`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

__all__ = ["BrokenLink", "broken_links", "main", "markdown_files"]

# `](target)` ends every inline link and image, nested ones included; an optional title follows.
INLINE_TARGET = re.compile(r"""\]\(\s*(<[^>\n]*>|[^)\s]*)(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)""")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*(<[^>\n]*>|\S+)", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1)(?!\n\s*\n).)+?\1(?!`)", re.DOTALL)  # not across a blank line


@dataclass(frozen=True)
class BrokenLink:
    """A relative link whose target does not exist: where it is, and the target as written."""

    file: Path
    line: int
    target: str

    def describe(self, root: Path) -> str:
        """`file:line: target`, the file relative to the root."""
        return f"{self.file.relative_to(root)}:{self.line}: {self.target}"


def markdown_files(root: Path) -> list[Path]:
    """README.md and CONTRIBUTING.md where they exist, then docs/**/*.md, sorted."""
    top = [root / name for name in ("README.md", "CONTRIBUTING.md") if (root / name).is_file()]
    docs = root / "docs"
    return top + (sorted(docs.rglob("*.md")) if docs.is_dir() else [])


def _blank(text: str) -> str:
    """The text with every character but newlines made a space, so offsets and lines still hold."""
    return re.sub(r"[^\n]", " ", text)


def _without_code(markdown: str) -> str:
    """The Markdown with fenced blocks and code spans blanked out, line numbers unchanged."""
    lines = markdown.split("\n")
    fence: str | None = None
    for index, line in enumerate(lines):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            lines[index] = ""
        elif fence is not None:
            # A fence closes with at least as many of the same character, and nothing after it.
            closing = line.strip()
            if closing.startswith(fence) and set(closing) == {fence[0]}:
                fence = None
            lines[index] = ""
    return CODE_SPAN.sub(lambda span: _blank(span.group(0)), "\n".join(lines))


def _targets(markdown: str) -> Iterator[tuple[int, str]]:
    """(line, target) of every link, image and reference definition outside code."""
    text = _without_code(markdown)
    for pattern in (INLINE_TARGET, REFERENCE_DEFINITION):
        for match in pattern.finditer(text):
            target = match.group(1)
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1]
            yield text.count("\n", 0, match.start(1)) + 1, target


def _resolves(root: Path, file: Path, target: str) -> bool:
    """Whether a relative target names something that exists inside the root."""
    path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
    base = root if path.startswith("/") else file.parent
    resolved = (base / path.lstrip("/")).resolve()
    return resolved.is_relative_to(root.resolve()) and resolved.exists()


def broken_links(root: Path) -> list[BrokenLink]:
    """Every relative link of the project's Markdown under root that does not resolve, in order."""
    broken = []
    for file in markdown_files(root):
        found = sorted(_targets(file.read_text(encoding="utf-8")))
        for line, target in found:
            if not target or target.startswith("#") or SCHEME.match(target):
                continue
            if not _resolves(root, file, target):
                broken.append(BrokenLink(file, line, target))
    return broken


def main(argv: list[str] | None = None) -> int:
    """Check the links under --root (the repository by default); 1 if any is broken."""
    parser = argparse.ArgumentParser(description="Check that every relative link in the Markdown resolves.")
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parent.parent, help="the repository's root"
    )
    root: Path = parser.parse_args(argv).root
    broken = broken_links(root)
    for link in broken:
        print(link.describe(root))
    if broken:
        return 1
    print(f"check_links: every relative link in {len(markdown_files(root))} Markdown files resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
