"""Facts of the Kinesis protocol that the producer, the consumer and the server share.

Everything here is sans-IO (no asyncio, aiohttp, ``time`` or sockets) and imports
nothing else of this project; ``kpl.core``, ``kpl.consumer`` and ``server`` build on it,
nothing here builds on them:

- :mod:`~kpl.protocol.hashing`: partition key -> hash key, explicit hash keys, the
  uniform split of the hash space;
- :mod:`~kpl.protocol.limits`: the published limits;
- :mod:`~kpl.protocol.aggregation`: the KPL aggregated record format (one encoder's
  pieces, one decoder);
- :mod:`~kpl.protocol.errors`: the error codes, their policy and their classes;
- :mod:`~kpl.protocol.bucket`: the token bucket both sides count rates with;
- :mod:`~kpl.protocol.sigv4`: SigV4 signing and ``Authorization`` parsing;
- :mod:`~kpl.protocol.eventstream`: the event-stream framing SubscribeToShard answers in
  (the server's encoder, the consumer's decoder).
"""
