"""docker-compose.yml, the Dockerfile and the Prometheus and Grafana files it mounts (deploy/prometheus/,
deploy/grafana/) stay in line with the code.

No Docker here: the files are read as data and checked against the truth in the repository (the
service folders, the settings classes, the local broker's pom.xml), so that adding a service or
a setting, or bumping Kafka, fails this test until the container files follow.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from gridflex.settings import ServiceSettings
from tests.repository import (
    dockerfile_env, dockerfile_instructions, env_names, service_folders, settings_classes, valid_variables,
    web_port_setting,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
KAFKA_POM = ROOT / "deploy" / "local" / "kafka" / "pom.xml"
POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

# Settings whose defaults only work on a developer's machine (they name loopback addresses);
# derived from ServiceSettings below, these three must be among them.
KNOWN_CONTAINER_ESSENTIALS = {"GRIDFLEX_KAFKA_BOOTSTRAP", "GRIDFLEX_DATABASE_URL", "GRIDFLEX_WEB_HOST"}
LOOPBACK = ("127.0.0.1", "localhost")


# -- reading the repository ------------------------------------------------------------------------


def kafka_version_from_pom() -> str:
    """The kafka_2.13 version the local stack downloads (resolving ${property} references)."""
    pom = ET.parse(KAFKA_POM).getroot()
    properties = {child.tag.split("}", 1)[1]: child.text for child in pom.find("m:properties", POM_NS)}
    for dependency in pom.iterfind("m:dependencies/m:dependency", POM_NS):
        if dependency.findtext("m:artifactId", namespaces=POM_NS) == "kafka_2.13":
            version = dependency.findtext("m:version", namespaces=POM_NS).strip()
            return re.sub(r"\$\{([^}]+)\}", lambda match: properties[match.group(1)], version)
    pytest.fail(f"{KAFKA_POM} has no kafka_2.13 dependency")


# -- reading docker-compose.yml --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def as_argv(value: str | list[str] | None) -> list[str]:
    """A compose command/entrypoint (string or list) as an argument list."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(arg) for arg in value]


def command_text(service: dict[str, Any]) -> str:
    return " ".join(as_argv(service.get("entrypoint")) + as_argv(service.get("command")))


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment (mapping or KEY=VALUE list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: None if value is None else str(value) for key, value in env.items()}


def interpolate(value: str) -> str:
    """What compose makes of ``${VAR:-default}`` with nothing set in the shell or .env."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", value)
    return value.replace("$$", "$")


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source (named volume or host path), short or long syntax."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, target, *_ = str(volume).split(":")
            mounts[target] = source
    return mounts


def scalars(node: Any) -> list[str]:
    """Every string in a parsed YAML document (keys and values): where compose interpolates."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in scalars(key) + scalars(value)]
    if isinstance(node, list):
        return [text for item in node for text in scalars(item)]
    return [node] if isinstance(node, str) else []


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def gridflex_containers(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Service folder name -> the compose service that runs it (`gridflex run <name>`)."""
    found: dict[str, str] = {}
    for compose_name, service in services.items():
        argv = as_argv(service.get("command"))
        if len(argv) == 2 and argv[0] == "run":
            found[argv[1]] = compose_name
    return found


def topics_step(services: dict[str, dict[str, Any]]) -> str:
    steps = [name for name, service in services.items() if "gridflex topics create" in command_text(service)]
    assert len(steps) == 1, f"expected exactly one service running `gridflex topics create`, found {steps}"
    return steps[0]


def service_running(services: dict[str, dict[str, Any]], repository: str) -> str:
    """The compose service whose image comes from ``repository`` (e.g. prom/prometheus)."""
    names = [name for name, service in services.items() if service.get("image", "").split(":")[0] == repository]
    assert len(names) == 1, f"expected one service running {repository}, found {names}"
    return names[0]


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None when it has none); a digest counts as pinned."""
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    name = image.rsplit("/", 1)[-1]
    return name.split(":", 1)[1] if ":" in name else None


# -- reading the Dockerfile ------------------------------------------------------------------------


# -- the properties --------------------------------------------------------------------------------


def test_every_service_folder_has_a_container(services: dict[str, dict[str, Any]]) -> None:
    # The services that exist in the code: services/<name>/app.py.
    expected = service_folders()
    assert expected, "no services/<name>/app.py found"
    # Each must be run by a compose service as `gridflex run <name>`, and nothing else may be.
    running = gridflex_containers(services)
    assert sorted(running) == expected, f"compose runs {sorted(running)}, the repo has {expected}"


def test_topics_are_created_before_any_service_starts(services: dict[str, dict[str, Any]]) -> None:
    # Exactly one one-shot step runs `gridflex topics create`.
    step = topics_step(services)
    assert services[step].get("restart", "no") == "no", "the topics step must run once, not be restarted"
    # It waits for a healthy broker.
    assert depends_on(services[step]).get("kafka") == "service_healthy"
    # Every gridflex service waits for it to have finished successfully.
    for service, compose_name in gridflex_containers(services).items():
        assert depends_on(services[compose_name]).get(step) == "service_completed_successfully", service


def test_every_gridflex_variable_is_a_real_setting(services: dict[str, dict[str, Any]]) -> None:
    # Which settings class applies to which container: the shared one everywhere, plus the
    # service's own where the container runs `gridflex run <service>`.
    service_of = {compose_name: service for service, compose_name in gridflex_containers(services).items()}
    # Container environments in compose: a misspelt GRIDFLEX_* name would be silently ignored
    # (the settings ignore unknown variables), so every one must be a field's variable.
    # (`${GRIDFLEX_DB_PASSWORD}`-style interpolations are read by `docker compose` on the host,
    # not by the services, and are not container variables.)
    for compose_name, service in services.items():
        unknown = {
            name for name in environment(service)
            if name.startswith("GRIDFLEX_") and name not in valid_variables(service_of.get(compose_name))
        }
        assert not unknown, f"{compose_name}: {sorted(unknown)} are not gridflex settings"
    # The image's own defaults (Dockerfile ENV) apply to every container.
    unknown = {name for name in dockerfile_env() if name.startswith("GRIDFLEX_")} - valid_variables(None)
    assert not unknown, f"Dockerfile: {sorted(unknown)} are not gridflex settings"


def test_compose_values_are_valid_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each gridflex service's settings class must accept the values compose gives it
    # (e.g. GRIDFLEX_CLOCK is a known mode, ports are integers).
    for service, compose_name in gridflex_containers(services).items():
        env = {**dockerfile_env(), **environment(services[compose_name])}
        with monkeypatch.context() as patch:
            for name, value in env.items():
                if name.startswith("GRIDFLEX_") and value is not None:
                    patch.setenv(name, interpolate(value))
            for cls in [ServiceSettings, *settings_classes(service)]:
                cls()  # raises pydantic.ValidationError on a bad value


def test_settings_without_a_container_default_are_set(services: dict[str, dict[str, Any]]) -> None:
    # The settings whose defaults point at loopback (fine on a laptop, wrong in a container):
    # derived from the settings classes, so a new one of the kind is caught too.
    def loopback_defaults(cls: type[BaseSettings]) -> set[str]:
        return {
            name for name, field_name in env_names(cls).items()
            if any(host in str(cls.model_fields[field_name].default) for host in LOOPBACK)
        }

    shared = loopback_defaults(ServiceSettings)
    assert KNOWN_CONTAINER_ESSENTIALS <= shared, "the derivation lost a known container essential"
    for service, compose_name in gridflex_containers(services).items():
        env = environment(services[compose_name])
        needed = shared.union(*(loopback_defaults(cls) for cls in settings_classes(service)))
        # Each is set for the service, and not to a loopback address either.
        for name in sorted(needed):
            assert env.get(name), f"{compose_name}: {name} is not set"
            assert not any(host in env[name] for host in LOOPBACK), f"{compose_name}: {name}={env[name]}"


def test_each_service_is_published_health_checked_and_keeps_its_state(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for service, compose_name in gridflex_containers(services).items():
        container = services[compose_name]
        env = {**dockerfile_env(), **environment(container)}
        # Its web port: the value compose sets, else the setting's default.
        port_variable, default_port = web_port_setting(service)
        port = int(env.get(port_variable) or default_port)
        # The port is published, and the healthcheck asks /health on it.
        published = [str(mapping).rsplit(":", 1)[-1] for mapping in container.get("ports", [])]
        assert str(port) in published, f"{compose_name}: port {port} not published ({published})"
        assert f"localhost:{port}/health" in " ".join(as_argv(container["healthcheck"]["test"]))
        # GRIDFLEX_DATA_DIR (RocksDB tables) is a named volume, not the container's writable layer.
        data_dir = env["GRIDFLEX_DATA_DIR"]
        mounts = volume_mounts(container)
        assert data_dir in mounts, f"{compose_name}: {data_dir} is not a volume"
        assert mounts[data_dir] in compose["volumes"], f"{compose_name}: {mounts[data_dir]} is not a named volume"


def test_kafka_is_the_local_stack_version(services: dict[str, dict[str, Any]]) -> None:
    # The version the local stack runs (deploy/local/kafka/pom.xml).
    version = kafka_version_from_pom()
    # The compose broker is the official image at exactly that version.
    assert services["kafka"]["image"] == f"apache/kafka:{version}"


def test_kafka_is_a_single_kraft_node_like_the_local_one(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["kafka"])
    # KRaft, broker and controller in one process.
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    # One broker: internal topics cannot have more than one replica.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    # Topics come from the catalogue only, and the first rebalance does not wait.
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    # The services' bootstrap address is one of the broker's advertised listeners.
    bootstrap = environment(services[topics_step(services)])["GRIDFLEX_KAFKA_BOOTSTRAP"]
    assert f"//{bootstrap}" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for compose_name, service in services.items():
        # Every service names its image (the gridflex ones too, so the build is shared)...
        assert "image" in service, f"{compose_name} has no image"
        # ...with an explicit tag (or digest) that is not `latest`.
        tag = image_tag(service["image"])
        assert tag and tag != "latest", f"{compose_name}: {service['image']} is not pinned"


def test_compose_variables_have_development_defaults(compose: dict[str, Any]) -> None:
    # The ${VAR} references compose resolves from the host's shell or .env ($$ is a literal $).
    texts = [text.replace("$$", "") for text in scalars(compose)]
    references = [match for text in texts for match in re.findall(r"\$\{([A-Za-z_]\w*)([^}]*)\}", text)]
    assert references, "expected at least the database password to be interpolated"
    # Each has a default, so `docker compose up` works on a fresh checkout with no .env and no
    # secret has to live in the repository.
    without_default = sorted({name for name, rest in references if not rest.startswith((":-", "-"))})
    assert not without_default, f"no default for {without_default}"
    # The bare $VAR form (which cannot carry a default) is not used.
    assert not any(re.search(r"\$[A-Za-z_]", text) for text in texts), "use ${VAR:-default}, not $VAR"


def mounted(service: dict[str, Any], path: str) -> Path:
    """The file or folder of the repository a container sees at ``path``, through its bind mounts
    (the longest mount target that contains it)."""
    mounts = {target.rstrip("/"): source for target, source in volume_mounts(service).items()
              if source.startswith((".", "/"))}
    target = max((target for target in mounts if path == target or path.startswith(target + "/")),
                 key=len, default=None)
    assert target is not None, f"{path} is not mounted from the repository"
    return ROOT / mounts[target] / path[len(target):].lstrip("/")


def prometheus_config(services: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The compose Prometheus service, the config path it is given and the config."""
    prometheus = services[service_running(services, "prom/prometheus")]
    flag = next(arg for arg in as_argv(prometheus.get("command")) if arg.startswith("--config.file="))
    config_path = flag.split("=", 1)[1]
    return prometheus, config_path, yaml.safe_load(mounted(prometheus, config_path).read_text())


def test_prometheus_scrapes_every_service(services: dict[str, dict[str, Any]]) -> None:
    # The config Prometheus is given (--config.file) comes from the repository: deploy/prometheus/.
    prometheus, config_path, config = prometheus_config(services)
    assert mounted(prometheus, config_path) == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    # One job, gridflex, on /metrics, its targets found in files next to the config.
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["gridflex"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    config_dir = config_path.rsplit("/", 1)[0]
    groups = [group for sd in job["file_sd_configs"] for name in sd["files"]
              for group in yaml.safe_load(mounted(prometheus, f"{config_dir}/{name}").read_text())]
    targets = {group["labels"]["service"]: group["targets"] for group in groups}
    # Each service at the compose service's name and the web port compose gives it, labelled with
    # its service (the dashboards and alerts select on it).
    for service, compose_name in gridflex_containers(services).items():
        port_variable, default_port = web_port_setting(service)
        port = environment(services[compose_name]).get(port_variable) or default_port
        assert targets.get(service) == [f"{compose_name}:{port}"], f"{service}: scraped at {targets.get(service)}"
    # Nothing else (a service removed from compose is no longer scraped).
    assert set(targets) == set(gridflex_containers(services))


def test_prometheus_loads_the_alert_rules(services: dict[str, dict[str, Any]]) -> None:
    # Every rule_files pattern reaches the repository's rule files through the mounts.
    prometheus, config_path, config = prometheus_config(services)
    config_dir = config_path.rsplit("/", 1)[0]
    loaded = set()
    for pattern in config["rule_files"]:
        folder, _, glob = f"{config_dir}/{pattern}".rpartition("/")
        loaded |= set(mounted(prometheus, folder).glob(glob))
    assert loaded == set((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))


def test_local_targets_are_the_default_web_ports(services: dict[str, dict[str, Any]]) -> None:
    # The local stack's targets (gridflex/prometheus.py copies them next to prometheus.yml): the
    # services compose runs, each on 127.0.0.1 at its default web port (`gridflex run`, the demo).
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "targets" / "local.yml").read_text())
    targets = {group["labels"]["service"]: group["targets"] for group in groups}
    assert set(targets) == set(gridflex_containers(services))
    for service in targets:
        _, default_port = web_port_setting(service)
        assert targets[service] == [f"127.0.0.1:{default_port}"]


def test_grafana_reads_prometheus_and_loads_the_dashboards(services: dict[str, dict[str, Any]]) -> None:
    grafana = services[service_running(services, "grafana/grafana")]
    provisioning = "/etc/grafana/provisioning"
    # The data source: the prometheus service, with the uid the dashboards use.
    datasources = [ds for path in mounted(grafana, f"{provisioning}/datasources").glob("*.yml")
                   for ds in yaml.safe_load(path.read_text())["datasources"]]
    prometheus_name = service_running(services, "prom/prometheus")
    assert any(ds["type"] == "prometheus" and ds["uid"] == "prometheus" and f"//{prometheus_name}:" in ds["url"]
               for ds in datasources)
    # The dashboard provider's folder is where the repository's dashboards are mounted
    # (tests/unit/test_dashboards.py checks they are the ones deploy/grafana/build_dashboards.py builds).
    providers = [provider for path in mounted(grafana, f"{provisioning}/dashboards").glob("*.yml")
                 for provider in yaml.safe_load(path.read_text())["providers"]]
    assert [mounted(grafana, provider["options"]["path"]) for provider in providers] == [
        ROOT / "deploy" / "grafana" / "dashboards"]
    # Anonymous access stays off unless asked for.
    assert interpolate(environment(grafana)["GF_AUTH_ANONYMOUS_ENABLED"]) == "false"


def test_dockerfile_base_image_is_pinned_and_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    # The base image: Python, at the version pyproject requires, pinned to a patch release.
    base = next(arguments for keyword, arguments in instructions if keyword == "FROM").split()[0]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.search(r">=\s*(\d+\.\d+)", requires).group(1)
    assert re.fullmatch(rf"python:{re.escape(minimum)}\.\d+-slim(-\w+)?", base), base
    # The last USER decides who runs the services: set, and not root.
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_image_runs_the_gridflex_command_and_finds_its_files() -> None:
    instructions = dockerfile_instructions()
    env = dockerfile_env()
    # ENTRYPOINT is the console script pyproject installs.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = json.loads(next(arguments for keyword, arguments in instructions if keyword == "ENTRYPOINT"))
    assert entrypoint[0] in scripts
    # The schemas are copied where GRIDFLEX_SCHEMAS_DIR says (the package default would be wrong
    # in a non-editable install).
    copies = [arguments.split() for keyword, arguments in instructions if keyword == "COPY"]
    assert ["schemas/", env["GRIDFLEX_SCHEMAS_DIR"].rstrip("/") + "/"] in [c[-2:] for c in copies]
    # How the package is installed, and what it reads beside it: tests/unit/test_dockerfile.py.
    # The state directory exists and belongs to the runtime user.
    user = next(arguments for keyword, arguments in reversed(instructions) if keyword == "USER")
    assert any(f"chown {user} {env['GRIDFLEX_DATA_DIR']}" in arguments for keyword, arguments in instructions)
