"""docker-compose.yml against the code: services, SHRINKRAY_* variables, pinned images, GPU reservation.

No Docker engine is needed: the file is parsed and checked against Settings, the CLI and the Dockerfile.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from shrinkray.cli import app as cli
from shrinkray.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PREFIX = Settings.model_config["env_prefix"]
APP_SERVICES = ["migrate", "api", "worker-cpu", "worker-gpu"]
EXPECTED_SERVICES = ["postgres", "redis", "minio", "minio-init", *APP_SERVICES]
# Fields whose embedded default (SQLite, file broker, local directory, AWS) would be wrong in compose.
COMPOSE_FIELDS = ["home", "database_url", "broker_url", "artifact_url", "s3_endpoint_url", "s3_access_key_id",
                  "s3_secret_access_key"]
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _env_name(field: str) -> str:
    return f"{PREFIX}{field}".upper()


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def _resolved(value: str) -> str:
    """The value compose uses with no .env: every ${VAR:-default} replaced by its default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def test_every_expected_service_exists() -> None:
    assert set(EXPECTED_SERVICES) <= set(SERVICES)


def test_the_required_variables_are_real_settings_fields() -> None:
    assert set(COMPOSE_FIELDS) <= set(Settings.model_fields), "a Settings field was renamed: update compose"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_set_every_required_variable(name: str) -> None:
    env = _environment(SERVICES[name])
    missing = [_env_name(f) for f in COMPOSE_FIELDS if not _resolved(env.get(_env_name(f), ""))]
    assert not missing, f"{name} does not set {missing}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_share_one_environment(name: str) -> None:
    assert _environment(SERVICES[name]) == _environment(SERVICES["api"])


def test_every_shrinkray_variable_is_a_settings_field() -> None:
    known = {_env_name(field) for field in Settings.model_fields}
    for name, service in SERVICES.items():
        unknown = {var for var in _environment(service) if var.startswith(PREFIX.upper())} - known
        assert not unknown, f"{name} sets {unknown}, which Settings does not read (typo?)"


def test_the_compose_environment_is_accepted_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in _environment(SERVICES["api"]).items():
        monkeypatch.setenv(var, _resolved(value))
    settings = Settings()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in settings.database_url
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.artifact_url.startswith("s3://")
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.s3_access_key_id == _resolved(_environment(SERVICES["minio"])["MINIO_ROOT_USER"])
    assert settings.s3_secret_access_key == _resolved(_environment(SERVICES["minio"])["MINIO_ROOT_PASSWORD"])


@pytest.mark.parametrize("name", EXPECTED_SERVICES)
def test_images_are_pinned(name: str) -> None:
    image = SERVICES[name].get("image", "")
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest", f"{name}: image {image!r} must name a fixed tag"
    if repository.startswith("minio/"):
        assert tag.startswith("RELEASE."), f"{name}: pin MinIO to a RELEASE tag, not {tag!r}"


def test_the_gpu_worker_reserves_an_nvidia_device_and_the_cpu_worker_does_not() -> None:
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "deploy" not in SERVICES["worker-cpu"]
    assert "cu" in SERVICES["worker-gpu"]["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1]


def test_the_gpu_image_brings_a_triton_the_kernels_run_on() -> None:
    """torch >= 2.8 brings Triton >= 3.4 (TMA descriptors, cached autotuner picks); the Dockerfile's default
    torch is the CPU image's. Triton's cache (compiled kernels, picks) and inductor's (the speed report's compiled
    decode steps) live on the GPU worker's volume."""
    worker = SERVICES["worker-gpu"]
    major, minor = (int(part) for part in worker["build"]["args"]["TORCH_VERSION"].split(".")[:2])
    assert (major, minor) >= (2, 8)
    mounts = [volume.split(":")[1] for volume in worker["volumes"]]
    for variable in ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        cache = _environment(worker)[variable]
        assert any(cache.startswith(mount.rstrip("/") + "/") for mount in mounts if not mount.startswith("/models"))


def test_depends_on_targets_exist_and_wait_for_the_right_condition() -> None:
    for name, service in SERVICES.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}'s health check: add one"
            else:
                assert condition == "service_completed_successfully"
                assert SERVICES[target].get("restart") == "no", f"{target} is one-shot: restart must be 'no'"
    for name in ("api", "worker-cpu", "worker-gpu"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert SERVICES[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_commands_name_real_cli_commands() -> None:
    commands = {c.name or c.callback.__name__ for c in cli.registered_commands}  # type: ignore[union-attr]
    assert SERVICES["migrate"]["command"] == ["migrate"]
    assert SERVICES["api"]["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert SERVICES["worker-cpu"]["command"] == ["worker", "--queues", "cpu"]
    assert SERVICES["worker-gpu"]["command"] == ["worker", "--queues", "gpu,cpu"]
    assert {SERVICES[name]["command"][0] for name in APP_SERVICES} <= commands


def test_redis_keeps_queued_work() -> None:
    command = " ".join(SERVICES["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command


def test_the_minio_init_job_creates_the_artifact_bucket() -> None:
    bucket = _resolved(_environment(SERVICES["api"])[_env_name("artifact_url")]).removeprefix("s3://")
    init = " ".join(SERVICES["minio-init"]["command"])
    assert f"mc mb --ignore-existing local/{bucket.split('/')[0]}" in init


def test_the_dockerfile_copies_every_package() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for name in APP_SERVICES:
        assert SERVICES[name]["build"]["dockerfile"] == "docker/Dockerfile"
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for package in (p.rstrip("*") for p in packages["include"]):
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), f"Dockerfile misses {package}/"
    assert re.search(r"^FROM python:3\.11[\w.-]*-slim", dockerfile, re.M)
