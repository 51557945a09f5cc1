"""``make schemas-check``: every schema parses and every published version stays readable.

Compatibility is judged by Apache Avro's own checker (``avro.compatibility``), with the current
schema as reader and each earlier version as writer (backward compatibility). An earlier
version whose fingerprint differs from the current one must also be kept under
``schemas/history/`` so that records written with it still decode by fingerprint.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from gridflex.codec import SchemaRegistry, schema_version


def incompatibilities(reader_json: dict, writer_json: dict) -> list[str]:
    """Why records written with ``writer_json`` cannot be read with ``reader_json`` (empty if they can)."""
    reader = avro.schema.parse(json.dumps(reader_json))
    writer = avro.schema.parse(json.dumps(writer_json))
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    return [f"{m} at {'/'.join(result.locations)}" for m in result.messages] or ["incompatible"]


def check_repository(schemas_dir: Path, against: str | None = None) -> list[str]:
    """Problems found: unparsable schemas, incompatible versions, versions missing from history."""
    try:
        registry = SchemaRegistry.from_directory(schemas_dir)
    except Exception as exc:  # any parse error is the finding
        return [f"schemas do not parse: {exc}"]
    problems: list[str] = []
    for version in registry.by_fingerprint.values():
        current = registry.current.get(version.name)
        if current is None:
            problems.append(f"{version.path}: history of {version.name}, which no longer exists")
        elif version is not current:
            problems += [f"{version.path}: {p}" for p in incompatibilities(_raw(current.path), _raw(version.path))]
    for revision, name, writer_json in _committed_versions(schemas_dir, against):
        fingerprint = schema_version(writer_json).fingerprint
        current = registry.current.get(name)
        if current is None:
            problems.append(f"{name} (at {revision}) was removed; records written with it could no longer be read")
            continue
        problems += [f"{name} vs {revision}: {p}" for p in incompatibilities(_raw(current.path), writer_json)]
        if fingerprint not in registry.by_fingerprint:
            problems.append(
                f"{name} at {revision} (fingerprint {fingerprint.hex()}) is not kept under schemas/history/: "
                "copy that version there so its records still decode"
            )
    return problems


def _raw(path: Path) -> dict:
    return json.loads(path.read_text())


def _committed_versions(schemas_dir: Path, against: str | None):
    """Every version of every schema file committed on ``against``'s history (default: HEAD's)."""
    repo = schemas_dir.parent
    git = ["git", "-C", str(repo)]
    revision = against or "HEAD"
    if subprocess.run([*git, "rev-parse", "--verify", "--quiet", revision], capture_output=True).returncode:
        return  # no such revision (e.g. a repository without commits yet): nothing published to compare with
    relative = schemas_dir.resolve().relative_to(repo.resolve())
    commits = subprocess.run(
        [*git, "log", "--format=%h", revision, "--", str(relative)], capture_output=True, text=True, check=True
    ).stdout.split()
    seen: set[str] = set()
    for commit in commits:
        files = subprocess.run(
            [*git, "ls-tree", "-r", "--name-only", commit, "--", str(relative)], capture_output=True, text=True,
            check=True,
        ).stdout.split()
        for path in files:
            if not path.endswith(".avsc") or "/history/" in path:
                continue
            text = subprocess.run([*git, "show", f"{commit}:{path}"], capture_output=True, text=True, check=True).stdout
            if text in seen:
                continue
            seen.add(text)
            schema_json = json.loads(text)
            yield commit, _full_name(schema_json), schema_json


def _full_name(schema_json: dict) -> str:
    name = schema_json["name"]
    return name if "." in name else f"{schema_json.get('namespace', '')}.{name}".lstrip(".")
