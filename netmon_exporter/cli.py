"""Command line: the daemon (default) and the one-shot commands (flows, train, evaluate)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command -> module providing add_parser(subparsers); only the one asked for is
# imported, so the daemon never loads one-shot code or offline tooling.
SUBCOMMANDS: dict[str, str] = {
    "flows": ".commands.flows",
    "train": ".commands.train",
    "evaluate": ".tools.evaluate",
}
# Sub-commands that only parse captures: started without SciPy (see lean_start.py).
LEAN = {"flows"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        if argv[0] in LEAN:
            importlib.import_module(".lean_start", __package__)
        parser = argparse.ArgumentParser(prog="netmon-exporter")
        sub = parser.add_subparsers(dest="command", required=True)
        importlib.import_module(SUBCOMMANDS[argv[0]], __package__).add_parser(sub)
        args = parser.parse_args(argv)
        return int(args.func(args))
    from .daemon import run_daemon  # noqa: PLC0415 - keep one-shot commands light

    return run_daemon(argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
