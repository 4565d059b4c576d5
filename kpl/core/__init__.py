"""The sans-IO core of the producer: plain synchronous code driven with ``now``.

Nothing under ``kpl.core`` imports asyncio, aiohttp or ``time``. It holds the producer's
own decisions (routing, aggregation, collection, rates, retries, admission); the facts it
shares with the consumer and the server come from :mod:`kpl.protocol`.
"""
