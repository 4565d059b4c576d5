"""The server's sans-IO engine alone: PutRecords and GetRecords records/s with no IO.

What the engine costs per record (decode, validate, hash, route, number, store, encode),
without HTTP: the ceiling for ``bench/server_ingest.py``. Run:
``.venv/bin/python bench/server_core.py [--requests 200] [--shards 4]``.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.core.engine import Engine, EngineConfig
from server.storage.memory import MemoryStorage
from server.web.codec import encode_response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="engine-only PutRecords/GetRecords rates")
    parser.add_argument("--requests", type=int, default=200, help="PutRecords of 500 x 100 B")
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args(argv)
    engine = Engine(EngineConfig(state_delay_seconds=0), MemoryStorage(), random.Random(1))
    now = 1.8e9
    engine.handle("CreateStream", {"StreamName": "b", "ShardCount": args.shards}, now)
    data = base64.b64encode(os.urandom(100)).decode()
    bodies = [
        orjson.dumps(
            {
                "StreamName": "b",
                "Records": [{"Data": data, "PartitionKey": f"pk-{i}-{j}"} for j in range(500)],
            }
        )
        for i in range(args.requests)
    ]
    start = time.perf_counter()
    for body in bodies:
        result = engine.handle("PutRecords", orjson.loads(body), now).body
        assert result is not None
        encode_response(result)
    put_rate = len(bodies) * 500 / (time.perf_counter() - start)

    read = 0
    start = time.perf_counter()
    for index in range(args.shards):
        request = {
            "StreamName": "b",
            "ShardId": f"shardId-{index:012d}",
            "ShardIteratorType": "TRIM_HORIZON",
        }
        got = engine.handle("GetShardIterator", request, now).body
        assert got is not None
        iterator = got["ShardIterator"]
        while True:
            page = engine.handle("GetRecords", {"ShardIterator": iterator}, now).body
            assert page is not None
            encode_response(page)
            read += len(page["Records"])
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
    read_rate = read / (time.perf_counter() - start)
    assert read == len(bodies) * 500
    print(
        f"engine only: PutRecords {put_rate:,.0f} records/s, GetRecords {read_rate:,.0f} records/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
