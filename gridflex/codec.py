"""The one Avro codec: single-object encoding, writer schema found by fingerprint.

Wire format (Avro specification, "Single object encoding"): ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the binary body.

The registry knows every schema under ``schemas/``: the current one of each record and the
earlier versions kept in ``schemas/history/``. A reader decodes with the writer schema found by
fingerprint, resolved to the current schema of the same record, so an older producer's records
still decode. Decoding never raises into a stream: it returns :class:`Undecodable`, which the
service turns into a dead letter.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LENGTH = len(MAGIC) + 8


class SchemaNotFound(KeyError):
    """No schema with that record name or fingerprint is known."""


@dataclass(frozen=True)
class Undecodable:
    """A value that could not be decoded: why, for the dead-letter record."""

    reason_code: str  # UNDECODABLE or UNKNOWN_SCHEMA or SCHEMA_MISMATCH
    reason: str


@dataclass(frozen=True)
class SchemaVersion:
    name: str  # full record name, e.g. gridflex.utility.MeterRead
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO
    parsed: dict
    path: Path | None

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


def schema_version(schema_json: dict, path: Path | None = None) -> SchemaVersion:
    """Parse a schema and fingerprint it."""
    parsed = parse_schema(schema_json)
    canonical = to_parsing_canonical_form(parsed)
    return SchemaVersion(
        name=parsed["name"],
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        parsed=parsed,
        path=path,
    )


def load_schema(path: Path) -> SchemaVersion:
    """Parse one ``.avsc`` file and fingerprint it."""
    return schema_version(json.loads(path.read_text()), path)


class SchemaRegistry:
    """Every known schema version, by record name (current) and by fingerprint (all)."""

    def __init__(self, current: Mapping[str, SchemaVersion], history: list[SchemaVersion]):
        self.current = dict(current)
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in [*history, *self.current.values()]:
            self.by_fingerprint[version.fingerprint] = version

    @classmethod
    def from_directory(cls, schemas_dir: Path) -> "SchemaRegistry":
        current: dict[str, SchemaVersion] = {}
        history: list[SchemaVersion] = []
        for path in sorted(schemas_dir.rglob("*.avsc")):
            version = load_schema(path)
            if "history" in path.relative_to(schemas_dir).parts:
                history.append(version)
            elif version.name in current:
                raise ValueError(f"{version.name} is defined twice: {current[version.name].path} and {path}")
            else:
                current[version.name] = version
        return cls(current, history)

    def schema(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError:
            raise SchemaNotFound(f"no schema named {name!r}") from None


class RecordCodec:
    """Encodes values of one record type and decodes any known version of it."""

    def __init__(self, registry: SchemaRegistry, name: str):
        self.registry = registry
        self.reader = registry.schema(name)

    def encode(self, value: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self.reader.header)
        schemaless_writer(buffer, self.reader.parsed, value)
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict | Undecodable:
        """Decode single-object bytes; never raises for bad input."""
        if data is None or len(data) < HEADER_LENGTH or data[:2] != MAGIC:
            return Undecodable("UNDECODABLE", "value is not Avro single-object encoded (missing C3 01 header)")
        writer = self.registry.by_fingerprint.get(data[2:HEADER_LENGTH])
        if writer is None:
            return Undecodable(
                "UNKNOWN_SCHEMA", f"writer schema fingerprint {data[2:HEADER_LENGTH].hex()} is not known"
            )
        if writer.name != self.reader.name:
            return Undecodable(
                "SCHEMA_MISMATCH", f"record is a {writer.name}, this topic carries {self.reader.name}"
            )
        body = io.BytesIO(data)
        body.seek(HEADER_LENGTH)
        try:
            if writer is self.reader:
                value = schemaless_reader(body, writer.parsed, None)
            else:
                value = schemaless_reader(body, writer.parsed, self.reader.parsed)
        except Exception as exc:  # fastavro raises many types for corrupt bodies
            return Undecodable("UNDECODABLE", f"corrupt {writer.name} body: {type(exc).__name__}: {exc}")
        if body.tell() != len(data):
            return Undecodable("UNDECODABLE", f"{len(data) - body.tell()} trailing bytes after the {writer.name} body")
        return value
