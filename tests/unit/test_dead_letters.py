"""Dead letters for operators: selection, tables, bytes shown safely, replay bookkeeping."""

import base64
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from gridflex import REPO_ROOT
from gridflex.codec import RecordCodec, SchemaRegistry
from gridflex.dead_letters import (
    DEAD_LETTER_TOPIC, REPLAYED_FROM, DeadLetter, DeadLetterRef, Selection, bytes_json, hex_dump, list_json,
    list_table, parse_instant, plan_replay, render_bytes, replay_headers, replay_mark, replay_scan_start,
    show_lines, summarise, summary_table,
)
from tests.vectors import VECTORS

REGISTRY = SchemaRegistry.from_directory(REPO_ROOT / "schemas")
TOPIC = "gridflex.dead-letters.v1"
NOW = datetime(2025, 7, 16, 12, 0, tzinfo=timezone.utc)
A_READ = VECTORS["gridflex.utility.MeterRead"]


def letter(partition=2, offset=17, **changes) -> DeadLetter:
    fields = {
        "ref": DeadLetterRef(partition, offset), "written_at": NOW + timedelta(seconds=1), "service": "telemetry",
        "source_topic": "utility.meter-reads.v1", "source_partition": 1, "source_offset": 81723,
        "key": b"SA-100234", "value": RecordCodec(REGISTRY, "gridflex.utility.MeterRead").encode(A_READ),
        "reason_code": "NEGATIVE_VALUE", "reason": "value -5.000000 WH is negative", "failed_at": NOW,
    }
    return DeadLetter(**{**fields, **changes})


def test_a_reference_is_partition_colon_offset():
    assert DeadLetterRef.parse("2:1734") == DeadLetterRef(2, 1734)
    assert str(DeadLetterRef(2, 1734)) == "2:1734"
    for bad in ("2", "2:", ":5", "a:b", "-1:3", "2:3:4"):
        with pytest.raises(ValueError):
            DeadLetterRef.parse(bad)


def test_a_dead_letter_comes_from_its_avro_record():
    record = VECTORS["gridflex.ops.DeadLetter"]
    dead = DeadLetter.from_record(DeadLetterRef(0, 3), 1752667201000, record)
    assert dead.source == "utility.meter-reads.v1[2]@81723"
    assert dead.written_at == datetime(2025, 7, 16, 12, 0, 1, tzinfo=timezone.utc)
    assert (dead.key, dead.value, dead.reason_code) == (b"SA-100234", b"\xc3\x01garbage", "UNDECODABLE")


def test_filters_must_all_hold_and_repeated_values_are_alternatives():
    letters = [
        letter(offset=1),
        letter(offset=2, service="enrollment", source_topic="partner.acme.enrollment-requests.v1",
               reason_code="UNKNOWN_ACCOUNT"),
        letter(offset=3, reason_code="UNDECODABLE", failed_at=NOW - timedelta(days=3)),
    ]
    offsets = lambda selection: [x.ref.offset for x in selection.select(letters)]  # noqa: E731
    assert offsets(Selection.of()) == [3, 1, 2]  # oldest failure first
    assert offsets(Selection.of(services=["telemetry"])) == [3, 1]
    assert offsets(Selection.of(services=["telemetry"], reason_codes=["undecodable"])) == [3]
    assert offsets(Selection.of(reason_codes=["UNDECODABLE", "UNKNOWN_ACCOUNT"])) == [3, 2]
    assert offsets(Selection.of(source_topics=["partner.acme.enrollment-requests.v1"])) == [2]
    # since is inclusive, until exclusive, both on failed_at
    assert offsets(Selection.of(since=NOW)) == [1, 2]
    assert offsets(Selection.of(until=NOW)) == [3]
    assert offsets(Selection.of(refs=[DeadLetterRef(2, 2), DeadLetterRef(3, 1)])) == [2]
    assert Selection.of().everything and not Selection.of(since=NOW).everything


def test_an_isolated_runs_source_topic_matches_with_or_without_its_suffix():
    suffixed = letter(source_topic="utility.meter-reads.v1-test-1234")
    assert Selection.of(source_topics=["utility.meter-reads.v1"], topic_suffix="-test-1234").matches(suffixed)
    assert Selection.of(source_topics=["utility.meter-reads.v1-test-1234"]).matches(suffixed)
    assert not Selection.of(source_topics=["utility.meter-reads.v1"]).matches(suffixed)


def test_since_and_until_take_durations_or_iso_times():
    assert parse_instant("7d", NOW) == NOW - timedelta(days=7)
    assert parse_instant("36h", NOW) == NOW - timedelta(hours=36)
    assert parse_instant("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_instant("2025-07-15", NOW) == datetime(2025, 7, 15, tzinfo=timezone.utc)
    assert parse_instant("2025-07-15T21:00:00Z", NOW) == datetime(2025, 7, 15, 21, tzinfo=timezone.utc)
    assert parse_instant("2025-07-15T14:00:00-07:00", NOW) == datetime(2025, 7, 15, 21, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        parse_instant("yesterday", NOW)


def test_the_list_shows_where_when_who_and_why_but_never_keys_or_values():
    long_reason = "account SA-100234 is not known to the enrollment service; " * 3
    lines = list_table([letter(reason=long_reason)], reason_width=40)
    assert lines[0].split() == ["DEAD", "LETTER", "FAILED", "AT", "SERVICE", "SOURCE", "REASON", "CODE", "REASON"]
    cells = re.split(r"\s{2,}", lines[1])
    assert cells[:5] == ["2:17", "2025-07-16T12:00:00Z", "telemetry", "utility.meter-reads.v1[1]@81723", "NEGATIVE_VALUE"]
    assert cells[5].endswith("…") and len(cells[5]) == 40  # the reason, shortened
    document = list_json(letter())
    assert "key" not in document and "value" not in document
    assert (document["key_bytes"], document["value_bytes"]) == (9, len(letter().value))
    assert document["dead_letter"] == "2:17" and document["failed_at"] == "2025-07-16T12:00:00Z"
    assert "SA-100234" not in "".join(list_table([letter()]))


def test_the_summary_counts_per_service_and_reason_code():
    letters = [letter(offset=1), letter(offset=2, failed_at=NOW + timedelta(hours=2)),
               letter(offset=3, reason_code="UNDECODABLE"), letter(offset=4, service="enrollment")]
    rows = summarise(letters)
    assert [(r.service, r.reason_code, r.count) for r in rows] == [
        ("telemetry", "NEGATIVE_VALUE", 2), ("enrollment", "NEGATIVE_VALUE", 1), ("telemetry", "UNDECODABLE", 1)]
    assert (rows[0].first_failed_at, rows[0].last_failed_at) == (NOW, NOW + timedelta(hours=2))
    assert summary_table(rows)[-1].split() == ["total", "4"]


def test_avro_of_a_known_schema_is_decoded_with_the_codec():
    rendered = render_bytes(letter().value, REGISTRY)
    assert (rendered.kind, rendered.note) == ("avro", "gridflex.utility.MeterRead")
    assert rendered.decoded["service_account_id"] == "SA-100234"
    assert rendered.decoded["value"] == str(A_READ["value"])  # decimals as text, times in ISO 8601
    assert rendered.decoded["interval_start"].endswith("Z")


def test_bytes_that_are_not_decodable_are_shown_as_hex_with_why():
    unknown = render_bytes(b"\xc3\x01" + bytes(8) + b"\x02", REGISTRY)
    assert unknown.kind == "binary" and "unknown writer schema fingerprint 0000000000000000" in unknown.note
    corrupt = render_bytes(b"\xc3\x01" + REGISTRY.current["gridflex.utility.MeterRead"].fingerprint + b"\xff", REGISTRY)
    assert corrupt.kind == "binary" and corrupt.note.startswith("UNDECODABLE")
    confluent = render_bytes(b"\x00\x00\x00\x00\x2a\x02\x04", REGISTRY)
    assert "Confluent" in confluent.note and "schema id 42" in confluent.note
    binary = render_bytes(bytes(range(250, 256)) + b"AB", REGISTRY)
    assert binary.kind == "binary" and binary.text == "00000000  fa fb fc fd fe ff 41 42" + " " * 24 + "  |......AB|"


def test_text_and_json_are_shown_as_themselves():
    assert (render_bytes(b"garbage").kind, render_bytes(b"garbage").text) == ("text", "garbage")
    assert render_bytes('café crème'.encode()).kind == "text"
    document = render_bytes(b'{"service_account_id": "SA-1", "kwh": 1.5}')
    assert document.kind == "json" and document.decoded == {"service_account_id": "SA-1", "kwh": 1.5}
    # Control characters are not text: a terminal must not interpret them.
    assert render_bytes(b"SA-1\x1b[2J").kind == "binary"
    assert render_bytes(b"").kind == "empty" and render_bytes(None).kind == "null"


def test_hex_dump_lines_are_sixteen_bytes():
    lines = hex_dump(bytes(range(40)))
    assert [line[:8] for line in lines] == ["00000000", "00000010", "00000020"]
    assert lines[2].endswith("|" + "".join(chr(b) if 32 <= b < 127 else "." for b in range(32, 40)) + "|")


def test_show_prints_every_field_with_key_and_value_decoded():
    text = "\n".join(show_lines(letter(), TOPIC, REGISTRY))
    for expected in ("2:17 on gridflex.dead-letters.v1", "telemetry", "utility.meter-reads.v1 partition 1 offset 81723",
                     "NEGATIVE_VALUE", "value -5.000000 WH is negative", "2025-07-16T12:00:00Z",
                     "key            9 bytes, text: SA-100234", "avro (gridflex.utility.MeterRead)",
                     '"meter_id": "M-88123"', "replays        none"):
        assert expected in text
    exact = bytes_json(letter().value, REGISTRY)
    assert base64.b64decode(exact["base64"]) == letter().value and exact["kind"] == "avro"


def test_a_replay_names_its_dead_letter_in_headers_that_are_found_again():
    headers = replay_headers(TOPIC, DeadLetterRef(2, 17), NOW)
    assert (REPLAYED_FROM, b"2:17") in headers and (DEAD_LETTER_TOPIC, TOPIC.encode()) in headers
    mark = replay_mark("utility.meter-reads.v1", 1, 90000, 1752667200000, headers, TOPIC)
    assert (mark.ref, mark.topic, mark.partition, mark.offset, mark.at) == (
        DeadLetterRef(2, 17), "utility.meter-reads.v1", 1, 90000, NOW)
    # Ordinary records, and replays from another system's dead-letter topic, are not replays of ours.
    assert replay_mark("utility.meter-reads.v1", 1, 5, 0, [], TOPIC) is None
    assert replay_mark("utility.meter-reads.v1", 1, 5, 0, replay_headers(TOPIC + "-test-1", DeadLetterRef(2, 17), NOW),
                       TOPIC) is None


def test_a_dead_letter_replayed_before_is_refused_unless_forced():
    first, second, gone = letter(offset=1, source_offset=10), letter(offset=2, source_offset=11), letter(offset=3)
    earlier = replay_mark("utility.meter-reads.v1", 1, 90000, 1752667200000,
                          replay_headers(TOPIC, first.ref, NOW), TOPIC)
    missing = {gone.ref: "topic utility.meter-reads.v1 has no partition 1"}
    plan = plan_replay([second, first, gone], [earlier], missing)
    assert [x.ref.offset for x in plan.send] == [2]
    assert [(x.ref.offset, marks) for x, marks in plan.already_replayed] == [(1, [earlier])]
    assert [(x.ref.offset, why) for x, why in plan.unreplayable] == [(3, missing[gone.ref])]
    assert plan.refused == 2
    # --force: in the originals' order on their partition
    assert [x.ref.offset for x in plan_replay([second, first], [earlier], {}, force=True).send] == [1, 2]


def test_earlier_replays_are_looked_for_after_the_original_and_the_dead_letter():
    letters = [letter(source_offset=500, written_at=NOW), letter(source_offset=20, written_at=NOW + timedelta(days=1))]
    offset, since = replay_scan_start(letters)
    assert offset == 21
    assert since == NOW - timedelta(hours=1)  # less the clock skew allowed between machines


def test_decimal_values_survive_json():
    assert render_bytes(RecordCodec(REGISTRY, "gridflex.utility.MeterRead").encode(
        {**A_READ, "value": Decimal("-5.000000")}), REGISTRY).decoded["value"] == "-5.000000"
