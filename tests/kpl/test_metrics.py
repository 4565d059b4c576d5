"""kpl.metrics: the producer's KPL-named metrics in a prometheus-client registry."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest

from kpl import KinesisClient, Producer, ProducerConfig
from kpl.metrics import register_metrics, register_producer, serve
from server import StreamServer


def test_names_kinds_and_labels() -> None:
    registry = CollectorRegistry()
    source = {
        "UserRecordsPut": 7, "UserRecordsPending": 2, "BufferingTime": 12.5,
        "ErrorsByCode.ProvisionedThroughputExceededException": 3,
        "IncomingRecords.shardId-000000000001": 4,
    }
    register_metrics(lambda: source, stream_name="s", registry=registry)
    get = registry.get_sample_value
    assert get("kpl_user_records_put_total", {"stream_name": "s"}) == 7
    assert get("kpl_user_records_pending", {"stream_name": "s"}) == 2
    assert get("kpl_buffering_time_milliseconds", {"stream_name": "s"}) == 12.5
    assert get("kpl_errors_by_code_total", {
        "stream_name": "s", "code": "ProvisionedThroughputExceededException"
    }) == 3
    assert get("kpl_incoming_records", {
        "stream_name": "s", "shard_id": "shardId-000000000001"
    }) == 4
    source["UserRecordsPut"] = 9  # read at scrape time
    assert get("kpl_user_records_put_total", {"stream_name": "s"}) == 9
    assert b"# TYPE kpl_user_records_put_total counter" in generate_latest(registry)


async def test_a_producers_metrics_equal_what_it_put() -> None:
    registry = CollectorRegistry()
    async with StreamServer(port=0, state_delay_seconds=0.0) as server:
        client = KinesisClient(server.url, region="us-east-1")
        await client.create_stream("p", 1)
        await client.wait_for_active("p", interval=0.01)
        await client.close()
        config = ProducerConfig(record_max_buffered_time=0.01)
        async with Producer("p", server.url, "us-east-1", config) as producer:
            register_producer(producer, registry)
            futures = [await producer.put(b"x" * 10, partition_key=str(n)) for n in range(25)]
            for future in futures:
                await future
            assert registry.get_sample_value(
                "kpl_user_records_put_total", {"stream_name": "p"}
            ) == 25 == producer.metrics()["UserRecordsPut"]


def test_serve_exposes_a_registry_over_http() -> None:
    registry = CollectorRegistry()
    register_metrics(lambda: {"UserRecordsPut": 1}, stream_name="s", registry=registry)
    port = _free_port()
    stop = serve(registry, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert b'kpl_user_records_put_total{stream_name="s"} 1.0' in response.read()
    finally:
        stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_kpl_load_serves_the_producers_metrics_while_it_runs() -> None:
    from kpl.cli.load import LoadOptions, NoView, run_load

    port = _free_port()
    scraped: list[bytes] = []

    class Scraper(NoView):
        def update(self, snap: object, phase: str) -> None:
            if phase == "done":  # the run is over, the metrics are still served
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=10) as response:
                    scraped.append(response.read())

    opts = LoadOptions(records=300, shards=1, metrics_port=port, seed=1)
    summary, _ = await run_load(opts, Scraper())
    assert summary["records_acked"] == 300
    assert b'kpl_user_records_put_total{stream_name="kpl-load"} 300.0' in scraped[0]


def test_kpl_load_metrics_port_in_use_is_one_line() -> None:
    from click.testing import CliRunner

    from kpl.cli import cli

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli, ["load", "--records", "10", "--metrics-port", str(port)], catch_exceptions=False
        )
    assert result.exit_code != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert result.stderr.count("\n") == 1
