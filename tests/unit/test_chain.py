"""The hash chain as pure functions: every kind of tampering is found at the right event."""

from __future__ import annotations

import enum
import hashlib
import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jitgate.audit.chain import GENESIS, canonical_json, event_hash, verify_rows

Row = tuple[int, str, str, str]


def body(seq: int, kind: str = "grant.requested", **data: object) -> str:
    return canonical_json(
        {
            "seq": seq,
            "ts": "2026-11-28T12:00:00.000Z",
            "type": kind,
            "actor": "agent:a",
            "agent": "a",
            "grant_id": None,
            "data": data,
        }
    )


def chain(bodies: list[str]) -> list[Row]:
    rows: list[Row] = []
    running = GENESIS
    for seq, text in enumerate(bodies, start=1):
        digest = event_hash(running, text)
        rows.append((seq, running, digest, text))
        running = digest
    return rows


def make(n: int) -> list[Row]:
    return chain([body(seq, n=seq) for seq in range(1, n + 1)])


def head(rows: list[Row]) -> tuple[int, str]:
    return (rows[-1][0], rows[-1][2]) if rows else (0, GENESIS)


def test_hash_is_sha256_of_previous_hash_and_body() -> None:
    text = body(1)
    assert event_hash(GENESIS, text) == hashlib.sha256(bytes(32) + text.encode()).hexdigest()


def test_canonical_json_sorts_keys_without_spaces() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


class _Level(enum.IntEnum):
    HIGH = 2


class _Tag(str):
    pass


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 1)
    | st.floats()
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.floats(min_value=1e15, max_value=1e17)
    | st.text()
    | st.text(alphabet=st.characters(codec=None)),  # lone surrogates too
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(st.integers() | st.booleans() | st.none(), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(value=_JSON)
@example(value={"duration_ms": 1e-05, "e-": "0.0000", "n": None})
@example(value=[float("nan"), float("inf"), -0.0, 1e16, 2**64, "\ud800"])
@example(value={"b": 1, 2: "non-str key"})
@example(value={"level": _Level.HIGH, "tag": _Tag("t"), "when": [True, 1]})
def test_canonical_json_is_byte_for_byte_what_json_dumps_wrote(value: object) -> None:
    """orjson writes it, json is the reference: logs written before must still verify and
    every event body stays what json.dumps would have written."""
    try:
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except TypeError as refused:  # keys that cannot be sorted together: refused the same way
        with pytest.raises(TypeError, match=re.escape(str(refused))):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


def test_intact_chain_verifies() -> None:
    rows = make(5)
    result = verify_rows(rows, expected_head=head(rows))
    assert result.ok
    assert (result.checked, result.head_seq, result.head_hash) == (5, 5, rows[-1][2])
    assert result.first_bad_seq is None


def test_empty_chain_verifies() -> None:
    result = verify_rows([], expected_head=(0, GENESIS))
    assert result.ok and result.checked == 0


def test_edited_event() -> None:
    rows = make(5)
    seq, prev, digest, text = rows[2]
    rows[2] = (seq, prev, digest, text.replace('"n":3', '"n":4'))
    result = verify_rows(rows, expected_head=head(make(5)))
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.problem == "event 3 was altered (hash mismatch)"
    assert result.checked == 2


def test_edited_event_with_recomputed_hash_breaks_the_next_link() -> None:
    rows = make(5)
    seq, prev, _, text = rows[2]
    edited = text.replace('"n":3', '"n":4')
    rows[2] = (seq, prev, event_hash(prev, edited), edited)
    result = verify_rows(rows, expected_head=head(make(5)))
    assert result.first_bad_seq == 4
    assert result.problem == ("event 4 does not link to event 3 (inserted, removed or reordered)")


def test_deleted_event() -> None:
    rows = make(5)
    del rows[1]
    result = verify_rows(rows, expected_head=head(make(5)))
    assert result.first_bad_seq == 2
    assert result.problem == "event 2 is missing (next stored event is 3)"


def test_deleted_and_renumbered_event_breaks_the_link() -> None:
    original = make(5)
    rows = [original[0]] + [(seq - 1, p, h, b) for seq, p, h, b in original[2:]]
    result = verify_rows(rows, expected_head=head(original))
    assert result.first_bad_seq == 2
    assert result.problem == "event 2 does not link to event 1 (inserted, removed or reordered)"


def test_inserted_event() -> None:
    original = make(5)
    forged = (3, original[1][2], "f" * 64, body(3, forged=True))
    rows = original[:2] + [forged] + original[2:]
    result = verify_rows(rows, expected_head=head(original))
    assert result.first_bad_seq == 3
    assert result.problem == "event 3 was altered (hash mismatch)"


def test_inserted_event_with_a_valid_hash_is_found_at_the_next_event() -> None:
    original = make(5)
    text = body(3, forged=True)
    forged = (3, original[1][2], event_hash(original[1][2], text), text)
    renumbered = [(seq + 1, p, h, b) for seq, p, h, b in original[2:]]
    rows = original[:2] + [forged] + renumbered
    result = verify_rows(rows, expected_head=head(original))
    assert result.first_bad_seq == 4
    assert result.problem == "event 4 does not link to event 3 (inserted, removed or reordered)"


def test_reordered_events() -> None:
    rows = make(5)
    rows[1], rows[2] = rows[2], rows[1]
    result = verify_rows(rows, expected_head=head(make(5)))
    assert result.first_bad_seq == 2
    assert not result.ok


def test_reordered_events_with_swapped_seq_numbers() -> None:
    original = make(5)
    rows = list(original)
    rows[1] = (2, *original[2][1:])
    rows[2] = (3, *original[1][1:])
    result = verify_rows(rows, expected_head=head(original))
    assert result.first_bad_seq == 2
    assert result.problem == "event 2 does not link to event 1 (inserted, removed or reordered)"


def test_moved_event_with_consistent_hashes_is_caught_by_its_own_seq() -> None:
    # A chain rebuilt by someone who renumbered the rows but kept the bodies.
    bodies = [body(1), body(3), body(2)]
    rows = chain(bodies)
    result = verify_rows(rows)
    assert result.first_bad_seq == 2
    assert result.problem == "event 2 carries a different seq"


def test_truncated_tail() -> None:
    original = make(5)
    result = verify_rows(original[:3], expected_head=head(original))
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.problem == "the chain ends at event 3 but the head records 5 (tail truncated)"


def test_events_beyond_the_recorded_head() -> None:
    original = make(5)
    result = verify_rows(original, expected_head=head(original[:3]))
    assert result.first_bad_seq == 4
    assert result.problem == "the chain head records event 3 but events run to 5"


# --- property: any single change to a random chain is detected -------------------------------

events = st.lists(
    st.dictionaries(
        st.text(alphabet="abcxyz_", min_size=1, max_size=6),
        st.one_of(st.integers(), st.text(max_size=12), st.booleans(), st.none()),
        max_size=4,
    ),
    min_size=1,
    max_size=12,
)


def _rows(data: list[dict[str, object]]) -> list[Row]:
    return chain([body(seq, **d) for seq, d in enumerate(data, start=1)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.data())
def test_any_single_byte_edit_is_detected(
    data: list[dict[str, object]], draw: st.DataObject
) -> None:
    rows = _rows(data)
    expected = head(rows)
    index = draw.draw(st.integers(0, len(rows) - 1))
    field = draw.draw(st.sampled_from([1, 2, 3]))  # prev_hash, hash, body
    row = list(rows[index])
    raw = bytearray(row[field].encode("utf-8"))
    position = draw.draw(st.integers(0, len(raw) - 1))
    replacement = draw.draw(st.integers(0x20, 0x7E).filter(lambda b: b != raw[position]))
    raw[position] = replacement
    row[field] = raw.decode("utf-8", errors="replace")
    if row[field] == rows[index][field]:
        return
    rows[index] = tuple(row)  # type: ignore[assignment]
    result = verify_rows(rows, expected_head=expected)
    assert not result.ok
    assert result.first_bad_seq == index + 1


@settings(max_examples=150, deadline=None)
@given(events, st.data())
def test_any_single_byte_deletion_is_detected(
    data: list[dict[str, object]], draw: st.DataObject
) -> None:
    rows = _rows(data)
    expected = head(rows)
    index = draw.draw(st.integers(0, len(rows) - 1))
    seq, prev, digest, text = rows[index]
    position = draw.draw(st.integers(0, len(text) - 1))
    rows[index] = (seq, prev, digest, text[:position] + text[position + 1 :])
    result = verify_rows(rows, expected_head=expected)
    assert not result.ok
    assert result.first_bad_seq == index + 1


@settings(max_examples=150, deadline=None)
@given(events.filter(lambda d: len(d) >= 2), st.data())
def test_any_swap_of_two_events_is_detected(
    data: list[dict[str, object]], draw: st.DataObject
) -> None:
    rows = _rows(data)
    expected = head(rows)
    first = draw.draw(st.integers(0, len(rows) - 2))
    second = draw.draw(st.integers(first + 1, len(rows) - 1))
    renumber = draw.draw(st.booleans())
    a, b = rows[first], rows[second]
    if renumber:  # keep the seq column in order, swap everything else
        rows[first], rows[second] = (a[0], *b[1:]), (b[0], *a[1:])
    else:
        rows[first], rows[second] = b, a
    result = verify_rows(rows, expected_head=expected)
    assert not result.ok
    assert result.first_bad_seq == first + 1


@settings(max_examples=100, deadline=None)
@given(events, st.data())
def test_any_removed_event_is_detected(data: list[dict[str, object]], draw: st.DataObject) -> None:
    rows = _rows(data)
    expected = head(rows)
    index = draw.draw(st.integers(0, len(rows) - 1))
    del rows[index]
    result = verify_rows(rows, expected_head=expected)
    assert not result.ok
    assert result.first_bad_seq == index + 1
