"""The durable storage's on-disk formats: record frames and stream metadata.

Theory of operation
-------------------
**Record frames.** A segment file is a run of frames, one per append of a batch to one
segment::

    magic (2 bytes "KR") | payload length (u32 LE) | crc32 of payload (u32 LE) | payload

and the payload is a msgpack list of ``[seq (24-byte big-endian bin), arrival,
partition_key, data]``. One msgpack call and one CRC per PutRecords shard batch rather
than per record is most of what keeps durability cheap. The magic lets recovery find the
next frame after a damaged one without trusting a damaged length; the CRC tells a
complete frame from a torn or corrupted one.

:func:`encode_frame` is the only writer of a frame and :func:`frame_at` the only reader;
:func:`scan_segment` walks a whole segment with it at start-up, stepping over damage.

**Stream metadata** is a msgpack map ``{"v": 1, "stream": {field: value}}`` of the
:class:`~server.storage.base.StreamMeta` dataclass and its shards. Integers beyond
msgpack's 64 bits (hash keys, sequence numbers) travel as an extension type holding
their decimal digits. Unknown keys (written by a newer version) are ignored on reading.

**The high-water mark** of a shard (file ``hwm`` in its directory) is a fixed 44-byte
record ``"KH" | version (1) | pad | reserved sequence number (24 bytes big-endian) |
highest segment number created (u64 LE) | crc32 of the bytes before (u32 LE)``. No
sequence number at or below the reserved one is ever issued again, whatever happens to
the segments; the segment number tells a missing last segment from a shard that never
had more.

Nothing here does IO: these are pure functions of bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from server.storage.base import ShardMeta, StoredRecord, StreamMeta

__all__ = [
    "HEADER_SIZE",
    "HWM_BYTES",
    "MAGIC",
    "RECORD_OVERHEAD",
    "ScanResult",
    "count_records",
    "decode_hwm",
    "decode_meta",
    "encode_frame",
    "encode_hwm",
    "encode_meta",
    "frame_at",
    "scan_segment",
]

MAGIC = b"KR"
_HEADER = struct.Struct("<2sII")
#: Bytes of a frame's header (magic, length, CRC).
HEADER_SIZE = _HEADER.size
_SEQ_BYTES = 24  # 10**56 < 2**192: every sequence number of our layout fits
#: Upper bound of a record's bytes in a frame beyond its data and UTF-8 key (msgpack
#: array/bin/str headers, the 24-byte sequence number, the float): for rollover sizing.
RECORD_OVERHEAD = 48
#: Larger payloads are taken as a damaged length field (records are at most a few MiB).
_MAX_PAYLOAD = 64 * 1024 * 1024
_BIG_INT_EXT = 1
_HWM = struct.Struct("<2sBx24sQ")
_HWM_MAGIC = b"KH"
#: Bytes of a high-water-mark file.
HWM_BYTES = _HWM.size + 4


# -- record frames ----------------------------------------------------------------------


def encode_frame(records: Sequence[StoredRecord]) -> bytes:
    """A batch of records (one append to one segment) as one checksummed frame."""
    # msgpack writes tuples as arrays: [[seq, arrival, key, data], ...].
    payload: bytes = msgpack.packb(
        [(seq.to_bytes(_SEQ_BYTES, "big"), at, key, data) for seq, at, key, data in records],
        use_bin_type=True,
    )
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes, after_seq: int) -> list[StoredRecord] | None:
    out: list[StoredRecord] = []
    last = after_seq
    for seq_raw, arrival, key, data in msgpack.unpackb(payload, raw=False):
        seq = int.from_bytes(seq_raw, "big")
        if seq <= last or not isinstance(key, str) or not isinstance(data, bytes):
            return None
        out.append((seq, float(arrival), key, data))
        last = seq
    return out or None


def frame_at(
    buf: bytes | memoryview, pos: int, after_seq: int = -1
) -> tuple[list[StoredRecord], int] | None:
    """The records of a good frame at ``pos`` and the frame's end, or ``None``.

    Good: magic, a plausible length, the CRC, msgpack that decodes to records whose
    sequence numbers increase strictly from above ``after_seq``.
    """
    if len(buf) - pos < HEADER_SIZE:
        return None
    magic, length, crc = _HEADER.unpack_from(buf, pos)
    end = pos + HEADER_SIZE + length
    if magic != MAGIC or length > _MAX_PAYLOAD or end > len(buf):
        return None
    payload = bytes(buf[pos + HEADER_SIZE : end])
    if zlib.crc32(payload) != crc:
        return None
    try:
        records = _decode_payload(payload, after_seq)
    except Exception:  # a CRC collision on garbage: treat as damaged
        return None
    return None if records is None else (records, end)


@dataclass(slots=True)
class ScanResult:
    """What :func:`scan_segment` found in one segment's bytes."""

    frames: list[tuple[int, int, list[StoredRecord]]] = field(default_factory=list)
    """``(start, end, records)`` of each good frame."""
    good_end: int = 0
    """End of the last good frame: the file is truncated here when the tail is damaged."""
    skipped: list[tuple[int, int]] = field(default_factory=list)
    """Damaged ``(start, end)`` byte ranges followed by good frames (kept, not truncated)."""

    @property
    def records(self) -> list[StoredRecord]:
        """Every record of the good frames, in order."""
        return [r for frame in self.frames for r in frame[2]]


def scan_segment(buf: bytes, after_seq: int) -> ScanResult:
    """Parse a segment's frames; records must have sequence numbers above ``after_seq``.

    The first bad frame (short, wrong magic, implausible length, CRC mismatch,
    undecodable, or a sequence number not above the previous one) starts a damaged
    region, and the scan searches for the next good frame. With none after it the
    damage is a torn tail (``good_end`` says where to cut); with one, the damaged range
    goes to ``skipped`` and the scan goes on from there.
    """
    result = ScanResult()
    pos = 0
    last = after_seq
    size = len(buf)
    while pos < size:
        found = frame_at(buf, pos, last)
        if found is not None:
            records, end = found
            result.frames.append((pos, end, records))
            last = records[-1][0]
            pos = result.good_end = end
            continue
        # Damaged region: look for the next frame that checks out.
        probe = pos + 1
        resume = -1
        while True:
            probe = buf.find(MAGIC, probe)
            if probe < 0:
                break
            if frame_at(buf, probe, last) is not None:
                resume = probe
                break
            probe += 1
        if resume < 0:
            break  # a torn or damaged tail: everything from pos is cut
        result.skipped.append((pos, resume))
        pos = resume
    return result


def _array_length(payload_head: bytes) -> int | None:
    """The length of the msgpack array a frame payload starts with, if readable."""
    if not payload_head:
        return None
    first = payload_head[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F
    if first == 0xDC and len(payload_head) >= 3:
        return int.from_bytes(payload_head[1:3], "big")
    if first == 0xDD and len(payload_head) >= 5:
        return int.from_bytes(payload_head[1:5], "big")
    return None


def count_records(buf: bytes | memoryview, start: int, end: int) -> tuple[int, bool]:
    """How many records the damaged bytes ``start .. end`` held, and whether that is exact.

    Walks the frame headers in the range: a frame whose header and array length still
    read plausibly counts its records; anything else makes the count a lower bound.
    """
    count = 0
    pos = start
    exact = True
    while pos < end:
        if end - pos < HEADER_SIZE + 1:
            return count, False
        magic, length, _crc = _HEADER.unpack_from(buf, pos)
        frame_end = pos + HEADER_SIZE + length
        if magic != MAGIC or length > _MAX_PAYLOAD or frame_end > end:
            return count, False
        head = bytes(buf[pos + HEADER_SIZE : pos + HEADER_SIZE + 5])
        n = _array_length(head)
        if n is None or n * 30 > length:  # each record takes at least ~30 bytes
            exact = False
        else:
            count += n
        pos = frame_end
    return count, exact


# -- high-water mark --------------------------------------------------------------------


def encode_hwm(reserved: int, top_segment: int) -> bytes:
    """The bytes of a shard's high-water-mark file."""
    body = _HWM.pack(_HWM_MAGIC, 1, reserved.to_bytes(_SEQ_BYTES, "big"), top_segment)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_hwm(raw: bytes) -> tuple[int, int] | None:
    """``(reserved sequence number, highest segment number)``, or ``None`` if damaged."""
    if len(raw) != HWM_BYTES:
        return None
    body, (crc,) = raw[: _HWM.size], struct.unpack("<I", raw[_HWM.size :])
    if zlib.crc32(body) != crc:
        return None
    magic, version, seq_raw, top_segment = _HWM.unpack(body)
    if magic != _HWM_MAGIC or version != 1:
        return None
    return int.from_bytes(seq_raw, "big"), top_segment


# -- stream metadata --------------------------------------------------------------------


def _pack_value(value: Any) -> Any:
    # msgpack ints stop at 64 bits; hash keys and sequence numbers go far beyond.
    if isinstance(value, int) and not isinstance(value, bool) and not (
        -(2**63) <= value < 2**64
    ):
        return msgpack.ExtType(_BIG_INT_EXT, str(value).encode())
    return value


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _BIG_INT_EXT:
        return int(data)
    return msgpack.ExtType(code, data)


def encode_meta(meta: StreamMeta) -> bytes:
    """The msgpack form of a stream's metadata (field names as keys)."""
    body: dict[str, Any] = {}
    for f in fields(meta):
        value = getattr(meta, f.name)
        if f.name == "shards":
            value = [
                {sf.name: _pack_value(getattr(s, sf.name)) for sf in fields(s)} for s in value
            ]
        body[f.name] = _pack_value(value)
    packed: bytes = msgpack.packb({"v": 1, "stream": body}, use_bin_type=True)
    return packed


def decode_meta(raw: bytes) -> StreamMeta:
    """Inverse of :func:`encode_meta`; unknown keys (from a newer version) are ignored."""
    doc = msgpack.unpackb(raw, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    body = dict(doc["stream"])
    shard_names = {f.name for f in fields(ShardMeta)}
    shards = [
        ShardMeta(**{k: v for k, v in s.items() if k in shard_names}) for s in body["shards"]
    ]
    stream_names = {f.name for f in fields(StreamMeta)}
    body = {k: v for k, v in body.items() if k in stream_names}
    body["shards"] = shards
    return StreamMeta(**body)
