"""Dead letters for operators: list, summarise, show and replay ``gridflex.dead-letters.v1``.

The first half is pure (selection, tables, safe rendering of bytes, replay bookkeeping); the
second half is the Kafka adapter that reads the topic up to its current end and re-publishes.

Where a replay is recorded: on the replayed record itself. A replay goes back to the source
topic *and partition* the original came from, with the headers ``gridflex-replayed-from:
<partition>:<offset>`` and ``gridflex-dead-letter-topic: <topic>``. The record and its evidence
are one write, so no crash can leave a replay unrecorded (a separate ledger topic would need a
transaction for that), and nothing new is added to the catalogue. An earlier replay of a dead
letter can only sit in that partition after the original's offset and after the dead letter
was written, so the check reads only that stretch (Kafka's time index finds its start).
"""

from __future__ import annotations

import base64
import json
import re
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from gridflex.codec import HEADER_LENGTH, MAGIC, RecordCodec, SchemaRegistry, Undecodable
from gridflex.settings import ServiceSettings
from gridflex.topics import DEAD_LETTERS

REPLAYED_FROM = "gridflex-replayed-from"
DEAD_LETTER_TOPIC = "gridflex-dead-letter-topic"
REPLAYED_AT = "gridflex-replayed-at"
# How far the clock of the replaying machine may lag the one of the service that wrote the dead
# letter, and an earlier replay still be found.
CLOCK_SKEW = timedelta(hours=1)
REASON_WIDTH = 60


# -- the records ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class DeadLetterRef:
    """Where a dead letter is on the dead-letter topic: ``<partition>:<offset>``."""

    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> "DeadLetterRef":
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
        if not match:
            raise ValueError(f"{text!r} is not <partition>:<offset>, e.g. 2:1734")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True)
class DeadLetter:
    """One ``gridflex.ops.DeadLetter`` and where it is."""

    ref: DeadLetterRef
    written_at: datetime  # the dead-letter record's Kafka timestamp (the writer's wall clock)
    service: str
    source_topic: str  # the full name, as the service read it
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes
    reason_code: str
    reason: str
    failed_at: datetime

    @classmethod
    def from_record(cls, ref: DeadLetterRef, timestamp_ms: int, record: Mapping[str, Any]) -> "DeadLetter":
        return cls(
            ref=ref, written_at=_from_ms(timestamp_ms), service=record["service"],
            source_topic=record["source_topic"], source_partition=record["source_partition"],
            source_offset=record["source_offset"], key=record["key"], value=record["value"],
            reason_code=record["reason_code"], reason=record["reason"], failed_at=record["failed_at"],
        )

    @property
    def source(self) -> str:
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"


@dataclass(frozen=True)
class UnreadableDeadLetter:
    """A record on the dead-letter topic that is not a DeadLetter (reported, never skipped silently)."""

    ref: DeadLetterRef
    reason: str


# -- selection -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operator means: every given criterion must hold (repeated values of
    one criterion are alternatives). Times bound ``failed_at``: since inclusive, until exclusive."""

    services: frozenset[str] = frozenset()
    reason_codes: frozenset[str] = frozenset()
    source_topics: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    refs: frozenset[DeadLetterRef] = frozenset()
    topic_suffix: str = ""  # an isolated run's topics: --source-topic matches with or without it

    @classmethod
    def of(cls, services: Iterable[str] = (), reason_codes: Iterable[str] = (), source_topics: Iterable[str] = (),
           since: datetime | None = None, until: datetime | None = None, refs: Iterable[DeadLetterRef] = (),
           topic_suffix: str = "") -> "Selection":
        return cls(frozenset(services), frozenset(code.upper() for code in reason_codes), frozenset(source_topics),
                   since, until, frozenset(refs), topic_suffix)

    @property
    def everything(self) -> bool:
        return not (self.services or self.reason_codes or self.source_topics or self.since or self.until
                    or self.refs)

    def matches(self, letter: DeadLetter) -> bool:
        if self.refs and letter.ref not in self.refs:
            return False
        if self.services and letter.service not in self.services:
            return False
        if self.reason_codes and letter.reason_code.upper() not in self.reason_codes:
            return False
        if self.source_topics and not self._topic_matches(letter.source_topic):
            return False
        if self.since is not None and letter.failed_at < self.since:
            return False
        if self.until is not None and letter.failed_at >= self.until:
            return False
        return True

    def _topic_matches(self, topic: str) -> bool:
        if topic in self.source_topics:
            return True
        return bool(self.topic_suffix) and topic.removesuffix(self.topic_suffix) in self.source_topics

    def select(self, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
        """The matching letters, oldest failure first."""
        return sorted((letter for letter in letters if self.matches(letter)), key=lambda x: (x.failed_at, x.ref))


_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_instant(text: str, now: datetime) -> datetime:
    """``7d``, ``36h``, ``90m`` (that long before ``now``), or an ISO 8601 date or time (UTC when
    it names no zone)."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now - timedelta(**{_UNITS[relative[2]]: int(relative[1])})
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (7d, 36h, 90m) nor an ISO 8601 date or time") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=timezone.utc)


# -- tables --------------------------------------------------------------------------------------


def truncate(text: str, width: int) -> str:
    text = " ".join(text.split())  # a reason on one line
    return text if len(text) <= width else text[:width - 1] + "…"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    return [
        ("  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1]).rstrip()
        for row in [list(header), *rows]
    ]


def list_table(letters: Iterable[DeadLetter], reason_width: int = REASON_WIDTH) -> list[str]:
    """The ``list`` table: where, when, who, from where, why. Never keys nor values (personal data)."""
    return table(
        ("DEAD LETTER", "FAILED AT", "SERVICE", "SOURCE", "REASON CODE", "REASON"),
        ((str(x.ref), _iso(x.failed_at), x.service, x.source, x.reason_code, truncate(x.reason, reason_width))
         for x in letters),
    )


def list_json(letter: DeadLetter) -> dict:
    """One dead letter for scripts, without its key and value (only their sizes)."""
    return {
        "dead_letter": str(letter.ref), "partition": letter.ref.partition, "offset": letter.ref.offset,
        "failed_at": _iso(letter.failed_at), "written_at": _iso(letter.written_at), "service": letter.service,
        "source_topic": letter.source_topic, "source_partition": letter.source_partition,
        "source_offset": letter.source_offset, "reason_code": letter.reason_code, "reason": letter.reason,
        "key_bytes": None if letter.key is None else len(letter.key), "value_bytes": len(letter.value),
    }


@dataclass(frozen=True)
class SummaryRow:
    service: str
    reason_code: str
    count: int
    first_failed_at: datetime
    last_failed_at: datetime


def summarise(letters: Iterable[DeadLetter]) -> list[SummaryRow]:
    """Count per service × reason code, most frequent first."""
    counts: Counter[tuple[str, str]] = Counter()
    first: dict[tuple[str, str], datetime] = {}
    last: dict[tuple[str, str], datetime] = {}
    for letter in letters:
        group = (letter.service, letter.reason_code)
        counts[group] += 1
        first[group] = min(first.get(group, letter.failed_at), letter.failed_at)
        last[group] = max(last.get(group, letter.failed_at), letter.failed_at)
    return [SummaryRow(service, code, count, first[service, code], last[service, code])
            for (service, code), count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def summary_table(rows: Sequence[SummaryRow]) -> list[str]:
    total = sum(row.count for row in rows)
    return table(
        ("SERVICE", "REASON CODE", "COUNT", "FIRST FAILED AT", "LAST FAILED AT"),
        [*((row.service, row.reason_code, row.count, _iso(row.first_failed_at), _iso(row.last_failed_at))
           for row in rows), ("total", "", total, "", "")],
    )


def summary_json(row: SummaryRow) -> dict:
    return {"service": row.service, "reason_code": row.reason_code, "count": row.count,
            "first_failed_at": _iso(row.first_failed_at), "last_failed_at": _iso(row.last_failed_at)}


# -- bytes, shown safely ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedBytes:
    """Bytes as a person can read them, and how they were read."""

    kind: str  # null, empty, avro, json, text or binary
    text: str
    note: str = ""  # the Avro record name, or why the bytes could not be decoded
    decoded: Any = None  # the Avro record or JSON document, JSON-ready

    def lines(self, size: int) -> list[str]:
        what = {"null": "null", "empty": "0 bytes"}.get(self.kind, f"{size} bytes, {self.kind}")
        head = what + (f" ({self.note})" if self.note else "")
        if self.kind in ("null", "empty"):
            return [head]
        if self.kind == "text" and "\n" not in self.text:
            return [f"{head}: {self.text}"]
        return [f"{head}:", *("  " + line for line in self.text.splitlines())]


_PRINTABLE = set(string.printable) - set("\x0b\x0c")


def render_bytes(data: bytes | None, registry: SchemaRegistry | None = None) -> RenderedBytes:
    """Decode ``data`` the first way that fits: Avro single-object encoding of a known schema (the
    project's codec), UTF-8 JSON, printable UTF-8 text; otherwise a hex dump."""
    if data is None:
        return RenderedBytes("null", "")
    if not data:
        return RenderedBytes("empty", "")
    note = ""
    if data[:2] == MAGIC and len(data) >= HEADER_LENGTH:
        writer = registry.by_fingerprint.get(data[2:HEADER_LENGTH]) if registry else None
        if writer is None:
            note = f"Avro single-object encoding, unknown writer schema fingerprint {data[2:HEADER_LENGTH].hex()}"
        else:
            value = RecordCodec(registry, writer.name).decode(data)
            if not isinstance(value, Undecodable):
                decoded = jsonable(value)
                return RenderedBytes("avro", json.dumps(decoded, indent=2, ensure_ascii=False), writer.name, decoded)
            note = f"{value.reason_code}: {value.reason}"
    elif data[0] == 0 and len(data) > 5:
        note = (f"looks like Confluent Schema Registry framing, schema id {int.from_bytes(data[1:5], 'big')}; "
                "gridflex uses Avro single-object encoding and has no registry to decode it")
    if not note:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and all(ch in _PRINTABLE or (ord(ch) > 127 and ch.isprintable()) for ch in text):
            try:
                document = json.loads(text)
            except ValueError:
                return RenderedBytes("text", text)
            return RenderedBytes("json", json.dumps(document, indent=2, ensure_ascii=False), decoded=document)
    return RenderedBytes("binary", "\n".join(hex_dump(data)), note)


def hex_dump(data: bytes, width: int = 16) -> list[str]:
    """``xxd``-style lines: offset, hex bytes, printable ASCII."""
    lines = []
    for start in range(0, len(data), width):
        chunk = data[start:start + width]
        hexes = " ".join(f"{byte:02x}" for byte in chunk)
        ascii_ = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{start:08x}  {hexes:<{width * 3 - 1}}  |{ascii_}|")
    return lines


def jsonable(value: Any) -> Any:
    """A decoded Avro value as JSON: times in ISO 8601, decimals as strings, bytes in base64."""
    if isinstance(value, Mapping):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # UUIDs and the like


def bytes_json(data: bytes | None, registry: SchemaRegistry | None) -> dict | None:
    """Exact bytes (base64) and their readable form, for ``show --json``."""
    if data is None:
        return None
    rendered = render_bytes(data, registry)
    shown = rendered.decoded if rendered.decoded is not None else rendered.text
    return {"bytes": len(data), "base64": base64.b64encode(data).decode(), "kind": rendered.kind,
            "note": rendered.note or None, "decoded": shown if rendered.kind in ("avro", "json", "text") else None}


def show_lines(letter: DeadLetter, dead_letter_topic: str, registry: SchemaRegistry | None,
               marks: Sequence["ReplayMark"] = (), unreplayable: str | None = None) -> list[str]:
    """``show``: every field, key and value decoded when they can be, and the earlier replays."""
    lines = [
        f"dead letter    {letter.ref} on {dead_letter_topic} (written {_iso(letter.written_at)})",
        f"service        {letter.service}",
        f"source         {letter.source_topic} partition {letter.source_partition} offset {letter.source_offset}",
        f"reason code    {letter.reason_code}",
        f"reason         {letter.reason}",
        f"failed at      {_iso(letter.failed_at)}",
    ]
    for name, data in (("key", letter.key), ("value", letter.value)):
        size = 0 if data is None else len(data)
        first, *rest = render_bytes(data, registry).lines(size)
        lines += [f"{name:<15}{first}", *rest]
    mine = [mark for mark in marks if mark.ref == letter.ref]
    if unreplayable:
        lines.append(f"replays        cannot be replayed: {unreplayable}")
    elif mine:
        lines += [f"replays        {len(mine)}:", *(f"  {mark.describe()}" for mark in mine)]
    else:
        lines.append("replays        none")
    return lines


def show_json(letter: DeadLetter, dead_letter_topic: str, registry: SchemaRegistry | None,
              marks: Sequence["ReplayMark"] = (), unreplayable: str | None = None) -> dict:
    document = list_json(letter)
    del document["key_bytes"], document["value_bytes"]
    document["dead_letter_topic"] = dead_letter_topic
    document["key"] = bytes_json(letter.key, registry)
    document["value"] = bytes_json(letter.value, registry)
    document["replays"] = [_mark_json(mark) for mark in marks if mark.ref == letter.ref]
    document["unreplayable"] = unreplayable
    return document


# -- replays -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayMark:
    """A record on a source topic that is the replay of a dead letter (found by its headers)."""

    dead_letter_topic: str
    ref: DeadLetterRef
    topic: str
    partition: int
    offset: int
    at: datetime

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset} at {_iso(self.at)}"


def replay_headers(dead_letter_topic: str, ref: DeadLetterRef, now: datetime) -> list[tuple[str, bytes]]:
    return [(REPLAYED_FROM, str(ref).encode()), (DEAD_LETTER_TOPIC, dead_letter_topic.encode()),
            (REPLAYED_AT, _iso(now).encode())]


def replay_mark(topic: str, partition: int, offset: int, timestamp_ms: int,
                headers: Sequence[tuple[str, bytes]] | None, dead_letter_topic: str) -> ReplayMark | None:
    """The replay a source record carries, if it is one of ``dead_letter_topic``'s."""
    found = {name: value for name, value in headers or ()}
    if REPLAYED_FROM not in found:
        return None
    origin = found.get(DEAD_LETTER_TOPIC, dead_letter_topic.encode()).decode(errors="replace")
    if origin != dead_letter_topic:
        return None
    try:
        ref = DeadLetterRef.parse(found[REPLAYED_FROM].decode(errors="replace"))
    except ValueError:
        return None
    return ReplayMark(origin, ref, topic, partition, offset, _from_ms(timestamp_ms))


@dataclass
class ReplayPlan:
    """What ``replay`` sends and what it refuses, in the order it sends (per source partition,
    the originals' order)."""

    send: list[DeadLetter] = field(default_factory=list)
    already_replayed: list[tuple[DeadLetter, list[ReplayMark]]] = field(default_factory=list)
    unreplayable: list[tuple[DeadLetter, str]] = field(default_factory=list)

    @property
    def refused(self) -> int:
        return len(self.already_replayed) + len(self.unreplayable)

    def lines(self) -> list[str]:
        """The plan as a table: each selected dead letter, replayed or refused and why."""
        rows = [(str(x.ref), "replay", x.source, "") for x in self.send]
        rows += [(str(x.ref), "refused", x.source, "replayed before: " + "; ".join(m.describe() for m in marks)
                  + " (--force replays again)") for x, marks in self.already_replayed]
        rows += [(str(x.ref), "refused", x.source, why) for x, why in self.unreplayable]
        return table(("DEAD LETTER", "ACTION", "SOURCE", "NOTE"), rows) if rows else []

    def counts(self) -> str:
        topics = {x.source_topic for x in self.send}
        return (f"{len(self.send)} to replay to {len(topics)} topic(s), {len(self.already_replayed)} replayed before, "
                f"{len(self.unreplayable)} without a source partition")


def plan_replay(letters: Iterable[DeadLetter], marks: Iterable[ReplayMark], missing: Mapping[DeadLetterRef, str],
                force: bool = False) -> ReplayPlan:
    """Refuse letters replayed before (unless ``force``) and those whose source partition is gone."""
    earlier: dict[DeadLetterRef, list[ReplayMark]] = {}
    for mark in marks:
        earlier.setdefault(mark.ref, []).append(mark)
    plan = ReplayPlan()
    for letter in sorted(letters, key=lambda x: (x.source_topic, x.source_partition, x.source_offset, x.ref)):
        if letter.ref in missing:
            plan.unreplayable.append((letter, missing[letter.ref]))
        elif letter.ref in earlier and not force:
            plan.already_replayed.append((letter, earlier[letter.ref]))
        else:
            plan.send.append(letter)
    return plan


def replay_json(plan: ReplayPlan, landed: Sequence[ReplayMark], dry_run: bool) -> list[dict]:
    """``replay --json``: one object per selected dead letter, with what happened to it."""
    where = {mark.ref: mark for mark in landed}
    documents = []
    for letter in plan.send:
        outcome = "would-replay" if dry_run else ("replayed" if letter.ref in where else "not-sent")
        document = {"dead_letter": str(letter.ref), "outcome": outcome, "source": letter.source}
        if letter.ref in where:
            document["replay"] = _mark_json(where[letter.ref])
        documents.append(document)
    for letter, marks in plan.already_replayed:
        documents.append({"dead_letter": str(letter.ref), "outcome": "already-replayed", "source": letter.source,
                          "earlier": [_mark_json(mark) for mark in marks]})
    for letter, why in plan.unreplayable:
        documents.append({"dead_letter": str(letter.ref), "outcome": "unreplayable", "source": letter.source,
                          "reason": why})
    return documents


def _mark_json(mark: ReplayMark) -> dict:
    return {"topic": mark.topic, "partition": mark.partition, "offset": mark.offset, "at": _iso(mark.at)}


def replay_scan_start(letters: Iterable[DeadLetter]) -> tuple[int, datetime]:
    """Where earlier replays of ``letters`` (all from one source partition) can begin: after the
    first original's offset, and not before the first dead letter was written (less clock skew)."""
    letters = list(letters)
    return (min(x.source_offset for x in letters) + 1, min(x.written_at for x in letters) - CLOCK_SKEW)


def _iso(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _from_ms(timestamp_ms: int) -> datetime:
    return datetime.fromtimestamp(timestamp_ms / 1000, timezone.utc)


# -- Kafka ---------------------------------------------------------------------------------------


class DeadLetterReadTimeout(TimeoutError):
    """The topic could not be read up to its end in time (is the broker overloaded?)."""


class DeadLetterTopic:
    """The dead-letter topic of one system (``settings.topic_suffix``) and the source topics its
    letters came from; ``async with`` opens one consumer and, for replays, one producer."""

    def __init__(self, settings: ServiceSettings, timeout_s: float = 60.0):
        self.settings = settings
        self.name = f"{DEAD_LETTERS}{settings.topic_suffix}"
        self.registry = SchemaRegistry.from_directory(settings.schemas_dir)
        self.codec = RecordCodec(self.registry, "gridflex.ops.DeadLetter")
        self.timeout_s = timeout_s
        # No consumer group: every partition, nothing committed, no effect on the services.
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
            client_id="gridflex-dead-letters",
        )
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="gridflex-dead-letters")
        self.producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, set[int] | None] = {}

    async def __aenter__(self) -> "DeadLetterTopic":
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if self.producer is not None:
                await self.producer.stop()
        finally:
            await self.consumer.stop()
            await self.admin.close()

    async def partitions(self, topic: str) -> set[int] | None:
        """The partitions of ``topic``, None when it does not exist."""
        if topic not in self._partitions:
            # The admin client asks the broker without creating the topic; a consumer's
            # partitions_for_topic only knows topics it has fetched metadata for.
            (description,) = await self.admin.describe_topics([topic])
            known = description["error_code"] == 0
            self._partitions[topic] = {p["partition"] for p in description["partitions"]} if known else None
        return self._partitions[topic]

    async def read(self, refs: Iterable[DeadLetterRef] = ()) -> tuple[list[DeadLetter], list[UnreadableDeadLetter]]:
        """Every dead letter (or only ``refs``) from the beginning to the topic's end as of now."""
        refs = set(refs)
        partitions = await self.partitions(self.name)
        if partitions is None:
            raise LookupError(f"topic {self.name} does not exist (gridflex topics create)")
        tps = [TopicPartition(self.name, p) for p in sorted(partitions)]
        starts, ends = await self.consumer.beginning_offsets(tps), await self.consumer.end_offsets(tps)
        ranges = {tp: (starts[tp], ends[tp]) for tp in tps}
        if refs:
            ranges = {}
            for tp in tps:
                wanted = [ref.offset for ref in refs if ref.partition == tp.partition]
                if wanted:
                    ranges[tp] = (max(min(wanted), starts[tp]), min(max(wanted) + 1, ends[tp]))
        letters, unreadable = [], []
        async for tp, message in self._read_ranges(ranges):
            ref = DeadLetterRef(tp.partition, message.offset)
            if refs and ref not in refs:
                continue
            value = self.codec.decode(message.value)
            if isinstance(value, Undecodable):
                unreadable.append(UnreadableDeadLetter(ref, f"{value.reason_code}: {value.reason}"))
            else:
                letters.append(DeadLetter.from_record(ref, message.timestamp, value))
        return letters, unreadable

    async def replays(self, letters: Iterable[DeadLetter]) -> tuple[list[ReplayMark], dict[DeadLetterRef, str]]:
        """Earlier replays of ``letters`` on their source partitions, and the letters whose source
        partition does not exist (any more) with why."""
        by_source: dict[TopicPartition, list[DeadLetter]] = {}
        for letter in letters:
            by_source.setdefault(TopicPartition(letter.source_topic, letter.source_partition), []).append(letter)
        missing: dict[DeadLetterRef, str] = {}
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for tp, group in by_source.items():
            partitions = await self.partitions(tp.topic)
            if partitions is None or tp.partition not in partitions:
                why = f"topic {tp.topic} does not exist" if partitions is None else \
                    f"topic {tp.topic} has no partition {tp.partition}"
                missing.update({letter.ref: why for letter in group})
                continue
            first_offset, first_time = replay_scan_start(group)
            end = (await self.consumer.end_offsets([tp]))[tp]
            found = (await self.consumer.offsets_for_times({tp: int(first_time.timestamp() * 1000)}))[tp]
            ranges[tp] = (max(first_offset, found.offset if found else end), end)
        marks = []
        async for tp, message in self._read_ranges(ranges):
            mark = replay_mark(tp.topic, tp.partition, message.offset, message.timestamp, message.headers, self.name)
            if mark is not None:
                marks.append(mark)
        return marks, missing

    async def replay(self, letters: Sequence[DeadLetter]) -> list[ReplayMark]:
        """Re-publish each letter's original key and value to its source partition, with the
        headers that name the dead letter; returns where each replay landed."""
        if self.producer is None:
            self.producer = AIOKafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                client_id="gridflex-dead-letters",
            )
            await self.producer.start()
        now = datetime.now(timezone.utc)
        futures = [
            await self.producer.send(
                letter.source_topic, value=letter.value, key=letter.key, partition=letter.source_partition,
                headers=replay_headers(self.name, letter.ref, now),
            )
            for letter in letters
        ]
        await self.producer.flush()
        landed = []
        for letter, future in zip(letters, futures):
            metadata = await future
            landed.append(ReplayMark(self.name, letter.ref, metadata.topic, metadata.partition, metadata.offset,
                                     _from_ms(metadata.timestamp) if metadata.timestamp > 0 else now))
        return landed

    async def _read_ranges(self, ranges: Mapping[TopicPartition, tuple[int, int]]) -> AsyncIterator[tuple]:
        """Every record in [start, end) of each partition, then stop: never waits for new records."""
        remaining = {tp: end for tp, (start, end) in ranges.items() if start < end}
        if not remaining:
            return
        self.consumer.assign(list(remaining))
        for tp, (start, _) in ranges.items():
            if tp in remaining:
                self.consumer.seek(tp, start)
        deadline = time.monotonic() + self.timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise DeadLetterReadTimeout(
                    f"could not read {', '.join(f'{tp.topic}[{tp.partition}]' for tp in remaining)} to its end "
                    f"within {self.timeout_s:g} s")
            fetched = await self.consumer.getmany(*remaining, timeout_ms=200, max_records=5000)
            for tp, messages in fetched.items():
                for message in messages:
                    if message.offset < remaining.get(tp, -1):
                        yield tp, message
            for tp in list(remaining):
                # The position passes gaps (compaction, transaction markers) that hold no record.
                if await self.consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
                    self.consumer.pause(tp)


# -- what the commands do --------------------------------------------------------------------------


@dataclass
class Inspection:
    """One dead letter (or why there is none) and its earlier replays, for ``show``."""

    topic: str
    registry: SchemaRegistry
    letter: DeadLetter | None
    unreadable: UnreadableDeadLetter | None
    marks: list[ReplayMark]
    unreplayable: str | None


@dataclass
class ReplayRequest:
    """What ``replay`` found: the plan, and what could not be selected."""

    topic: str
    plan: ReplayPlan
    unreadable: list[UnreadableDeadLetter]
    not_found: list[DeadLetterRef]


async def read_dead_letters(settings: ServiceSettings, timeout_s: float) -> tuple[list[DeadLetter],
                                                                                 list[UnreadableDeadLetter]]:
    async with DeadLetterTopic(settings, timeout_s) as topic:
        return await topic.read()


async def inspect(settings: ServiceSettings, ref: DeadLetterRef, timeout_s: float) -> Inspection:
    async with DeadLetterTopic(settings, timeout_s) as topic:
        letters, unreadable = await topic.read([ref])
        marks, missing = await topic.replays(letters) if letters else ([], {})
        return Inspection(topic.name, topic.registry, letters[0] if letters else None,
                          unreadable[0] if unreadable else None, marks, missing.get(ref))


async def plan_replays(settings: ServiceSettings, selection: Selection, force: bool,
                       timeout_s: float) -> ReplayRequest:
    async with DeadLetterTopic(settings, timeout_s) as topic:
        letters, unreadable = await topic.read(selection.refs)
        chosen = selection.select(letters)
        marks, missing = await topic.replays(chosen)
        not_found = sorted(set(selection.refs) - {x.ref for x in chosen} - {x.ref for x in unreadable})
        return ReplayRequest(topic.name, plan_replay(chosen, marks, missing, force), unreadable, not_found)


async def replay(settings: ServiceSettings, letters: Sequence[DeadLetter], timeout_s: float) -> list[ReplayMark]:
    async with DeadLetterTopic(settings, timeout_s) as topic:
        return await topic.replay(letters)
