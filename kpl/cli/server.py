"""``kpl server``: the bundled stream server, exactly as ``python -m server``.

The flags are not repeated here: the arguments go to the server's own parser
(``server.cli_args``), so every flag the server gains shows up in ``kpl server --help``.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

import click

__all__ = ["server", "server_parser"]


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line through click (not usage + error).

    The ``kpl`` group adds the "(see 'kpl server --help')" hint to every UsageError."""

    def error(self, message: str) -> NoReturn:
        raise click.UsageError(message)


def server_parser(prog: str = "kpl server") -> argparse.ArgumentParser:
    """The server's argument parser, under the name ``prog``."""
    from server.cli_args import add_server_arguments

    parser = _OneLineParser(
        prog=prog,
        description="Run the bundled Kinesis Data Streams server (same as python -m server).",
    )
    add_server_arguments(parser)
    return parser


@click.command(
    "server",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
    short_help="Run the local stream server (python -m server).",
)
@click.pass_context
def server(ctx: click.Context) -> int:
    """Run the local stream server (the flags of python -m server; see kpl server --help)."""
    argv = list(ctx.args)
    # Validate (and answer --help) under our own name first: a bad flag is one line.
    server_parser().parse_args(argv)
    from server.__main__ import main as server_main

    return server_main(argv, prog="kpl server")
