"""The compose file, validated structurally (tests/test_compose_engine.py runs it on an engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
OBPIPE_SERVICES = {"ingestor", "writer", "web", "jobs", "simulator"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def settings_variables() -> set[str]:
    source = (ROOT / "pipeline" / "settings.py").read_text()
    return set(re.findall(r'self\.(?:parse|raw)\(\s*"([A-Z_]+)"', source))


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis"} | OBPIPE_SERVICES
    assert services["simulator"]["profiles"] == ["demo"]
    assert all("profiles" not in services[name] for name in set(services) - {"simulator"})


def test_commands_are_real_entry_points(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["obpipe"]' in dockerfile and "USER obpipe" in dockerfile
    for name in OBPIPE_SERVICES:
        command = compose["services"][name]["command"]
        assert command[0] in COMMANDS, (name, command)
        health = compose["services"][name]["healthcheck"]["test"]
        if health[1] == "obpipe":
            assert health[2] in COMMANDS


def test_every_service_has_healthcheck_and_restart(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name


def test_redis_is_durable(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert set(compose["volumes"]) >= {"redis", "data"}


def test_scaling_rules(compose: dict[str, Any]) -> None:
    for name in ("ingestor", "writer", "jobs"):
        service = compose["services"][name]
        assert "container_name" not in service and "ports" not in service, name
        assert "OBPIPE_ID" not in service["environment"], "ids must stay unique per container"
        assert any(v.endswith(":/data") for v in service["volumes"])
    # Loopback only; the host port defaults to 5151 (WEB_HOST_PORT moves it, e.g. to 0 = any).
    assert compose["services"]["web"]["ports"] == ["127.0.0.1:${WEB_HOST_PORT:-5151}:5151"]


def test_token_store_is_a_named_volume_of_the_ingestors(compose: dict[str, Any]) -> None:
    # The refresher rewrites the pair, so it cannot be a read-only secret; every ingestor
    # replica mounts the same named volume and reads the same file.
    services = compose["services"]
    ingestor = services["ingestor"]
    path = Path(ingestor["environment"]["STOCKBIT_TOKEN_FILE"])
    assert f"tokens:{path.parent}" in ingestor["volumes"] and "tokens" in compose["volumes"]
    assert any(v.endswith(":/data") for v in ingestor["volumes"])
    assert "STOCKBIT_TOKEN" not in ingestor["environment"]
    assert "secrets" not in compose
    for name, service in services.items():
        assert not service.get("secrets"), name
        if name != "ingestor":
            assert not any(str(v).startswith("tokens:") for v in service.get("volumes", [])), name
    # A fresh named volume takes the owner of the image's folder: the non-root user's.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert (
        f"mkdir -p /data {path.parent}" in dockerfile
        and f"chown obpipe /data {path.parent}" in dockerfile
    )


def test_every_variable_is_documented(compose: dict[str, Any]) -> None:
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", example, re.M))
    used = settings_variables()
    for service in compose["services"].values():
        env = service.get("environment", {})
        used |= {k for k in env if k != "PYTHONUNBUFFERED"}
    assert used - documented == set(), "missing from .env.example"
    assert {v for v in used if f"`{v}`" not in readme} == set(), "missing from the README table"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_accepts_it() -> None:
    for extra in ([], ["--profile", "demo"]):
        subprocess.run(
            ["docker-compose", "-f", "docker-compose.yml", *extra, "config", "-q"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
