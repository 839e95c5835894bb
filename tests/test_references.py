"""Every file the repository's text points to is in the repository.

A reader who clones TaskForge has only what is in it, so the docs, docstrings and comments
must not send them elsewhere (docs/conventions.md#comments-say-why). This test reads every
file git tracks, and every untracked file git does not ignore, and checks three things:

(a) nothing cites the internal design notes that live outside the repository, by their
    folder or by their upper-case file names;
(b) every path-like reference resolves: a token that starts with one of the repository's
    top-level directories and ends with a file extension (``jobs/queries.py``), and every
    relative markdown link ``[text](target)``, resolved from the file that holds it;
(c) every anchor, ``docs/conventions.md#tests-access-trio`` or ``[text](#errors)``, names a
    heading of that markdown file (GitHub's slugs) or an explicit ``<a id>``.

In Python files, references are read from comments and docstrings only: other string
literals are data (a test may write made-up paths into a temporary directory).
Paths under directories that are generated rather than kept (GENERATED) are not checked.
"""

from __future__ import annotations

import io
import posixpath
import re
import shutil
import subprocess
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Generated or local-only: they exist on a developer's machine, never in a clone.
GENERATED = (".venv/", ".taskforge/", "bench/results/", "staticfiles/", "build/", "dist/")

EXTENSIONS = "py|pyi|md|sql|toml|html|txt|cfg|ini|json|yaml|yml|sh|js|css|csv"

# (a) Built from parts, so that this file does not cite what it forbids.
_NOTES = ("architecture", "style", "performance", "dashboard")
FORBIDDEN = re.compile(
    r"\b" + re.escape("shared" + "/")
    + r"|\b(?:" + "|".join(note.upper() for note in _NOTES) + r")(?:\.md)?\b"
    + r"|\bAPI" + r"\.md\b"
)  # fmt: skip

MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
FENCE = re.compile(r"^\s*(```|~~~)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# Tokens that begin a statement: a string right after one of these is a docstring.
_STATEMENT_START = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower case, punctuation other than
    '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def outside_fences(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, line) of a markdown file's lines that are not inside fenced code."""
    fenced = False
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield number, line


def python_prose(source: str) -> list[tuple[int, str]]:
    """(line number, line) of the comments and docstrings of a Python source: its strings
    that are statements of their own, not the strings that are data."""
    found: list[tuple[int, str]] = []
    previous = tokenize.NEWLINE
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT or (
                token.type == tokenize.STRING and previous in _STATEMENT_START
            ):
                for offset, line in enumerate(token.string.splitlines()):
                    found.append((token.start[0] + offset, line))
            if token.type not in (tokenize.COMMENT, tokenize.NL):
                previous = token.type
    except (tokenize.TokenError, SyntaxError):
        # Not valid Python (a template, say): every line may hold a reference.
        return list(enumerate(source.splitlines(), 1))
    return found


@dataclass
class Repository:
    root: Path
    files: set[str]
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @cached_property
    def path_token(self) -> re.Pattern[str]:
        tops = sorted({name.split("/")[0] for name in self.files if "/" in name})
        return re.compile(
            r"(?<![\w./~-])(?:" + "|".join(map(re.escape, tops)) + r")/"
            r"(?:[\w.-]+/)*[\w-][\w.-]*\.(?:" + EXTENSIONS + r")(?![\w/])(?:#[\w-]+)?"
        )

    @cached_property
    def dirs(self) -> set[str]:
        return {posixpath.dirname(name) for name in self.files} | {
            parent for name in self.files for parent in _parents(name)
        }

    def text(self, name: str) -> str | None:
        data = (self.root / name).read_bytes()
        if b"\0" in data:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError:
            return None

    def anchors(self, name: str) -> set[str]:
        text = self.text(name) or ""
        found: set[str] = set(HTML_ANCHOR.findall(text))
        seen: dict[str, int] = {}
        for _, line in outside_fences(text.splitlines()):
            match = HEADING.match(line)
            if match:
                base = slug(match.group(2))
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
        return found

    def check_target(self, where: str, target: str, anchor: str | None) -> None:
        """``target`` is a path relative to the root, already normalised."""
        self.checked += 1
        if target.startswith("../") or target == "..":
            self.problems.append(f"{where}: {target} is outside the repository")
            return
        if any(f"{target}/".startswith(prefix) for prefix in GENERATED):
            return
        if target not in self.files and target not in self.dirs:
            self.problems.append(f"{where}: {target} is not in the repository")
            return
        if anchor is not None and target.endswith(".md") and target in self.files:
            self.checked += 1
            if anchor not in self.anchors(target):
                self.problems.append(f"{where}: {target} has no heading for #{anchor}")

    def check_file(self, name: str) -> None:
        text = self.text(name)
        if text is None:
            return
        for match in FORBIDDEN.finditer(text):
            self.problems.append(
                f"{name}:{_line_of(text, match.start())}: {match.group(0)!r} names a document "
                "outside the repository; point to docs/ instead"
            )
        if name.endswith(".py"):
            # Tokenizing is the slow part of this test: only where a reference may be.
            if self.path_token.search(text):
                for number, line in python_prose(text):
                    for match in self.path_token.finditer(line):
                        self.check_token(f"{name}:{number}", match.group(0))
        else:
            # A markdown link's target is resolved from its file below, not as a token here.
            prose = LINK_TARGET.sub("]()", text) if name.endswith(".md") else text
            for match in self.path_token.finditer(prose):
                self.check_token(f"{name}:{_line_of(prose, match.start())}", match.group(0))
        if name.endswith(".md"):
            for number, line in outside_fences(text.splitlines()):
                for match in MARKDOWN_LINK.finditer(line):
                    self.check_link(name, number, match.group(1))

    def check_token(self, where: str, token: str) -> None:
        target, _, anchor = token.partition("#")
        self.check_target(where, target, anchor or None)

    def check_link(self, name: str, number: int, link: str) -> None:
        if SCHEME.match(link) or link.startswith(("/", "<")):
            return  # a URL, or a path of the running server such as /api/docs/
        path, _, anchor = link.partition("#")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), path)) if path else name
        self.check_target(f"{name}:{number}", target, anchor or None)

    def check(self) -> None:
        for name in sorted(self.files):
            self.check_file(name)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _parents(name: str) -> Iterator[str]:
    while "/" in name:
        name = name.rsplit("/", 1)[0]
        yield name


def repository_files(root: Path = ROOT) -> set[str]:
    """Tracked files and untracked ones git does not ignore, that exist on disk."""
    names: set[str] = set()
    for extra in ([], ["--others", "--exclude-standard"]):
        listing = subprocess.run(
            ["git", "ls-files", "-z", *extra], cwd=root, capture_output=True, check=True
        )
        names.update(name for name in listing.stdout.decode().split("\0") if name)
    return {name for name in names if (root / name).is_file()}


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)
def test_every_reference_in_the_repository_resolves(capsys):
    repository = Repository(ROOT, repository_files())
    repository.check()
    with capsys.disabled():
        print(f"\n{repository.checked} references checked in {len(repository.files)} files")
    assert repository.checked > 100  # the scan found the references
    assert not repository.problems, "broken references:\n" + "\n".join(repository.problems)


# What (a) forbids, spelled so that this file does not contain it.
SHARED_DIR = "shared" + "/"
STYLE_NOTE = "style".upper() + ".md"


def test_the_checker_reports_each_kind_of_broken_reference(tmp_path):
    files = {
        "docs/guide.md": (
            "# Guide\n\n## 2. The part: with `code`\n\n"
            "See [the part](#2-the-part-with-code), [missing](#nowhere) and [up](../../x.md).\n"
            "Read docs/other.md#the-top, docs/other.md#no-such and docs/gone.md.\n"
            f"Notes in {SHARED_DIR}notes.md and {STYLE_NOTE} do not count.\n"
            "```\n[not a link](nowhere.md)\n```\n"
        ),
        "docs/other.md": '# The top\n<a id="kept"></a>\nBack to [guide](guide.md#guide).\n',
        "jobs/code.py": (
            '"""Uses jobs/sql/real.sql and jobs/sql/unreal.sql."""\n'
            "# see docs/other.md#kept\n"
            'DATA = "jobs/made_up_in_a_test.py"\n'
        ),
        "jobs/sql/real.sql": "-- docs/guide.md\nSELECT 1\n",
        "bench/notes.txt": "raw figures go to bench/results/run.json\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    repository = Repository(tmp_path, set(files))
    repository.check()
    assert sorted(repository.problems) == sorted(
        [
            "docs/guide.md:5: docs/guide.md has no heading for #nowhere",
            "docs/guide.md:5: ../x.md is outside the repository",
            "docs/guide.md:6: docs/other.md has no heading for #no-such",
            "docs/guide.md:6: docs/gone.md is not in the repository",
            f"docs/guide.md:7: {SHARED_DIR!r} names a document outside the repository; "
            "point to docs/ instead",
            f"docs/guide.md:7: {STYLE_NOTE!r} names a document outside the repository; "
            "point to docs/ instead",
            "jobs/code.py:1: jobs/sql/unreal.sql is not in the repository",
        ]
    )
    # Targets, then anchors: guide.md 6 + 4, other.md 1 + 1, code.py 3 + 1, real.sql 1, and
    # the generated path in notes.txt 1 (counted, not looked for).
    assert repository.checked == 18


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("5. Dispatch: one tick", "5-dispatch-one-tick"),
        ("The processes `tf.py start` runs", "the-processes-tfpy-start-runs"),
        ("Tests: access trio", "tests-access-trio"),
        ("See [the API](api.md) — now", "see-the-api--now"),
        ("snake_case stays", "snake_case-stays"),
    ],
)
def test_anchors_follow_githubs_slugs(heading, anchor):
    assert slug(heading) == anchor
