"""Pure parts of gridflex.stack: layout from the environment, config rendering, status table.

No process is started here; the real stack is exercised by `python -m gridflex.stack up`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gridflex import stack


def test_layout_defaults_live_in_the_repo() -> None:
    lay = stack.layout({})
    assert lay.var == stack.REPO_ROOT / "var"
    assert lay.kafka_dir == stack.REPO_ROOT / "var" / "kafka"
    assert lay.kafka_pid_file == lay.kafka_dir / "kafka.pid"
    assert lay.kafka_cluster_id_file == lay.kafka_dir / "cluster.id"
    assert lay.pg_data == stack.REPO_ROOT / "var" / "postgres" / "data"
    assert lay.pg_run == stack.REPO_ROOT / "var" / "postgres" / "run"
    assert lay.kafka_log == stack.REPO_ROOT / "var" / "log" / "kafka.log"
    assert lay.pg_log == stack.REPO_ROOT / "var" / "log" / "postgres.log"
    assert lay.kafka_libs == stack.REPO_ROOT / ".cache" / "kafka-4.1.1" / "libs"
    assert (lay.kafka_port, lay.controller_port, lay.pg_port) == (19092, 19093, 15432)
    assert lay.kafka_address == "127.0.0.1:19092"
    assert lay.pg_url == "postgresql://gridflex:gridflex@127.0.0.1:15432/gridflex"


def test_layout_follows_environment_overrides(tmp_path: Path) -> None:
    lay = stack.layout({
        "GRIDFLEX_VAR_DIR": str(tmp_path / "state"),
        "GRIDFLEX_CACHE_DIR": str(tmp_path / "cache"),
        "GRIDFLEX_KAFKA_PORT": "29092",
        "GRIDFLEX_PG_PORT": "25432",
    })
    assert lay.kafka_data == tmp_path / "state" / "kafka" / "data"
    assert lay.kafka_libs == tmp_path / "cache" / "kafka-4.1.1" / "libs"
    assert lay.controller_port == 29093
    assert lay.pg_url.endswith("@127.0.0.1:25432/gridflex")


@pytest.mark.parametrize("value", ["abc", "0", "65535", "-1"])
def test_layout_rejects_bad_ports(value: str) -> None:
    with pytest.raises(stack.StackError, match="GRIDFLEX_PG_PORT"):
        stack.layout({"GRIDFLEX_PG_PORT": value})


def test_render_template_fills_placeholders_and_rejects_unknown_ones() -> None:
    assert stack.render_template("a=@A@ b=1@host:@B_2@", {"A": 1, "B_2": "x"}) == "a=1 b=1@host:x"
    with pytest.raises(stack.StackError, match="@MISSING@"):
        stack.render_template("x=@MISSING@", {})


def test_kafka_server_properties_render_completely(tmp_path: Path) -> None:
    lay = stack.layout({"GRIDFLEX_VAR_DIR": str(tmp_path), "GRIDFLEX_KAFKA_PORT": "29092"})
    text = stack.kafka_server_properties(lay)
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert not re.search(r"@[A-Z_]+@", text)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")
    assert props["auto.create.topics.enable"] == "false"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr"):
        assert props[key] == "1", key


def test_kafka_command_uses_cached_jars_and_rendered_config(tmp_path: Path) -> None:
    lay = stack.layout({"GRIDFLEX_VAR_DIR": str(tmp_path / "var"), "GRIDFLEX_CACHE_DIR": str(tmp_path / "c")})
    cmd = stack.kafka_command("/usr/bin/java", lay)
    assert cmd[0] == "/usr/bin/java"
    assert {"-Xms512m", "-Xmx512m", "-XX:+UseG1GC"} <= set(cmd)
    assert cmd[cmd.index("-cp") + 1] == f"{tmp_path}/c/kafka-4.1.1/libs/*"
    assert cmd[-2:] == ["kafka.Kafka", str(lay.kafka_config)]
    assert f"-Dlog4j2.configurationFile={stack.KAFKA_DEPLOY_DIR / 'log4j2.yaml'}" in cmd


def test_unknown_kafka_settings_compares_with_the_logged_config_dump() -> None:
    log = "[t] INFO KafkaConfig values: \n\tnode.id = 1\n\tnum.partitions = 4\n[t] INFO next\n"
    assert stack.unknown_kafka_settings("node.id=1\n# c=1\nnum.partitions=4\n", log) == []
    assert stack.unknown_kafka_settings("node.id=1\nnum.partitons=4\n", log) == ["num.partitons"]
    assert stack.unknown_kafka_settings("node.id=1\n", "no dump logged") == []


def test_postgres_settings_bind_loopback_and_use_our_socket(tmp_path: Path) -> None:
    lay = stack.layout({"GRIDFLEX_VAR_DIR": str(tmp_path), "GRIDFLEX_PG_PORT": "25432"})
    conf = stack.postgres_conf(lay)
    assert "listen_addresses = '127.0.0.1'" in conf
    assert "port = 25432" in conf
    assert f"unix_socket_directories = '{tmp_path / 'postgres' / 'run'}'" in conf
    assert "shared_buffers = 128MB" in conf and "max_connections = 100" in conf
    assert not re.search(r"^fsync", conf, flags=re.M)
    hba = [line.split() for line in stack.postgres_hba().splitlines() if line and not line.startswith("#")]
    assert hba == [["local", "all", "all", "trust"], ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]]


def test_format_status_aligns_columns() -> None:
    rows = [
        {"component": "kafka", "running": True, "pid": 1234, "address": "127.0.0.1:19092", "version": "4.1.1",
         "data_dir": "/r/var/kafka/data", "log": "/r/var/log/kafka.log"},
        {"component": "postgres", "running": False, "pid": None, "address": "127.0.0.1:15432", "version": None,
         "data_dir": "/r/var/postgres/data", "log": "/r/var/log/postgres.log"},
    ]
    lines = stack.format_status(rows).splitlines()
    assert lines[0].split() == ["COMPONENT", "STATE", "PID", "ADDRESS", "VERSION", "DATA", "DIR", "LOG"]
    assert lines[1].split() == ["kafka", "running", "1234", "127.0.0.1:19092", "4.1.1", "/r/var/kafka/data",
                                "/r/var/log/kafka.log"]
    assert lines[2].split()[:5] == ["postgres", "stopped", "-", "127.0.0.1:15432", "-"]
    # every column starts at the same offset on every line
    for title in ("STATE", "ADDRESS", "LOG"):
        start = lines[0].index(title)
        assert all(line[start - 2:start] == "  " and line[start] != " " for line in lines[1:])


def test_status_reports_stopped_components_without_touching_anything(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDFLEX_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("GRIDFLEX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(stack, "find_postgres_bindir", lambda lay: None)  # no `postgres --version` run
    rows = stack.status()
    assert [(r["component"], r["running"], r["pid"]) for r in rows] == [("kafka", False, None),
                                                                       ("postgres", False, None)]
    assert rows[0]["version"] is None and rows[1]["version"] is None  # no jars, no binaries
    assert not (tmp_path / "var").exists()


def test_kafka_pid_ignores_a_live_pid_that_is_not_our_broker(tmp_path: Path) -> None:
    lay = stack.layout({"GRIDFLEX_VAR_DIR": str(tmp_path)})
    lay.kafka_dir.mkdir(parents=True)
    lay.kafka_pid_file.write_text(f"{os.getpid()}\n")  # alive, but this is pytest
    assert stack.kafka_pid(lay) is None
