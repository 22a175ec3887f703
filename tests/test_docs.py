"""The README and docs/ hold together: short README, links that resolve, every setting documented once."""

from __future__ import annotations

import re
from pathlib import Path

import gen_config_doc

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
CONFIG = ROOT / "docs" / "configuration.md"

# where the code reads settings: the package, the flows, the deployments, the Docker files, make
CODE = [
    *ROOT.glob("slidead/**/*.py"),
    *ROOT.glob("flows/**/*.py"),
    *ROOT.glob("deployments/*"),
    *ROOT.glob("docker/*"),
    ROOT / "Makefile",
]
NOT_SETTINGS = {"SLIDEAD_X"}  # failures.py's docstring: the shape of a message, not a variable
VARIABLE = re.compile(r"\bSLIDEAD_[A-Z0-9_]*[A-Z0-9]\b")

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def links(text: str) -> list[str]:
    """Targets of the markdown links and images in ``text``, outside code."""
    text = _CODE.sub("", _FENCE.sub("", _COMMENT.sub("", text)))
    return _LINK.findall(text)


def anchors(text: str) -> set[str]:
    """The anchors a renderer gives the headings of ``text`` (GitHub's rule: lower case, punctuation
    dropped, spaces to hyphens, a repeated heading numbered)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_links_and_anchors_are_found():
    text = "# A title: `x` (y)\n## A title: `x` (y)\n[a](b.md#c) `[n](not.md)` ![i](p.png)\n```\n[n](no.md)\n```\n"
    assert links(text) == ["b.md#c", "p.png"]
    assert anchors(text) == {"a-title-x-y", "a-title-x-y-1"}


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines < 260, f"README.md has {lines} lines: move detail to a page in docs/"


def test_every_relative_link_resolves():
    broken = []
    for page in [README, *PAGES]:
        text = page.read_text()
        for target in links(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where} {path} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
                broken.append(f"{where} has no heading #{anchor}")
    assert not broken, "\n".join(broken)
    assert len(PAGES) >= 9


def test_readme_links_every_page_in_docs():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README.read_text())}
    assert [p.name for p in PAGES if p.resolve() not in linked] == []


def _read_by_code() -> set[str]:
    found = {v for path in CODE if path.is_file() for v in VARIABLE.findall(path.read_text())}
    return found - NOT_SETTINGS


def test_every_setting_is_documented_once():
    from slidead.settings import Settings

    read = _read_by_code() | {"SLIDEAD_" + name.upper() for name in Settings.model_fields}
    rows = re.findall(r"^\| `(SLIDEAD_[A-Z0-9_]+)` \|", CONFIG.read_text(), re.M)
    assert {"SLIDEAD_HOME", "SLIDEAD_DEBUG", "SLIDEAD_CODE_DIR", "SLIDEAD_DOCKER_ROOT"} <= read
    twice = sorted({v for v in rows if rows.count(v) > 1})
    assert not twice, f"documented more than once in docs/configuration.md: {twice}"
    assert sorted(read - set(rows)) == [], "read by the code but not in docs/configuration.md (run `make docs`)"
    assert sorted(set(rows) - read) == [], "in docs/configuration.md but read nowhere"


_COMMAND = re.compile(r"\bslidead ([a-z][a-z0-9-]*)([^`\n|;#]*)")
_OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _commands() -> dict[str, set[str]]:
    """Each ``slidead`` command and its options, from the parser itself."""
    import argparse

    from slidead.shell.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


def test_commands_the_docs_show_exist():
    """Every ``slidead COMMAND --option`` written as code in the README or docs/ is one the parser has."""
    commands, wrong, seen = _commands(), [], 0
    for page in [README, *PAGES]:
        text = page.read_text()
        fences = [m.group(0) for m in _FENCE.finditer(text)]
        for snippet in [*fences, *_CODE.findall(_FENCE.sub("", text))]:
            for m in _COMMAND.finditer(snippet):
                seen += 1
                name, rest = m.group(1), m.group(2).split("&&")[0]
                if name not in commands:
                    wrong.append(f"{page.name}: slidead {name}: no such command")
                    continue
                wrong += [
                    f"{page.name}: slidead {name} {o}: no such option"
                    for o in _OPTION.findall(rest)
                    if o not in commands[name]
                ]
    assert seen >= 20
    assert not wrong, "\n".join(wrong)


def test_configuration_page_is_generated_from_settings():
    assert CONFIG.read_text() == gen_config_doc.render(), "docs/configuration.md is stale: run `make docs`"
