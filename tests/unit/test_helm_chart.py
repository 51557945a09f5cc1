"""The Helm chart (deploy/helm/gridflex) installs cleanly and stays in line with the code.

A pinned helm (built once by scripts/ensure-helm.sh into a cache outside the repository) lints
the chart and renders it; the manifests are read as data and checked against the truth in the
repository: the services that exist and whether they keep local state (services/*/app.py), their
web ports and settings (the settings classes), the Dockerfile's user, the topic catalogue's
partitions, the gridflex commands the setup Job runs. Adding a service or a setting, or changing
how a service keeps its state, fails here until the chart follows.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from gridflex.cli import main as gridflex_command
from gridflex.settings import ServiceSettings
from gridflex.topics import PROVIDER_ID
from tests.repository import service_folders, settings_classes, valid_variables, web_port_setting

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "gridflex"
ENSURE_HELM = ROOT / "scripts" / "ensure-helm.sh"
RELEASE = "gridflex"
NAMESPACE = "demand-response"
WORKLOAD_KINDS = ("StatefulSet", "Deployment")
# Set by the chart in each container itself, never through values (schema enums must not offer them).
PER_CONTAINER = {"GRIDFLEX_DATABASE_URL", "GRIDFLEX_INSTANCE_ID"}


# -- reading the repository ------------------------------------------------------------------------


def keeps_local_state(service: str) -> bool:
    """Whether a service has a batch pipeline with changelog-backed RocksDB state: one called
    without ``positions=`` (a pipeline given ``positions`` keeps its Kafka positions in Postgres)."""
    tree = ast.parse((ROOT / "services" / service / "app.py").read_text())
    pipelines = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "batch_pipeline"
    ]
    return any("positions" not in {keyword.arg for keyword in call.keywords} for call in pipelines)


def most_partitions() -> int:
    """The largest partition count in the topic catalogue: no consumer group can use more workers."""
    catalogue = yaml.safe_load((ROOT / "schemas" / "topics.yaml").read_text())
    default = catalogue["defaults"]["partitions"]
    topics = catalogue["topics"] + catalogue.get("partner_topics", [])
    return max(topic.get("partitions", default) for topic in topics)


def image_user() -> int:
    """The uid the Dockerfile's last USER runs as."""
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    return int(users[-1].split(":")[0])


def package_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# -- running helm ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    """The pinned helm binary: built on first use (a few minutes), then cached."""
    result = subprocess.run([str(ENSURE_HELM)], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"scripts/ensure-helm.sh failed:\n{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=300)


def render(helm: str, tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`helm template` with ``values`` layered over the defaults, as parsed manifests."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        args += ["--values", str(values_file)]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def manifests(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The chart rendered with its default values."""
    return render(helm, tmp_path_factory.mktemp("default"))


# -- reading the manifests -------------------------------------------------------------------------


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def component(manifest: dict[str, Any]) -> str | None:
    return manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def workloads(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Service name -> its StatefulSet or Deployment."""
    found: dict[str, dict[str, Any]] = {}
    for manifest in manifests:
        if manifest["kind"] in WORKLOAD_KINDS:
            assert component(manifest) not in found, f"two workloads for {component(manifest)}"
            found[component(manifest)] = manifest
    return found


def pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template the chart renders (the services' and the setup Job's), by object name."""
    return {
        manifest["metadata"]["name"]: manifest["spec"]["template"]["spec"]
        for manifest in manifests if manifest["kind"] in (*WORKLOAD_KINDS, "Job")
    }


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variable name -> its env entry (``value`` or ``valueFrom``)."""
    entries = container.get("env", [])
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"{container['name']}: a variable is set twice: {names}"
    return {entry["name"]: entry for entry in entries}


def config_map_env(manifests: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container reads from ConfigMaps (envFrom)."""
    maps = {manifest["metadata"]["name"]: manifest["data"] for manifest in of_kind(manifests, "ConfigMap")}
    variables: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"{container['name']} reads ConfigMap {name}, which the chart does not render"
        variables.update(maps[name])
    return variables


def plain_env(manifests: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """What a container's environment holds as plain values (ConfigMaps first, env over them)."""
    variables = config_map_env(manifests, container)
    variables.update({name: entry["value"] for name, entry in env(container).items() if "value" in entry})
    return variables


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    """The port number an HTTP or TCP probe checks (resolving a named port)."""
    check = probe.get("httpGet") or probe.get("tcpSocket")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    return ports.get(check["port"], check["port"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def services_for(manifests: list[dict[str, Any]], workload: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        service for service in of_kind(manifests, "Service")
        if selects(service["spec"]["selector"], pod_labels(workload))
    ]


def web_service(manifests: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, Any]:
    """The Service clients use (not the StatefulSet's headless one)."""
    (service,) = [s for s in services_for(manifests, workload) if s["spec"].get("clusterIP") != "None"]
    return service


def decoded(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``250m``, ``1``, ``512Mi``, ``2Gi``) as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


def values_file() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def schema_setting_names(service: str | None) -> set[str]:
    """The settings values.schema.json lets one set: a service's `settings`, or `config.extraSettings`."""
    properties = schema()["properties"]
    block = properties[service]["properties"]["settings"] if service else \
        properties["config"]["properties"]["extraSettings"]
    return set(block["propertyNames"]["enum"])


# -- the chart as a whole --------------------------------------------------------------------------


def test_chart_lints_strictly(helm: str) -> None:
    # Warnings count as failures, and the defaults must satisfy values.schema.json.
    result = run_helm(helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_image_is_the_package_version_never_latest(manifests: list[dict[str, Any]]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    # appVersion is gridflex's version, the default image tag.
    assert chart["appVersion"] == package_version()
    assert values_file()["image"]["tag"] in ("", chart["appVersion"])
    # Every container of every pod (init containers and the setup Job included) names a tag or a
    # digest, and not `latest`.
    for name, pod in pod_specs(manifests).items():
        for container in containers(pod):
            image = container["image"]
            reference = image.rsplit("/", 1)[-1]
            assert ":" in reference or "@" in image, f"{name}/{container['name']}: {image} has no tag"
            assert not image.endswith(":latest"), f"{name}/{container['name']}: {image}"
            assert image.endswith(f":{chart['appVersion']}"), f"{name}/{container['name']}: {image}"


# -- the services ----------------------------------------------------------------------------------


def test_every_service_runs_with_the_kind_its_state_needs(manifests: list[dict[str, Any]]) -> None:
    expected = service_folders()
    assert len(expected) >= 5, f"found only {expected} in services/*/app.py"
    deployed = workloads(manifests)
    # The chart deploys nothing that is not a service of the repository.
    assert set(deployed) <= set(expected), f"the chart deploys {sorted(deployed)}, the repository has {expected}"
    for service, workload in deployed.items():
        # Local RocksDB state needs a StatefulSet (its volume and identity); settlement, whose
        # ledger keeps its positions in Postgres, is a Deployment.
        assert workload["kind"] == ("StatefulSet" if keeps_local_state(service) else "Deployment"), service
        # The one image's entrypoint is `gridflex`: the container runs `gridflex run <service>`.
        container = main_container(workload)
        assert container.get("args") == ["run", service]
        assert "command" not in container
    # The derivation itself: settlement is the one without local state today.
    assert not keeps_local_state("settlement") and keeps_local_state("telemetry")
    # And every service of the repository is deployed.
    missing = sorted(set(expected) - set(deployed))
    assert not missing, (
        f"{missing} (services/*/app.py) not in the chart: add each to gridflex.statefulServices or "
        "gridflex.statelessServices (templates/_helpers.tpl), a values block, values.schema.json and README.md"
    )


def test_stateful_services_keep_their_state_and_identity(manifests: list[dict[str, Any]]) -> None:
    headless = {s["metadata"]["name"] for s in of_kind(manifests, "Service") if s["spec"].get("clusterIP") == "None"}
    for service, workload in workloads(manifests).items():
        container = main_container(workload)
        data_dir = plain_env(manifests, container)["GRIDFLEX_DATA_DIR"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert data_dir in mounts, f"{service}: {data_dir} is not mounted"
        variables = env(container)
        if workload["kind"] == "StatefulSet":
            # The state directory is a claim of its own per pod...
            claims = {claim["metadata"]["name"]: claim for claim in workload["spec"].get("volumeClaimTemplates", [])}
            assert mounts[data_dir] in claims, f"{service}: {data_dir} is not on a PersistentVolumeClaim"
            assert claims[mounts[data_dir]]["spec"]["resources"]["requests"]["storage"]
            # ...the consumer-group instance id is the pod's (stable) name...
            assert variables["GRIDFLEX_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            # ...and the governing Service exists and is headless.
            assert workload["spec"]["serviceName"] in headless, service
        else:
            # A Deployment's pod names are random: static membership would leave ghost members.
            assert "GRIDFLEX_INSTANCE_ID" not in variables, service
            volumes = {volume["name"]: volume for volume in workload["spec"]["template"]["spec"]["volumes"]}
            assert "emptyDir" in volumes[mounts[data_dir]], f"{service}: the state directory must be writable scratch"


def test_probes_tell_ready_from_alive(manifests: list[dict[str, Any]]) -> None:
    for service, workload in workloads(manifests).items():
        container = main_container(workload)
        web_port = int(plain_env(manifests, container)[web_port_setting(service)[0]])
        # Readiness: /health on the web port (503 while starting or rebalancing).
        readiness = container["readinessProbe"]
        assert readiness["httpGet"]["path"] == "/health" and probe_port(container, readiness) == web_port, service
        # Liveness: on the web port, but never /health, or every rebalance would restart workers.
        liveness = container["livenessProbe"]
        assert probe_port(container, liveness) == web_port, service
        assert liveness.get("httpGet", {}).get("path") != "/health", service
        # Startup: restoring state takes minutes; at least ten before liveness may kill the pod.
        startup = container["startupProbe"]
        assert startup["failureThreshold"] * startup["periodSeconds"] >= 600, service
        # SIGTERM: the worker commits its offsets and closes its tables; give it time to.
        assert 30 <= workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] <= 120, service


def test_every_container_has_requests_and_limits(manifests: list[dict[str, Any]]) -> None:
    for name, pod in pod_specs(manifests).items():
        for container in containers(pod):
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request and limit, f"{name}/{container['name']}: no {resource} request and limit"
                assert quantity(limit) >= quantity(request), f"{name}/{container['name']}: {resource} {limit} < {request}"


def test_every_pod_runs_locked_down_as_the_image_user(manifests: list[dict[str, Any]]) -> None:
    uid = image_user()
    assert uid == 10001
    for name, pod in pod_specs(manifests).items():
        # The pod: non-root, the image's uid, volumes writable through the group.
        pod_context = pod["securityContext"]
        assert pod_context["runAsNonRoot"] is True and pod_context["runAsUser"] == uid, name
        assert pod_context["fsGroup"] == uid, name
        assert pod.get("automountServiceAccountToken") is False, f"{name}: the services never call the API"
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == uid, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert "ALL" in context["capabilities"]["drop"], where
            assert context["readOnlyRootFilesystem"] is True, where
            # A read-only root needs somewhere to put temporary files.
            tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp is not an emptyDir"


def test_services_expose_their_web_ports(manifests: list[dict[str, Any]]) -> None:
    for service, workload in workloads(manifests).items():
        container = main_container(workload)
        variable, default_port = web_port_setting(service)
        # The container's port is the service's default web port, and the service is told so.
        (port,) = [port for port in container["ports"] if port["name"] == "http"]
        assert port["containerPort"] == default_port, service
        assert env(container)[variable]["value"] == str(default_port), service
        # Reachable on the same port through a Service that selects exactly these pods.
        (service_port,) = web_service(manifests, workload)["spec"]["ports"]
        assert service_port["port"] == default_port and service_port["targetPort"] in ("http", default_port)


def test_every_service_has_a_disruption_budget(manifests: list[dict[str, Any]]) -> None:
    budgets = of_kind(manifests, "PodDisruptionBudget")
    for service, workload in workloads(manifests).items():
        mine = [pdb for pdb in budgets if selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(workload))]
        assert len(mine) == 1, f"{service}: {len(mine)} PodDisruptionBudgets"
        spec = mine[0]["spec"]
        # One of the two limits, and not one that blocks every eviction (node drains).
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec), service
        assert spec.get("maxUnavailable", 1) not in (0, "0", "0%"), service


def test_stateless_services_autoscale_within_their_partitions(manifests: list[dict[str, Any]]) -> None:
    autoscalers = {hpa["spec"]["scaleTargetRef"]["name"]: hpa for hpa in of_kind(manifests, "HorizontalPodAutoscaler")}
    stateless = {service: w for service, w in workloads(manifests).items() if w["kind"] == "Deployment"}
    assert stateless, "expected at least settlement as a Deployment"
    for service, workload in stateless.items():
        hpa = autoscalers.get(workload["metadata"]["name"])
        assert hpa, f"{service}: no HorizontalPodAutoscaler"
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        # A worker beyond the partition count gets no partition: it would only cost a rebalance.
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= most_partitions(), service
        assert hpa["spec"]["metrics"], service
        # The HPA owns the replica count: the Deployment must not reset it on every upgrade.
        assert "replicas" not in workload["spec"], service
    # StatefulSets are not autoscaled (each scale step moves state between pods).
    targets = {hpa["spec"]["scaleTargetRef"]["kind"] for hpa in autoscalers.values()}
    assert targets == {"Deployment"}


def test_every_variable_the_chart_sets_is_a_real_setting(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The settings ignore unknown variables: a misspelt name would be silently lost.
    for service, workload in workloads(manifests).items():
        container = main_container(workload)
        names = {name for name in (*env(container), *config_map_env(manifests, container)) if name.startswith("GRIDFLEX_")}
        unknown = names - valid_variables(service)
        assert not unknown, f"{service}: {sorted(unknown)} are not gridflex settings"
        # And the values it gives are ones the settings accept (a clock mode, integer ports...).
        with monkeypatch.context() as patch:
            for name, value in plain_env(manifests, container).items():
                patch.setenv(name, value)
            for cls in [ServiceSettings, *settings_classes(service)]:
                cls()  # raises pydantic.ValidationError on a bad value
    # The setup Job runs shared commands only: shared settings only.
    (job,) = of_kind(manifests, "Job")
    for container in containers(job["spec"]["template"]["spec"]):
        unknown = {name for name in env(container) if name.startswith("GRIDFLEX_")} - valid_variables(None)
        assert not unknown, f"setup/{container['name']}: {sorted(unknown)}"


def test_every_setting_can_be_set_through_the_chart(manifests: list[dict[str, Any]]) -> None:
    # The names values.schema.json accepts (so a typo fails the install) are real settings, and
    # with what the chart sets itself they cover every setting: a new one fails here until the
    # schema lists it.
    shared_extra = schema_setting_names(None)
    assert shared_extra <= valid_variables(None)
    for service, workload in workloads(manifests).items():
        container = main_container(workload)
        chart_set = set(env(container)) | set(config_map_env(manifests, container))
        settable = schema_setting_names(service)
        assert settable <= valid_variables(service), sorted(settable - valid_variables(service))
        # The chart's own per-container variables are not offered twice.
        assert not settable & (PER_CONTAINER | {web_port_setting(service)[0]}), service
        assert shared_extra <= settable, f"{service}: a shared setting cannot be overridden per service"
        missing = valid_variables(service) - chart_set - settable
        if workload["kind"] == "Deployment":
            missing.discard("GRIDFLEX_INSTANCE_ID")  # on purpose: see the test on state and identity
        assert not missing, f"{service}: the chart cannot set {sorted(missing)}"


def test_the_connections_come_from_a_config_map_and_a_secret(manifests: list[dict[str, Any]]) -> None:
    (secret,) = [s for s in of_kind(manifests, "Secret") if "helm.sh/hook" not in s["metadata"].get("annotations", {})]
    for service, workload in workloads(manifests).items():
        container = main_container(workload)
        # Kafka: the ConfigMap, not a loopback default.
        bootstrap = config_map_env(manifests, container)["GRIDFLEX_KAFKA_BOOTSTRAP"]
        assert bootstrap and "127.0.0.1" not in bootstrap and "localhost" not in bootstrap
        # Postgres: the URL from the chart's Secret, never a plain value in the pod spec.
        reference = env(container)["GRIDFLEX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"] and reference["key"] in secret["data"]
    assert decoded(secret, "database-url") == "postgresql://gridflex@postgresql:5432/gridflex"


def test_a_database_password_is_url_encoded(helm: str, tmp_path: Path) -> None:
    # A password with URL syntax in it must come back intact from the URL the chart builds.
    password = "p@ss:w/rd#1%"
    rendered = render(helm, tmp_path, {"externalDatabase": {"password": password, "host": "db.internal"}})
    (secret,) = [s for s in of_kind(rendered, "Secret") if "helm.sh/hook" not in s["metadata"].get("annotations", {})]
    url = urlsplit(decoded(secret, "database-url"))
    assert (url.scheme, url.hostname, url.port, url.path) == ("postgresql", "db.internal", 5432, "/gridflex")
    assert unquote(url.password) == password and url.username == "gridflex"


# -- the setup Job ---------------------------------------------------------------------------------


def test_setup_job_prepares_kafka_and_postgres_before_install_and_upgrade(manifests: list[dict[str, Any]]) -> None:
    (job,) = of_kind(manifests, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    pod = job["spec"]["template"]["spec"]
    # In order: the topics, then the migrations; each a real gridflex command.
    steps = [container["args"] for container in containers(pod)]
    assert steps[0] == ["topics", "create"] and steps[-1] == ["db", "migrate"]
    for args in steps:
        group = gridflex_command.commands[args[0]]
        assert args[1] in group.commands, f"`gridflex {' '.join(args)}` does not exist"
    # A pre-install hook runs before the release's own objects exist: it may not read them.
    release_objects = {(m["kind"], m["metadata"]["name"]) for m in manifests
                       if "helm.sh/hook" not in m["metadata"].get("annotations", {})}
    for container in containers(pod):
        assert not container.get("envFrom"), container["name"]
        for entry in env(container).values():
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                assert ("Secret", reference["name"]) not in release_objects, container["name"]
    assert pod.get("serviceAccountName") in (None, "default"), "the chart's ServiceAccount does not exist yet"
    # The hook Secret it reads is created first (a lower weight).
    (hook_secret,) = [s for s in of_kind(manifests, "Secret") if "helm.sh/hook" in s["metadata"].get("annotations", {})]
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert decoded(hook_secret, "database-url").startswith("postgresql://")


def test_provider_ids_follow_the_topic_catalogue() -> None:
    # The schema accepts exactly the provider ids `gridflex partner add` accepts.
    pattern = schema()["properties"]["setup"]["properties"]["providers"]["items"]["pattern"]
    assert pattern == PROVIDER_ID.pattern


# -- values overrides ------------------------------------------------------------------------------


def test_overrides_take_effect(helm: str, tmp_path: Path, manifests: list[dict[str, Any]]) -> None:
    rendered = render(helm, tmp_path, {
        "externalDatabase": {"existingSecret": "ledger-db", "existingSecretUrlKey": "url"},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "dispatch": {"enabled": False},
        "enrollment": {"settings": {"GRIDFLEX_ENROLLMENT_UNKNOWN_ACCOUNT_WAIT_S": 3600},
                       "ingress": {"enabled": True, "hostname": "api.example.com", "tls": True}},
        "settlement": {"autoscaling": {"enabled": False}, "replicaCount": 2},
        "vtn": {"ingress": {"enabled": True, "hostname": "openadr.example.com", "tls": True}},
        "setup": {"providers": ["energyhub"]},
    })
    deployed = workloads(rendered)
    # dispatch disabled: nothing of it is rendered.
    assert "dispatch" not in deployed
    assert not [m for m in rendered if component(m) == "dispatch"]
    assert sorted(deployed) == sorted(set(workloads(manifests)) - {"dispatch"})

    # existingSecret: the chart renders no database URL of its own (neither Secret nor hook
    # Secret), and every container reads the given Secret and key.
    assert not [s for s in of_kind(rendered, "Secret") if "database-url" in s.get("data", {})]
    for name, pod in pod_specs(rendered).items():
        for container in containers(pod):
            reference = env(container)["GRIDFLEX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert reference == {"name": "ledger-db", "key": "url"}, f"{name}/{container['name']}"

    # A ServiceMonitor per service, each scraping /metrics through the service's web Service
    # only (the headless one would scrape every pod twice), labelled as deploy/prometheus/ does.
    monitors = {component(m): m for m in of_kind(rendered, "ServiceMonitor")}
    assert sorted(monitors) == sorted(deployed)
    for service, workload in deployed.items():
        spec = monitors[service]["spec"]
        assert monitors[service]["metadata"]["labels"]["release"] == "prometheus"
        scraped = [
            s for s in services_for(rendered, workload)
            if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])
            and all(expression["operator"] == "DoesNotExist" and expression["key"] not in s["metadata"]["labels"]
                    for expression in spec["selector"].get("matchExpressions", []))
        ]
        assert scraped == [web_service(rendered, workload)], service
        (endpoint,) = spec["endpoints"]
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
        relabeled = {rule["targetLabel"]: rule["replacement"] for rule in endpoint["relabelings"]}
        assert relabeled == {"job": "gridflex", "service": service}

    # A service's own setting reaches its container only.
    assert env(main_container(deployed["enrollment"]))["GRIDFLEX_ENROLLMENT_UNKNOWN_ACCOUNT_WAIT_S"]["value"] == "3600"
    assert "GRIDFLEX_ENROLLMENT_UNKNOWN_ACCOUNT_WAIT_S" not in env(main_container(deployed["telemetry"]))

    # The enrollment API's and the VTN's Ingresses route their hosts to their Services' web
    # ports, over TLS.
    ingresses = {component(ingress): ingress for ingress in of_kind(rendered, "Ingress")}
    assert sorted(ingresses) == ["enrollment", "vtn"]
    for service, host in {"enrollment": "api.example.com", "vtn": "openadr.example.com"}.items():
        (rule,) = ingresses[service]["spec"]["rules"]
        backend = rule["http"]["paths"][0]["backend"]["service"]
        assert rule["host"] == host
        assert backend == {"name": web_service(rendered, deployed[service])["metadata"]["name"], "port": {"name": "http"}}
        assert ingresses[service]["spec"]["tls"][0]["hosts"] == [host]
    # The VTN tells its clients (/auth/server's tokenURL) the URL they reach it at: the Ingress's.
    assert vtn_token_url(rendered) == "https://openadr.example.com/auth/token"

    # settlement without autoscaling: a fixed replica count and no HPA.
    assert deployed["settlement"]["spec"]["replicas"] == 2
    assert not of_kind(rendered, "HorizontalPodAutoscaler")

    # Each provider's topics are created after the catalogue's, before the migrations.
    (job,) = of_kind(rendered, "Job")
    steps = [container["args"] for container in containers(job["spec"]["template"]["spec"])]
    assert steps == [["topics", "create"], ["partner", "add", "energyhub"], ["db", "migrate"]]


def vtn_public_url(manifests: list[dict[str, Any]]) -> str:
    """The GRIDFLEX_VTN_PUBLIC_URL the chart gives the VTN's container."""
    return env(main_container(workloads(manifests)["vtn"]))["GRIDFLEX_VTN_PUBLIC_URL"]["value"]


def vtn_token_url(manifests: list[dict[str, Any]]) -> str:
    """The token endpoint the rendered VTN announces at /auth/server (services/vtn/api.py)."""
    from services.vtn.api import base_url
    from services.vtn.settings import VtnSettings

    settings = VtnSettings(GRIDFLEX_VTN_PUBLIC_URL=vtn_public_url(manifests))
    assert settings.public_url, "without a public URL the VTN answers with each request's own host"
    return f"{base_url(None, settings)}/auth/token"  # the request is not consulted when a public URL is set


def test_the_vtn_public_url_is_where_clients_reach_it(
    helm: str, tmp_path: Path, manifests: list[dict[str, Any]]
) -> None:
    # The VTN is called from outside the cluster; /auth/server sends clients to
    # <public URL>/auth/token, so the public URL must be on the host its Ingress serves.
    # Defaults: no Ingress, no URL: the VTN answers with each request's own host.
    assert vtn_public_url(manifests) == ""
    cases = [
        # With an Ingress: its host (https with TLS) and its path.
        ({"ingress": {"enabled": True, "hostname": "openadr.example.com", "tls": True}},
         "https://openadr.example.com/auth/token"),
        ({"ingress": {"enabled": True, "hostname": "openadr.example.com"}}, "http://openadr.example.com/auth/token"),
        ({"ingress": {"enabled": True, "hostname": "utility.example.com", "path": "/openadr/", "tls": True}},
         "https://utility.example.com/openadr/auth/token"),
        # vtn.publicUrl wins (TLS ended in front of the Ingress), on the same host.
        ({"publicUrl": "https://openadr.example.com/", "ingress": {"enabled": True, "hostname": "openadr.example.com"}},
         "https://openadr.example.com/auth/token"),
        # Without an Ingress (a load balancer of one's own): vtn.publicUrl as given.
        ({"publicUrl": "https://vtn.utility.example"}, "https://vtn.utility.example/auth/token"),
    ]
    for vtn, token_url in cases:
        rendered = render(helm, tmp_path, {"vtn": vtn})
        assert vtn_token_url(rendered) == token_url, vtn
        ingresses = [i for i in of_kind(rendered, "Ingress") if component(i) == "vtn"]
        if vtn.get("ingress", {}).get("enabled"):
            (ingress,) = ingresses
            (rule,) = ingress["spec"]["rules"]
            assert urlsplit(token_url).hostname == rule["host"], vtn
            assert urlsplit(token_url).path.startswith(rule["http"]["paths"][0]["path"].rstrip("/") + "/"), vtn
        else:
            assert not ingresses
    # The chart owns the variable: offered once (vtn.publicUrl), not also as a raw setting, and a
    # URL the VTN could not hand out (no scheme) fails the install.
    assert "GRIDFLEX_VTN_PUBLIC_URL" not in schema_setting_names("vtn")
    for vtn in ({"settings": {"GRIDFLEX_VTN_PUBLIC_URL": "https://openadr.example.com"}},
                {"publicUrl": "openadr.example.com"}):
        values_path = tmp_path / "bad.yaml"
        values_path.write_text(yaml.safe_dump({"vtn": vtn}))
        result = run_helm(helm, "template", RELEASE, str(CHART), "--values", str(values_path))
        assert result.returncode != 0, f"{vtn} was accepted"


def test_defaults_render_no_service_monitor_or_ingress(manifests: list[dict[str, Any]]) -> None:
    # Both need something the cluster may not have (the Prometheus Operator's CRDs, an ingress
    # controller and a host name): off unless asked for.
    assert not of_kind(manifests, "ServiceMonitor")
    assert not of_kind(manifests, "Ingress")


def test_the_schema_rejects_what_the_services_would_ignore(helm: str, tmp_path: Path) -> None:
    # A misspelt setting, a misspelt service and the `latest` tag fail the render (and install).
    for values in (
        {"enrollment": {"settings": {"GRIDFLEX_ENROLLMENT_UNKNOWN_ACOUNT_WAIT_S": 60}}},
        {"telemtry": {"enabled": False}},
        {"image": {"tag": "latest"}},
    ):
        values_path = tmp_path / "bad.yaml"
        values_path.write_text(yaml.safe_dump(values))
        result = run_helm(helm, "template", RELEASE, str(CHART), "--values", str(values_path))
        assert result.returncode != 0, f"{values} was accepted"


# -- documentation ---------------------------------------------------------------------------------


def documented_parameters() -> list[str]:
    return re.findall(r"^\s*## @param (\S+)", (CHART / "values.yaml").read_text(), flags=re.MULTILINE)


def leaf_paths(node: Any, prefix: str = "") -> list[str]:
    """Every key path in values.yaml that holds a value (an empty map or list counts as one)."""
    if isinstance(node, dict) and node:
        return [path for key, value in node.items() for path in leaf_paths(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented_in_values_readme_and_schema() -> None:
    parameters = documented_parameters()
    assert len(parameters) == len(set(parameters)), "a parameter is documented twice"
    # Each value has its @param line (itself, or a map documented as a whole)...
    for path in leaf_paths(values_file()):
        assert any(path == p or path.startswith(f"{p}.") for p in parameters), f"{path} has no ## @param line"
    # ...each @param line names a value that exists...
    for parameter in parameters:
        node: Any = values_file()
        for part in parameter.split("."):
            assert isinstance(node, dict) and part in node, f"## @param {parameter}: no such value"
            node = node[part]
    # ...the README's parameter tables list exactly the @param lines, with their defaults...
    rows = re.findall(r"^\| `([^`]+)` \| .* \| `(.*)` \|$", (CHART / "README.md").read_text(), flags=re.MULTILINE)
    assert [name for name, _ in rows] == parameters, "README.md's parameter tables differ from values.yaml's @param lines"
    for name, shown in rows:
        node = values_file()
        for part in name.split("."):
            node = node[part]
        assert yaml.safe_load(shown) == node, f"README.md gives {name} the default {shown}, values.yaml {node!r}"
    # ...and values.schema.json describes each one.
    for parameter in parameters:
        node = schema()
        for part in parameter.split("."):
            assert part in node.get("properties", {}), f"values.schema.json does not describe {parameter}"
            node = node["properties"][part]
