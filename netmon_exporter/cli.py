"""Command line: the daemon (default) and the one-shot commands (flows, train, evaluate)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-commands: module in netmon_exporter.commands providing add_parser(subparsers).
SUBCOMMANDS = ("flows", "train", "evaluate")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        parser = argparse.ArgumentParser(prog="netmon-exporter")
        sub = parser.add_subparsers(dest="command", required=True)
        for name in SUBCOMMANDS:
            try:
                module = importlib.import_module(f".commands.{name}", __package__)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.endswith(f"commands.{name}"):
                    continue
                raise
            module.add_parser(sub)
        args = parser.parse_args(argv)
        return int(args.func(args))
    from .daemon import run_daemon  # noqa: PLC0415 - keep one-shot commands light

    return run_daemon(argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
