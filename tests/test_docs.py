"""The documentation is checked: every relative link and image resolves, and every command README shows exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
         *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _outside_code(text: str) -> str:
    """The text without fenced code blocks and inline code (links there are examples, not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set:
    """GitHub's heading anchors of a Markdown page."""
    out = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_the_docs_are_pages():
    assert len(PAGES) > 15 and all(p.is_file() for p in PAGES)
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200  # a front page; the rest is in docs/


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    links = LINK.findall(_outside_code(page.read_text()))
    broken = []
    for link in links:
        if re.match(r"^[a-z]+:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no {path}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def _readme_commands() -> set:
    """(command,) or (command, subcommand) of every ``nnunet-medaka`` call in README's code blocks."""
    blocks = "\n".join(re.findall(r"^```(?:bash)?\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.M | re.S))
    found = set()
    for command, sub in re.findall(r"nnunet-medaka[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?", blocks):
        found.add((command, sub) if command in ("convert", "qc") else (command,))
    return found


def test_every_command_in_the_readme_exists(capsys):
    from nnunet_medaka.cli import main

    commands = _readme_commands()
    assert {("run",), ("report",), ("split",), ("convert", "microct"), ("qc", "train"), ("pseudolabel",)} <= commands
    for command in sorted(commands):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0, f"nnunet-medaka {' '.join(command)} --help failed"
    capsys.readouterr()


def test_no_internal_issue_numbers_in_docs_or_code():
    pattern = re.compile(r"\bissues? \d+|\(issue\b", re.I)
    files = [*PAGES, *sorted((ROOT / "nnunet_medaka").rglob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    hits = [f"{f.relative_to(ROOT)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert not hits, hits
