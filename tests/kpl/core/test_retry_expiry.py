"""ProducerCore: failed entries and requests, retries, record_ttl, shutdown."""

from __future__ import annotations

import pytest

from kpl.config import ProducerConfig
from kpl.core.pipeline import RecordResult
from kpl.errors import NetworkError, ProducerClosed, RecordFailed, ValidationException
from tests.kpl.core.harness import Harness, even_shards


def test_only_failed_entries_are_retried() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False))
    for i in range(10):
        h.put(f"{i}".encode(), f"k{i}")
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(
        request,
        inject=lambda _e, i: "ProvisionedThroughputExceededException" if i in (2, 7) else None,
    )
    assert len(h.outcomes) == 8
    assert h.core.buffered_records == 2
    h.run()
    assert len(h.stored) == 10  # nothing sent twice
    retried = [o for o in h.outcomes.values() if len(o.attempts) == 2]
    assert len(retried) == 2
    for outcome in retried:
        assert isinstance(outcome, RecordResult)
        first, second = outcome.attempts
        assert first.error_code == "ProvisionedThroughputExceededException"
        assert not first.success
        assert second.success
    assert h.core.metrics()["ErrorsByCode.ProvisionedThroughputExceededException"] == 2
    assert h.core.metrics()["RetriesPerRecord"] == pytest.approx(0.2)


def test_retry_waits_for_backoff() -> None:
    h = Harness(
        config=ProducerConfig(
            aggregation_enabled=False, min_backoff=1.0, max_backoff=1.0, jitter="decorrelated"
        )
    )
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request, inject=lambda _e, _i: "InternalFailure")
    while not (poll := h.poll()).requests:
        assert poll.deadline is not None
        assert poll.deadline <= 1.0 + 1e-9
        h.now = poll.deadline
    assert h.now == pytest.approx(1.0)


def test_whole_request_failure_retries_every_entry() -> None:
    h = Harness(config=ProducerConfig(aggregation_enabled=False))
    for i in range(5):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.fail(request, NetworkError("connection refused"))
    assert not h.outcomes
    h.run()
    assert len(h.outcomes) == 5
    assert all(o.attempts[0].error_code == "NetworkError" for o in h.outcomes.values())


def test_non_retryable_errors_fail_at_once_each_with_its_own_exception() -> None:
    h = Harness()
    for i in range(5):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    requests = h.poll().requests
    for request in requests:
        h.fail(request, ValidationException("1 validation error detected"))
    failures = list(h.outcomes.values())
    assert len(failures) == 5
    assert len({id(f) for f in failures}) == 5
    for failure in failures:
        assert isinstance(failure, RecordFailed)
        assert failure.code == "ValidationException"
        assert isinstance(failure.cause, ValidationException)
        assert [a.error_code for a in failure.attempts] == ["ValidationException"]
    assert h.core.buffered_records == 0


def test_fail_if_throttled() -> None:
    h = Harness(config=ProducerConfig(fail_if_throttled=True))
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request, inject=lambda _e, _i: "ProvisionedThroughputExceededException")
    (failure,) = h.outcomes.values()
    assert isinstance(failure, RecordFailed)
    assert failure.code == "ProvisionedThroughputExceededException"


def test_malformed_response_is_retried() -> None:
    h = Harness()
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h._resolve(h.core.on_response(request, {"Records": []}, h.now))
    assert not h.outcomes
    h.run()
    (outcome,) = h.outcomes.values()
    assert isinstance(outcome, RecordResult)
    assert outcome.attempts[0].error_code == "MalformedResponse"


def test_entry_without_shard_id_is_retried() -> None:
    h = Harness()
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h._resolve(h.core.on_response(request, {"Records": [{"SequenceNumber": "1"}]}, h.now))
    h.unanswered.remove(request)
    assert not h.outcomes
    h.run()
    (outcome,) = h.outcomes.values()
    assert isinstance(outcome, RecordResult)


def test_a_bug_in_the_shell_fails_records_with_its_name() -> None:
    h = Harness()
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.fail(request, RuntimeError("oops"))
    (failure,) = h.outcomes.values()
    assert isinstance(failure, RecordFailed)
    assert failure.code == "RuntimeError"
    assert isinstance(failure.cause, RuntimeError)


def test_answers_to_unknown_requests_are_ignored() -> None:
    h = Harness()
    h.put()
    h.core.flush(h.now)
    (request,) = h.poll().requests
    h.answer(request)
    assert h.core.on_response(request, {"Records": []}, h.now) == []
    assert h.core.on_error(request, NetworkError("late"), h.now) == []


def test_a_dead_endpoint_fails_every_record_within_the_ttl() -> None:
    h = Harness(config=ProducerConfig(record_ttl=5.0))
    for i in range(300):
        h.put(key=f"k{i}")
    while h.core.buffered_records:
        poll = h.poll()
        for request in poll.requests:
            h.fail(request, NetworkError("connection refused"))
        if not poll.requests:
            assert poll.deadline is not None
            h.now = poll.deadline
    assert h.now <= 5.0 + 0.5  # the TTL, plus at most one sweep interval
    assert len(h.outcomes) == 300
    for failure in h.outcomes.values():
        assert isinstance(failure, RecordFailed)
        assert failure.code == "Expired"
        assert failure.message == "not delivered within record_ttl of 5.0s"
        assert failure.attempts
        assert all(a.error_code == "NetworkError" for a in failure.attempts)
    assert h.core.metrics()["UserRecordExpired"] == 300


def test_records_stuck_behind_a_hung_request_expire() -> None:
    h = Harness(
        config=ProducerConfig(
            record_ttl=2.0, max_connections=1, aggregation_enabled=False, collection_max_count=1
        )
    )
    h.put(key="a")
    h.put(key="b")
    h.core.flush(h.now)
    (hung,) = h.poll().requests
    h.now = 2.5
    h.poll()
    assert [h.outcomes[2].code] == ["Expired"]  # type: ignore[union-attr]
    h.fail(hung, NetworkError("timeout"))
    assert h.outcomes[1].code == "Expired"  # type: ignore[union-attr]
    assert h.core.buffered_records == 0


def test_partly_expired_aggregate_is_rebuilt_with_the_live_records() -> None:
    h = Harness(
        shards=even_shards(1),
        config=ProducerConfig(record_ttl=2.0, max_connections=1, record_max_buffered_time=0.1),
    )
    h.put(b"blocker", "k0")
    h.core.flush(h.now)
    (hung,) = h.poll().requests  # the only slot stays busy
    h.now = 0.5
    old = [h.put(b"old", f"old{i}") for i in range(3)]
    h.now = 1.5
    young = [h.put(b"young", f"young{i}") for i in range(3)]
    h.core.flush(h.now)
    h.now = 2.6  # the old ones are past their TTL; the young ones are not
    h.poll()
    assert all(getattr(h.outcomes.get(x), "code", None) == "Expired" for x in old)
    assert not any(x in h.outcomes for x in young)
    h.answer(hung)
    h.run()
    assert all(isinstance(h.outcomes[x], RecordResult) for x in young)
    young_stored = [d for _s, _k, d, _ in h.user_records_stored() if d == b"young"]
    assert len(young_stored) == 3
    assert h.core.buffered_records == 0


def test_fail_all_fails_buffered_and_in_flight_records() -> None:
    h = Harness()
    for i in range(10):
        h.put(key=f"k{i}")
    h.core.flush(h.now)
    requests = h.poll().requests
    for i in range(5):
        h.put(key=f"later{i}")
    h._resolve(h.core.fail_all(ProducerClosed("producer closed"), h.now))
    assert len(h.outcomes) == 15
    assert all(
        isinstance(o, RecordFailed) and o.code == "ProducerClosed" for o in h.outcomes.values()
    )
    assert (h.core.buffered_records, h.core.in_flight) == (0, 0)
    for request in requests:
        assert h.core.on_response(request, {"Records": []}, h.now) == []
