"""The ``kpl`` command: ``kpl server``, ``kpl load``, ``kpl streams ...``, ``kpl tail``,
``kpl consume``.

Every error the user can cause (a bad flag, an unreachable endpoint, an unknown stream)
ends as ONE line on stderr and a non-zero exit status, never a traceback; set
``KPL_DEBUG=1`` to see the traceback of an unexpected failure.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from kpl.auth import NoCredentialsError
from kpl.cli._common import EXIT_INTERRUPTED, describe_error, one_line
from kpl.cli.consume import consume
from kpl.cli.load import load
from kpl.cli.server import server
from kpl.cli.streams import streams
from kpl.cli.tail import tail
from kpl.errors import KinesisError

__all__ = ["cli", "main"]


class KplGroup(click.Group):
    """A click group whose errors are one line: ``kpl <command>: error: <why>``."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(
                args, prog_name or "kpl", complete_var, standalone_mode=False, **extra
            )
        except click.ClickException as error:
            where, hint = "kpl", ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                where = error.ctx.command_path
                hint = f" (see '{where} --help')"
            click.echo(f"{where}: error: {one_line(error.format_message())}{hint}", err=True)
            code = error.exit_code
        except click.Abort:
            click.echo("kpl: interrupted", err=True)
            code = EXIT_INTERRUPTED
        except (KinesisError, TimeoutError, NoCredentialsError) as error:
            click.echo(f"kpl: error: {describe_error(error)}", err=True)
            code = 1
        except Exception as error:
            if os.environ.get("KPL_DEBUG"):
                traceback.print_exc()
            click.echo(
                f"kpl: internal error: {describe_error(error)} (KPL_DEBUG=1 shows the traceback)",
                err=True,
            )
            code = 1
        else:
            code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


@click.group(cls=KplGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kpl", prog_name="kpl")
def cli() -> None:
    """kpl: a Kinesis-style stream server, a load generator and stream tools.

    \b
    kpl server            run the local stream server (same as python -m server)
    kpl load              drive the producer at a stream and report what happened
    kpl streams ...       create, list, describe, delete, split, merge, scale streams
    kpl tail STREAM       print every record of a stream as it arrives
    kpl consume STREAM    consume a stream as one worker of an application
    """


# The subcommand modules import their heavy dependencies (the server, the producer,
# matplotlib) inside the commands, so `kpl --help` stays quick.
cli.add_command(server)
cli.add_command(load)
cli.add_command(streams)
cli.add_command(tail)
cli.add_command(consume)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``kpl = "kpl.cli:main"``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="kpl")
