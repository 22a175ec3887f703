"""``python -m slidead``: the same command line as the ``slidead`` script, for an environment
where the package is importable but its console script was never installed."""

from slidead.shell.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
