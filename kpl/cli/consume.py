"""``kpl consume STREAM --application APP``: one worker of a consuming application.

Workers started with the same application and lease store share the stream's shards
(leases balanced between them, taken over when a worker dies). Each prints the user
records it is given, one per line in ``kpl tail``'s formats (``--json`` adds
``"worker"``), and checkpoints each batch once it is printed, so a worker that takes a
shard over goes on after the last printed batch. SIGTERM and Ctrl-C stop gracefully:
the leases are released so the other workers take them at once; the exit status is 0.
``--metrics-port`` serves the worker's metrics (Prometheus text) while it runs;
``--retrieval fanout`` reads through enhanced fan-out instead of GetRecords.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

import click

from kpl.cli._common import (
    CliError,
    check_region,
    describe_error,
    endpoint_options,
    resolve_endpoint,
)
from kpl.cli.tail import format_line
from kpl.consumer.errors import DuplicateWorkerId
from kpl.errors import KinesisError, ResourceNotFoundException

if TYPE_CHECKING:
    from kpl.consumer import Consumer

__all__ = ["consume"]

_POSITIONS = {"trim-horizon": "TRIM_HORIZON", "latest": "LATEST"}


async def _consume(
    url: str | None,
    region: str | None,
    stream: str,
    application: str,
    leases: str,
    start: str,
    failover_time: float,
    worker_id: str | None,
    as_json: bool,
    metrics_port: int | None = None,
    retrieval: str = "polling",
) -> int:
    from kpl.consumer import Consumer, ConsumerConfig

    options: dict[str, object] = {
        "initial_position": _POSITIONS[start],
        "failover_time": failover_time,
        "retrieval": retrieval,
    }
    if worker_id:
        options["worker_id"] = worker_id
    config = ConsumerConfig(**options)  # type: ignore[arg-type]
    worker = config.worker_id
    consumer = Consumer(
        stream,
        application=application,
        endpoint_url=url,
        region=region,
        leases=leases,
        config=config,
    )
    with contextlib.ExitStack() as stack:
        if metrics_port is not None:
            from kpl.metrics import serve_consumer

            # Bound before connecting: a busy port fails at once, with no lease taken.
            stack.callback(serve_consumer(consumer, metrics_port))
        printed = await _print_batches(consumer, worker, application, stream, leases, as_json)
    # Said once the leases are released (leaving the block), so other workers have them.
    click.echo(f"kpl consume: worker {worker} stopped after {printed} records", err=True)
    return 0


async def _print_batches(
    consumer: Consumer, worker: str, application: str, stream: str, leases: str, as_json: bool
) -> int:
    """Print and checkpoint every batch until the consumer stops; the records printed."""
    from kpl.consumer import LeaseLost

    out = sys.stdout
    async with consumer:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, consumer.shutdown)
        click.echo(
            f"kpl consume: worker {worker} of {application} reading {stream} "
            f"(leases {leases}; Ctrl-C stops)",
            err=True,
        )
        printed = 0
        try:
            async for batch in consumer:
                shard_id = batch.shard_id
                out.write(
                    "".join(
                        format_line(
                            shard_id, r, as_json=as_json, worker=worker if as_json else None
                        )
                        + "\n"
                        for r in batch.records
                    )
                )
                out.flush()
                printed += len(batch.records)
                try:
                    await batch.checkpoint()
                except LeaseLost:
                    continue  # the new owner goes on from the last checkpoint
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    return printed


@click.command("consume", short_help="Consume a stream as one worker of an application.")
@click.argument("stream")
@click.option(
    "--application",
    "-a",
    required=True,
    help="The consuming application: its workers share the shards and the checkpoints.",
)
@click.option(
    "--leases",
    metavar="URL",
    default=None,
    help=(
        "Lease store: sqlite:///PATH, dynamodb://TABLE or memory://NAME "
        "(default: sqlite:///APPLICATION-leases.db in the current directory)."
    ),
)
@click.option(
    "--from",
    "start",
    type=click.Choice(["latest", "trim-horizon"]),
    default="latest",
    show_default=True,
    help="Where shards the application never checkpointed start.",
)
@click.option(
    "--failover-time",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds without a renewal after which another worker takes a lease over.",
)
@click.option("--worker-id", default=None, help="This worker's name (default: host:pid:random).")
@click.option(
    "--retrieval",
    type=click.Choice(["polling", "fanout"]),
    default="polling",
    show_default=True,
    help=(
        "polling: GetRecords; fanout: enhanced fan-out (a stream consumer named after the "
        "application, SubscribeToShard)."
    ),
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user record.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve the worker's metrics (Prometheus text) on 127.0.0.1:PORT/metrics.",
)
@endpoint_options
def consume(
    stream: str,
    application: str,
    leases: str | None,
    start: str,
    failover_time: float,
    worker_id: str | None,
    retrieval: str,
    as_json: bool,
    metrics_port: int | None,
    endpoint: str | None,
    region: str | None,
) -> int:
    """Consume STREAM as one worker of APPLICATION, printing each user record.

    Start it several times with the same application and lease store: the workers share
    the shards. Each batch is checkpointed once printed. Lines are PARTITION_KEY,
    SEQUENCE/SUB-SEQUENCE and the data, as with `kpl tail`. SIGTERM or Ctrl-C stops
    gracefully (the leases go to the other workers at once).
    """
    url = resolve_endpoint(endpoint)
    check_region(url, region)
    lease_url = leases or f"sqlite:///{application}-leases.db"
    from kpl.runner import run

    try:
        return run(
            _consume(
                url,
                region,
                stream,
                application,
                lease_url,
                start,
                failover_time,
                worker_id,
                as_json,
                metrics_port,
                retrieval,
            )
        )
    except ResourceNotFoundException as error:
        raise CliError(f"stream {stream!r} not found ({error.message})") from error
    except DuplicateWorkerId as error:
        raise CliError(f"{error} (--worker-id)") from error
    except KinesisError as error:
        raise CliError(describe_error(error, url)) from error
    except ValueError as error:
        raise CliError(str(error)) from error
    except KeyboardInterrupt:
        return 0
