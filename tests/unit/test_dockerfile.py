"""The image (Dockerfile) can run every service: it holds what the code reads at run time.

There is no Docker engine in the test environment, so the Dockerfile is read as data: its COPY
instructions (with .dockerignore) give where each repository file lands in the image, and the
editable install's working directory gives the image's REPO_ROOT (gridflex/__init__.py computes it
from the package's location). What the code reads relative to REPO_ROOT is derived from the code
itself (``REPO_ROOT / "..."`` expressions, files beside a module), so a new data directory or a
new YAML file beside a service fails here until the image carries it.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
from pathlib import Path, PurePosixPath


from gridflex.settings import ServiceSettings
from tests.repository import dockerfile_env, dockerfile_instructions, service_folders, web_port_setting

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PACKAGES = ("gridflex", "services")
# The image's user: the Helm chart's pods run as it (runAsUser, fsGroup).
IMAGE_UID = 10001
# Paths the code names relative to REPO_ROOT that the image does without, and why.
NOT_IN_THE_IMAGE = {
    "var": "the local stack's state (gridflex/stack.py)",
    "var/services": "state, not data: GRIDFLEX_DATA_DIR points elsewhere (test_state_lives_outside_the_application)",
    ".cache": "the local stack's downloads (gridflex/stack.py)",
    "deploy/local/kafka": "the local stack's Kafka build (`gridflex stack`)",
    "deploy/prometheus": "a Prometheus for the local stack (gridflex/prometheus.py)",
}


# -- reading the Dockerfile ------------------------------------------------------------------------


def words(arguments: str) -> list[str]:
    """An instruction's arguments, exec (JSON) or shell form, without --flags."""
    parts = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    return [part for part in parts if not part.startswith("--")]


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def ignored(relative: PurePosixPath) -> bool:
    """Whether .dockerignore keeps a file out of the build context (a pattern matches it or one of
    its parent directories; `!` re-includes)."""
    excluded = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [PurePosixPath(*relative.parts[:n]) for n in range(1, len(relative.parts) + 1)]
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(str(candidate), variant) for candidate in candidates for variant in variants):
            excluded = not negate
    return excluded


class Image:
    """Where the build puts the repository's files, step by step."""

    def __init__(self) -> None:
        self.copies: list[tuple[int, Path, PurePosixPath]] = []  # (step, source in the repo, destination)
        self.runs: list[tuple[int, str, PurePosixPath]] = []  # (step, command, working directory)
        workdir = PurePosixPath("/")
        for step, (keyword, arguments) in enumerate(dockerfile_instructions()):
            if keyword == "WORKDIR":
                workdir = workdir / arguments
            elif keyword == "RUN":
                self.runs.append((step, arguments, workdir))
            elif keyword in ("COPY", "ADD"):
                *sources, destination = words(arguments)
                target = workdir / destination
                into_directory = destination.endswith("/") or len(sources) > 1
                for source in sources:
                    matches = sorted(ROOT.glob(source.rstrip("/"))) if any(c in source for c in "*?[") \
                        else [ROOT / source.rstrip("/")]
                    for path in matches:
                        assert path.exists(), f"COPY {source}: no such file in the repository"
                        placed = target / path.name if path.is_file() and into_directory else target
                        self.copies.append((step, path, placed))

    def location(self, repository_file: Path) -> PurePosixPath | None:
        """Where a repository file ends up in the image (the last COPY that carries it), or None."""
        relative = PurePosixPath(repository_file.relative_to(ROOT).as_posix())
        if ignored(relative):
            return None
        where = None
        for _, source, destination in self.copies:
            if source == repository_file:
                where = destination
            elif source.is_dir() and repository_file.is_relative_to(source):
                where = destination / repository_file.relative_to(source).as_posix()
        return where

    def copied_at(self, repository_path: Path) -> int | None:
        """The first build step that copies a repository file or directory."""
        steps = [step for step, source, _ in self.copies
                 if source == repository_path or repository_path.is_relative_to(source) and source.is_dir()]
        return min(steps, default=None)

    def project_installs(self) -> list[tuple[int, str, PurePosixPath]]:
        """The RUNs that pip-install the gridflex project itself (`.`)."""
        return [(step, command, workdir) for step, command, workdir in self.runs
                if re.search(r"pip install\b[^&;]*\s\.(\s|$)", command)]

    def repo_root(self) -> PurePosixPath:
        """REPO_ROOT inside the image: the directory the project is installed from in editable
        mode (the packages are imported from there, and REPO_ROOT is their parent)."""
        (install,) = self.project_installs()
        return install[2]


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc")


# -- reading the code ------------------------------------------------------------------------------


def source_files() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def repo_root_paths() -> set[str]:
    """Every ``REPO_ROOT / "a" / "b"`` the code names, as "a/b" (the whole chain)."""
    found: set[str] = set()
    for path in source_files():
        tree = ast.parse(path.read_text())
        inner = {id(node.left) for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.BinOp) or not isinstance(node.op, ast.Div) or id(node) in inner:
                continue
            parts: list[str] = []
            while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                if not (isinstance(node.right, ast.Constant) and isinstance(node.right.value, str)):
                    break
                parts.insert(0, node.right.value)
                node = node.left
            else:
                if isinstance(node, ast.Name) and node.id == "REPO_ROOT":
                    found.add("/".join(parts))
    return found


def files_beside_modules() -> set[Path]:
    """Files a module opens next to itself: ``Path(__file__).with_name("...")``."""
    found: set[Path] = set()
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "with_name"
                    and "__file__" in ast.unparse(node.func.value)):
                found.add(path.with_name(node.args[0].value))
    return found


def settings_variable(relative: str) -> str | None:
    """The shared setting whose default is REPO_ROOT / ``relative`` (e.g. GRIDFLEX_SCHEMAS_DIR), if any."""
    from gridflex import REPO_ROOT

    prefix = ServiceSettings.model_config.get("env_prefix", "")
    for name, field in ServiceSettings.model_fields.items():
        if field.default == REPO_ROOT / relative:
            return f"{prefix}{name}".upper()
    return None


# -- the properties --------------------------------------------------------------------------------


def test_the_packages_are_imported_from_where_their_data_is() -> None:
    image = Image()
    # One install of the project, editable, from the directory gridflex/ and services/ are copied
    # into: a regular install would put the modules in site-packages, REPO_ROOT with them, away
    # from programs/, migrations/ and the YAML pyproject.toml does not package.
    installs = image.project_installs()
    assert len(installs) == 1, [command for _, command, _ in installs]
    step, command, workdir = installs[0]
    assert re.search(r"(\s-e|--editable)\s+\.(\s|$)", command), f"not an editable install: {command}"
    for package in PACKAGES:
        init = ROOT / package / "__init__.py"
        assert image.location(init) == workdir / package / "__init__.py", f"{package}/ is not copied into {workdir}"
        assert image.copied_at(ROOT / package) < step, f"{package}/ is copied after the install"
    assert image.location(ROOT / "pyproject.toml") == workdir / "pyproject.toml"
    # Its dependencies come from the cached layer: the project install adds none, and keeps to
    # the pinned versions.
    assert "--no-deps" in command and "-c constraints.txt" in command, command


def test_dependencies_are_a_layer_of_their_own() -> None:
    # The third-party install runs before any code is copied, so changing the code rebuilds only
    # the layers after it; and it uses the pinned constraints.
    image = Image()
    (project_step, _, _) = image.project_installs()[0]
    dependency_installs = [(step, command) for step, command, _ in image.runs
                           if "pip install" in command and step < project_step]
    assert dependency_installs, "no dependency layer before the project install"
    step, command = dependency_installs[0]
    assert "-c constraints.txt" in command, command
    for package in PACKAGES:
        assert image.copied_at(ROOT / package) > step, f"{package}/ is copied before the dependency layer"
    inputs_before = {source.relative_to(ROOT).as_posix() for copy_step, source, _ in image.copies if copy_step < step}
    assert inputs_before <= {"pyproject.toml", "constraints.txt"}, sorted(inputs_before)


def test_everything_the_code_reads_relative_to_repo_root_is_in_the_image() -> None:
    image = Image()
    root = image.repo_root()
    env = dockerfile_env()
    named = repo_root_paths()
    # The derivation sees what it must (a broken scan would make the test pass vacuously).
    assert {"schemas", "programs", "migrations"} <= named, sorted(named)
    needed = sorted(named - set(NOT_IN_THE_IMAGE))
    for relative in needed:
        directory = ROOT / relative
        assert directory.exists(), f"the code reads REPO_ROOT/{relative}, which the repository does not have"
        # Where the code looks: a setting's variable set by the image wins over REPO_ROOT.
        variable = settings_variable(relative)
        expected = PurePosixPath(env[variable]) if variable in env else root / relative
        files = files_under(directory) if directory.is_dir() else [directory]
        assert files, relative
        for path in files:
            rel = path.relative_to(directory).as_posix() if directory.is_dir() else ""
            want = expected / rel if rel else expected
            assert image.location(path) == want, (
                f"{path.relative_to(ROOT)} is at {image.location(path)} in the image; the code reads {want}")


def test_files_beside_the_modules_are_in_the_image() -> None:
    # The services' OpenAPI documents, the VTN's openadr3.yaml...: every non-Python file in the
    # packages sits beside its module in the image (where Path(__file__) finds it).
    image = Image()
    root = image.repo_root()
    data = [path for package in PACKAGES for path in files_under(ROOT / package) if path.suffix != ".py"]
    opened = files_beside_modules()
    assert {ROOT / "services" / "vtn" / "openadr3.yaml"} <= opened, sorted(opened)
    assert opened <= set(data), f"the code opens files that do not exist: {sorted(opened - set(data))}"
    for path in data:
        relative = path.relative_to(ROOT).as_posix()
        assert image.location(path) == root / relative, f"{relative} is not in the image beside its module"


def test_state_lives_outside_the_application() -> None:
    # The root filesystem may be read-only (the Helm chart mounts it so): the services write only
    # their state directory, which the image creates for its user, outside the application.
    image = Image()
    root = image.repo_root()
    env = dockerfile_env()
    data_dir = PurePosixPath(env["GRIDFLEX_DATA_DIR"])
    assert not data_dir.is_relative_to(root), f"GRIDFLEX_DATA_DIR={data_dir} is inside {root}"
    commands = " && ".join(command for _, command, _ in image.runs)
    assert f"chown {IMAGE_UID}:{IMAGE_UID} {data_dir}" in commands or f"chown {IMAGE_UID} {data_dir}" in commands
    # Python writes no bytecode next to the sources at run time, and the application stays root's.
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert not re.search(rf"\b(chown|chmod)\b[^&;]*\s{re.escape(str(root))}(/|\s|$)", commands), "the app is made writable"


def test_the_image_runs_as_the_non_root_user_10001() -> None:
    users = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    uid, _, gid = users[-1].partition(":")
    assert uid == str(IMAGE_UID) and gid in ("", str(IMAGE_UID)), users[-1]
    commands = " ".join(command for keyword, command in dockerfile_instructions() if keyword == "RUN")
    assert re.search(rf"useradd\b.*--uid {IMAGE_UID}\b", commands), "the user is not created with its uid"


def test_the_base_image_is_pinned() -> None:
    (base,) = [words(arguments)[0] for keyword, arguments in dockerfile_instructions() if keyword == "FROM"]
    assert "$" not in base, f"FROM {base}: an ARG decides the base image"
    if "@sha256:" not in base:
        name = base.rsplit("/", 1)[-1]
        assert ":" in name, f"FROM {base}: no tag (that is `latest`)"
        tag = name.split(":", 1)[1]
        assert tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), f"FROM {base}: not pinned to a patch release"


def test_every_service_web_port_is_exposed() -> None:
    exposed = {int(port.split("/")[0]) for keyword, arguments in dockerfile_instructions() if keyword == "EXPOSE"
               for port in arguments.split()}
    services = service_folders()
    assert len(services) >= 6, services
    ports = {service: web_port_setting(service)[1] for service in services}
    missing = {service: port for service, port in ports.items() if port not in exposed}
    assert not missing, f"not EXPOSEd: {missing}"
    assert exposed == set(ports.values()), f"EXPOSEd but no service's port: {sorted(exposed - set(ports.values()))}"
