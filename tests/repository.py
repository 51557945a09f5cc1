"""What the deployment tests (compose, the image, the Helm chart) read from the repository: the
services that exist, the settings each accepts, and the Dockerfile's instructions."""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from gridflex.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def service_folders() -> list[str]:
    """The gridflex services that exist: services/<name>/app.py."""
    return sorted(app.parent.name for app in (ROOT / "services").glob("*/app.py"))


def settings_classes(service: str) -> list[type[BaseSettings]]:
    """The settings classes services/<service>/settings.py defines (maybe none)."""
    try:
        module = importlib.import_module(f"services.{service}.settings")
    except ModuleNotFoundError:
        return []
    return [
        cls for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseSettings) and cls.__module__ == module.__name__
    ]


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable -> field name, as pydantic-settings reads them for ``cls``."""
    prefix = cls.model_config.get("env_prefix", "")
    names: dict[str, str] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names[alias.upper()] = field_name
        elif isinstance(alias, AliasChoices):
            names.update({choice.upper(): field_name for choice in alias.choices if isinstance(choice, str)})
        else:
            names[f"{prefix}{field_name}".upper()] = field_name
    return names


def valid_variables(service: str | None) -> set[str]:
    """Every GRIDFLEX_* variable a container may set: the shared settings plus the service's own."""
    names = set(env_names(ServiceSettings))
    for cls in settings_classes(service) if service else []:
        names |= set(env_names(cls))
    return names


def web_port_setting(service: str) -> tuple[str, int]:
    """The variable holding a service's web port (its ``web_port`` field) and its default."""
    for cls in settings_classes(service):
        for name, field_name in env_names(cls).items():
            if field_name == "web_port":
                return name, cls.model_fields["web_port"].default
    pytest.fail(f"services/{service}/settings.py has no web_port setting")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in logical.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def dockerfile_env() -> dict[str, str]:
    """The image's ENV settings."""
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            words = shlex.split(arguments)
            if "=" in words[0]:
                env.update(word.split("=", 1) for word in words)
            else:  # legacy form: ENV KEY value
                env[words[0]] = " ".join(words[1:])
    return env
