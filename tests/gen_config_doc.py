"""Write docs/configuration.md from the ``Settings`` class in slidead/settings.py.

Run ``make docs`` (or ``.venv/bin/python tests/gen_config_doc.py``) after adding or changing a
setting, and commit the page; ``tests/test_docs.py`` fails while the page is stale.

Each field of ``Settings`` becomes one row: its variable (``SLIDEAD_`` + the field's name in
capitals), its type and default as written in the class, and its description: the field's
``description=`` when it has one, else the comment lines right above the field and the comment
at the end of its line, joined. A field with no description stops the generator with a message
naming it. Variables read outside ``Settings`` (by shell scripts, deployments or ``os.environ``)
are listed in ``OTHER`` and ``DOCKER_CHECK`` below.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "slidead" / "settings.py"
PAGE = ROOT / "docs" / "configuration.md"
PREFIX = "SLIDEAD_"

# read with os.environ or by files other than Python: variable -> (where, what)
OTHER = {
    "SLIDEAD_DEBUG": (
        "`slidead/shell/cli.py`",
        "`1` (anything but empty or `0`): an error's traceback on the terminal too, as `--debug` does; "
        "it is always written to `$SLIDEAD_HOME/logs/<command>-<time>.log`.",
    ),
    "SLIDEAD_CODE_DIR": (
        "`deployments/prefect.yaml`",
        "the checkout a work pool's workers run the flows from (the deployments' `pull` step): set it when "
        "running `prefect deploy --all`, e.g. `SLIDEAD_CODE_DIR=$PWD`.",
    ),
}

# read only by `make docker-check` (docker/check.sh) and docker/compose.local.yaml
DOCKER_CHECK = {
    "SLIDEAD_DOCKER_ROOT": "`/var/tmp/slidead-docker`: the data root, exec root and socket of the `dockerd` the "
    "check starts when no Docker engine answers (delete it to reclaim its images, about 13 GB).",
    "SLIDEAD_DOCKER_LOGS": "`$SLIDEAD_DOCKER_ROOT/logs`: each step's output.",
    "SLIDEAD_CHECK_NIGHT": "`2026-11-23`: the night the check generates, uploads and scores on the CPU worker.",
    "SLIDEAD_CHECK_NIGHT_B": "`2026-11-24`: the second night, scored on the GPU worker at the same time.",
    "SLIDEAD_CHECK_EPOCHS": "`3`: epochs of the check's `retrain/vae` run.",
    "SLIDEAD_BASE": "the base image of `slidead-cpu` (`python:3.11-slim` when it can be pulled, else the local "
    "Debian base that `docker/local-base.sh` makes); also of `slidead-catalog` (Debian's PostgreSQL).",
    "SLIDEAD_GPU_BASE": "the base image of `slidead-gpu` (`nvidia/cuda:13.0.0-runtime-ubuntu24.04` when it can be "
    "pulled, else `SLIDEAD_BASE`: its worker then runs on the CPU).",
}


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line."""
    return {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }


def _default(node: ast.expr | None) -> str:
    if node is None:
        return "required"
    if isinstance(node, ast.Constant):
        return "unset" if node.value is None else f"`{node.value}`"
    if isinstance(node, ast.Call) and len(node.args) == 1 and isinstance(node.args[0], ast.Constant):
        return f"`{node.args[0].value}`"  # Path("./slidead-data")
    return f"`{ast.unparse(node)}`"


def settings_rows() -> list[tuple[str, str, str, str]]:
    """``(variable, type, default, description)`` of every field of ``Settings``, in class order."""
    from slidead.settings import Settings

    source = SETTINGS.read_text()
    comments = _comments(source)
    lines = source.splitlines()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    rows, missing = [], []
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        if name not in Settings.model_fields:
            continue
        text = Settings.model_fields[name].description
        if not text:
            above, n = [], node.lineno - 1
            while n >= 1 and lines[n - 1].strip().startswith("#"):
                above.insert(0, comments[n])
                n -= 1
            trailing = comments.get(node.end_lineno, "")
            text = " ".join(p for p in [*above, trailing] if p)
        if not text:
            missing.append(name)
        value = node.value
        if isinstance(value, ast.Call) and ast.unparse(value.func).endswith("Field"):
            value = next((k.value for k in value.keywords if k.arg == "default"), value.args[0] if value.args else None)
        rows.append((PREFIX + name.upper(), f"`{ast.unparse(node.annotation)}`", _default(value), text))
    unknown = set(Settings.model_fields) - {r[0][len(PREFIX) :].lower() for r in rows}
    if missing or unknown:
        raise SystemExit(
            f"slidead/settings.py: give {', '.join(sorted({*missing, *unknown}))} a comment (above the field or at "
            "the end of its line) or a description=, then run `make docs`"
        )
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    out = [
        "# Configuration",
        "",
        "<!-- Generated by tests/gen_config_doc.py from slidead/settings.py: edit the comments there, then run",
        "     `make docs`. tests/test_docs.py fails while this page is stale. -->",
        "",
        "slidead reads its settings from environment variables once, in `slidead.settings.Settings`",
        "(pydantic-settings, prefix `SLIDEAD_`); the command line, the flows and the deployments pass",
        "what they need down, and nothing below them reads the environment. A value that does not",
        "parse stops the command with one sentence naming the variable. Every worker of a Prefect",
        "work pool needs the same settings (and the AWS credentials, which slidead never reads,",
        "logs or stores itself: they come from the standard AWS chain).",
        "",
        "## Settings",
        "",
        "| variable | type | default | what it does |",
        "| --- | --- | --- | --- |",
    ]
    out += [f"| `{v}` | {_cell(t)} | {_cell(d)} | {_cell(text)} |" for v, t, d, text in settings_rows()]
    out += [
        "",
        "## Read outside `Settings`",
        "",
        "| variable | read by | what it does |",
        "| --- | --- | --- |",
    ]
    out += [f"| `{v}` | {where} | {_cell(text)} |" for v, (where, text) in OTHER.items()]
    out += [
        "",
        "## `make docker-check` only",
        "",
        "Read by `docker/check.sh` and `docker/compose.local.yaml` (see [operations](operations.md#without-registry-access-make-docker-check)),",
        "never by slidead itself.",
        "",
        "| variable | default and what it does |",
        "| --- | --- |",
    ]
    out += [f"| `{v}` | {_cell(text)} |" for v, text in DOCKER_CHECK.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
