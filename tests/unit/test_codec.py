"""The Avro single-object codec: round trips, resolution of older writers, bad bytes."""

import io
import json

import avro.io
import avro.schema
import pytest
from fastavro import schemaless_writer

from gridflex import REPO_ROOT
from gridflex.codec import MAGIC, RecordCodec, SchemaRegistry, Undecodable, schema_version
from tests.vectors import VECTORS

REGISTRY = SchemaRegistry.from_directory(REPO_ROOT / "schemas")


def test_every_record_has_a_vector():
    assert set(VECTORS) == set(REGISTRY.current)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_round_trip(name):
    codec = RecordCodec(REGISTRY, name)
    data = codec.encode(VECTORS[name])
    # Single-object encoding: C3 01, the little-endian CRC-64-AVRO fingerprint, the body.
    assert data[:2] == MAGIC
    assert data[2:10] == REGISTRY.current[name].fingerprint
    assert codec.decode(data) == VECTORS[name]


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_apache_avro_reads_our_bodies(name):
    # A second, independent implementation (Apache Avro's own) decodes the same bytes.
    schema_path = REGISTRY.current[name].path
    data = RecordCodec(REGISTRY, name).encode(VECTORS[name])
    reader = avro.io.DatumReader(avro.schema.parse(schema_path.read_text()))
    decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert decoded.keys() == VECTORS[name].keys()


def test_the_spec_fingerprint_of_int():
    # Avro specification test value: CRC-64-AVRO of "int", written little-endian.
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    assert fingerprint(to_parsing_canonical_form("int"), "CRC-64-AVRO") == "8f5c393f1ad57572"
    # The same function fingerprints every schema file (schema_version).
    assert schema_version({"type": "record", "name": "X", "fields": []}).fingerprint == bytes.fromhex(
        fingerprint('{"name":"X","type":"record","fields":[]}', "CRC-64-AVRO")
    )


def test_a_record_from_an_older_writer_decodes_with_defaults():
    # MeterRead version 1 (the contract's fields, kept in schemas/history) has no `source`.
    old = next(v for v in REGISTRY.by_fingerprint.values() if v.name == "gridflex.utility.MeterRead" and v.path.parent.name != "utility")
    value = {k: v for k, v in VECTORS["gridflex.utility.MeterRead"].items() if k != "source"}
    body = io.BytesIO()
    schemaless_writer(body, old.parsed, value)
    decoded = RecordCodec(REGISTRY, "gridflex.utility.MeterRead").decode(old.header + body.getvalue())
    assert decoded == {**value, "source": None}


@pytest.mark.parametrize(
    "data, reason_code",
    [
        (b"", "UNDECODABLE"),
        (b"{\"json\": true}", "UNDECODABLE"),
        (MAGIC + bytes(8) + b"\x00", "UNKNOWN_SCHEMA"),
        (MAGIC + REGISTRY.current["gridflex.utility.MeterRead"].fingerprint + b"\x08\xff", "UNDECODABLE"),
    ],
)
def test_bad_bytes_become_a_reason_not_an_exception(data, reason_code):
    result = RecordCodec(REGISTRY, "gridflex.utility.MeterRead").decode(data)
    assert isinstance(result, Undecodable)
    assert result.reason_code == reason_code


def test_a_record_of_another_type_is_refused():
    tick = RecordCodec(REGISTRY, "gridflex.ops.ClockTick").encode(VECTORS["gridflex.ops.ClockTick"])
    result = RecordCodec(REGISTRY, "gridflex.utility.MeterRead").decode(tick)
    assert result == Undecodable("SCHEMA_MISMATCH", "record is a gridflex.ops.ClockTick, this topic carries gridflex.utility.MeterRead")


def test_trailing_bytes_are_refused():
    codec = RecordCodec(REGISTRY, "gridflex.ops.ClockTick")
    result = codec.decode(codec.encode(VECTORS["gridflex.ops.ClockTick"]) + b"\x00")
    assert isinstance(result, Undecodable) and "trailing" in result.reason


def test_history_versions_are_json_schemas_of_current_records():
    for version in REGISTRY.by_fingerprint.values():
        assert version.name in REGISTRY.current
        json.loads(version.path.read_text())
