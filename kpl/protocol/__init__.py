"""Facts of the Kinesis protocol that the producer, the consumer and the server share.

Everything here is sans-IO (no asyncio, aiohttp or ``time``) and imports nothing else of
this project: hashing and hash ranges, the published limits, the KPL aggregated record
format, sequence-number and error-code facts. ``kpl.core``, ``kpl.consumer`` and
``server`` build on it; nothing here builds on them.
"""
