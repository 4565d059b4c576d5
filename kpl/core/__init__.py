"""The sans-IO core of the producer: plain synchronous code driven with ``now``.

Nothing under ``kpl.core`` imports asyncio, aiohttp or ``time``; the server imports
these modules for the facts it shares with the producer (hashing, limits, the record
format).
"""
