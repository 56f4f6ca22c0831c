"""The docker compose stack: valid Compose, and shaped the way the project needs.

No Docker engine runs where the tests run, so the file is checked statically: against the
Compose specification (check-jsonschema's vendored schema, offline), then for the things
that would silently break a deployment: a missing service, a ``depends_on`` without a
condition, a service without a health check, a public primary bucket, an app process
missing a setting, a variable the compose file uses but ``.env.example`` does not document.
The one piece of Python in the stack that talks to an emulator (``docker/cloudfront_init.py``)
runs against the same moto version the stack pins.

Plain pytest: no Django, no fixtures from the integration harness.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
MINIO_INIT = ROOT / "docker" / "minio-init.sh"
CLOUDFRONT_INIT = ROOT / "docker" / "cloudfront_init.py"

QUEUE_WORKERS = {
    "cpu": "worker-cpu",
    "transfer": "worker-transfer",
    "cdn": "worker-cdn",
    "migration": "worker-migration",
}
BACKING_SERVICES = {"postgres", "redis", "minio", "minio-init", "cloudfront", "cloudfront-init"}
APP_SERVICES = {"migrate", "web", "beat", "flower", "cloudfront-init", *QUEUE_WORKERS.values()}
EXPECTED_SERVICES = BACKING_SERVICES | APP_SERVICES
# Jobs that run to completion at start-up; everything else runs for the stack's lifetime.
ONE_SHOT_SERVICES = {"minio-init", "cloudfront-init", "migrate"}

# What project/settings.py reads from the environment.
APP_ENVIRONMENT = {
    "DATABASE_URL",
    "REDIS_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_S3_REGION_NAME",
    "AWS_S3_ENDPOINT_URL",
    "PIPELINE_PRIMARY_BUCKET",
    "PIPELINE_PUBLIC_BUCKET",
    "PIPELINE_PUBLIC_DOMAIN",
    "CLOUDFRONT_DISTRIBUTION_ID",
    "AWS_CLOUDFRONT_ENDPOINT_URL",
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
    "DJANGO_ALLOWED_HOSTS",
}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}, ${NAME:+alt}, $NAME.
# "$$" is Compose's escape for a literal "$" and is removed before matching.
_BRACED = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
_BARE = re.compile(r"\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


# --- helpers ------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def load_env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        assert sep, f".env.example line {number} is not NAME=value: {line!r}"
        assert name not in values, f".env.example sets {name} twice"
        values[name] = value
    return values


def walk_strings(node: object) -> Iterator[str]:
    """Every string value in the parsed file (Compose interpolates values, not keys)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)


def interpolations(text: str) -> Iterator[tuple[str, str | None, str | None]]:
    """(name, operator, argument) of each variable reference in one string."""
    unescaped = text.replace("$$", "")
    for match in _BRACED.finditer(unescaped):
        yield match["name"], match["op"], match["arg"]
    for match in _BARE.finditer(_BRACED.sub("", unescaped)):
        yield match["name"], None, None


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the "- NAME=value" form
        return dict(item.partition("=")[::2] for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def healthcheck_test(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


# --- the Compose specification ------------------------------------------------------------


def run_check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    # The schema ships inside the check-jsonschema package; a proxy that refuses every
    # connection proves the check never reaches for the network.
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    result = run_check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_an_invalid_file(tmp_path: Path) -> None:
    """Guards the test above against validating nothing (a wrong schema name, a no-op)."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(
        "services:\n"
        "  web:\n"
        "    image: example:1\n"
        "    depends_on:\n"
        "      db:\n"
        "        condition: service_ready\n"
        "    healthcheck: yes-please\n",
        encoding="utf-8",
    )
    result = run_check_jsonschema(bad)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "service_ready" in result.stdout


# --- services and start-up order ----------------------------------------------------------


def test_every_service_the_stack_needs_exists() -> None:
    assert set(services()) == EXPECTED_SERVICES


def test_every_depends_on_names_an_existing_service_with_a_condition() -> None:
    all_services = services()
    for name, service in all_services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on must use the long form"
        for target, options in depends_on.items():
            assert target in all_services, f"{name} depends on unknown service {target}"
            condition = (options or {}).get("condition")
            if target in ONE_SHOT_SERVICES:
                assert condition == "service_completed_successfully", (name, target, condition)
            else:
                assert condition == "service_healthy", (name, target, condition)
                assert "healthcheck" in all_services[target], (name, target)


def test_app_processes_start_after_the_schema_buckets_and_distribution_exist() -> None:
    all_services = services()
    for name in ("web", *QUEUE_WORKERS.values()):
        depends_on = all_services[name]["depends_on"]
        assert {"postgres", "redis", "migrate", "minio-init", "cloudfront-init"} <= set(
            depends_on
        ), name
    assert command_of(all_services["migrate"])[:3] == ["python", "manage.py", "migrate"]
    assert "migrate" in all_services["beat"]["depends_on"]


def test_every_long_running_service_has_a_healthcheck_and_restarts() -> None:
    for name, service in services().items():
        if name in ONE_SHOT_SERVICES:
            assert service.get("restart") == "no", f"{name} is a one-shot job"
            continue
        assert "healthcheck" in service, f"{name} has no healthcheck"
        healthcheck = service["healthcheck"]
        assert not healthcheck.get("disable"), name
        test = healthcheck["test"]
        first = test if isinstance(test, str) else test[0]
        assert first in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test must run something"
        assert service.get("restart") == "unless-stopped", name


def test_images_are_pinned() -> None:
    for name, service in services().items():
        image = service.get("image", "")
        if "build" in service:
            continue  # the app image, built from ./Dockerfile
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: pin a tag, got {image!r}"


def test_app_services_share_one_image_built_from_the_dockerfile() -> None:
    all_services = services()
    built = {name for name, service in all_services.items() if "build" in service}
    assert built == APP_SERVICES
    assert len({all_services[name]["image"] for name in built}) == 1
    assert (ROOT / "Dockerfile").is_file()


def test_the_cloudfront_emulator_is_the_moto_the_tests_use() -> None:
    image = services()["cloudfront"]["image"]
    assert image.startswith("motoserver/moto:")
    pinned = re.search(
        r"^moto\[server\]==(\S+)", (ROOT / "requirements-dev.txt").read_text(), re.MULTILINE
    )
    assert pinned, "requirements-dev.txt should pin moto[server]"
    assert image == f"motoserver/moto:{pinned[1]}"


# --- workers ------------------------------------------------------------------------------


def declared_queues() -> set[str]:
    """QUEUES of the app's Celery config (pipeline/celery.py, which workers/celery.py
    applies), read without importing Celery or Django."""
    tree = ast.parse((ROOT / "pipeline" / "celery.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "QUEUES" for target in node.targets
        ):
            return set(ast.literal_eval(node.value))
    pytest.fail("pipeline/celery.py no longer defines QUEUES")


def option(command: list[str], name: str) -> str | None:
    for index, part in enumerate(command):
        if part.startswith(f"{name}="):
            return part.partition("=")[2]
        if part == name and index + 1 < len(command):
            return command[index + 1]
    return None


def test_one_worker_service_per_declared_queue() -> None:
    assert set(QUEUE_WORKERS) == declared_queues()
    all_services = services()
    for queue, name in QUEUE_WORKERS.items():
        command = command_of(all_services[name])
        assert command[:4] == ["celery", "-A", "workers", "worker"], name
        # Only its own queue: in particular never Celery's unused default "celery" queue.
        assert option(command, "--queues") == queue, name
        assert option(command, "--hostname") == f"{queue}@%h", name
        # The health check pings this very node.
        assert f"{queue}@$$HOSTNAME" in healthcheck_test(all_services[name]), name


def test_workers_are_sized_for_their_queue() -> None:
    all_services = services()
    cpu = command_of(all_services["worker-cpu"])
    assert option(cpu, "--pool") == "prefork"
    assert option(cpu, "--concurrency") is None, "prefork defaults to one process per core"
    transfer = command_of(all_services["worker-transfer"])
    assert option(transfer, "--pool") == "threads"
    cdn = command_of(all_services["worker-cdn"])
    assert option(cdn, "--concurrency") == "1", "one CDN consumer keeps batches whole"
    assert option(cdn, "--pool") != "solo", "solo cannot answer the health-check ping mid-task"


def test_beat_and_flower() -> None:
    all_services = services()
    assert command_of(all_services["beat"])[:4] == ["celery", "-A", "workers", "beat"]
    flower = all_services["flower"]
    assert command_of(flower)[:4] == ["celery", "-A", "workers", "flower"]
    assert any(str(port).endswith(":5555") for port in flower["ports"])
    assert "FLOWER_BASIC_AUTH" in environment_of(flower)


def test_web_runs_gunicorn_and_checks_healthz() -> None:
    web = services()["web"]
    command = command_of(web)
    assert command[:2] == ["gunicorn", "project.wsgi:application"]
    assert "/healthz" in healthcheck_test(web)


# --- buckets ------------------------------------------------------------------------------


def anonymous_policies() -> dict[str, str]:
    """Bucket variable -> the anonymous policy minio-init sets on it."""
    policies: dict[str, str] = {}
    pattern = re.compile(r'^\s*mc anonymous set (\w+) "?[\w-]+/\$\{?(\w+?)\}?"?\s*$')
    for line in MINIO_INIT.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line)
        if match:
            policies[match[2]] = match[1]
    return policies


def test_minio_init_runs_the_bucket_script() -> None:
    init = services()["minio-init"]
    mounted = {}
    for volume in init["volumes"]:
        source, target = str(volume).split(":")[:2]
        mounted[target] = ROOT / source
    script_target = next(part for part in init["entrypoint"] if part.endswith(".sh"))
    assert mounted[script_target].resolve() == MINIO_INIT.resolve()
    assert MINIO_INIT.is_file()


def test_public_bucket_is_anonymous_read_and_primary_is_not() -> None:
    policies = anonymous_policies()
    assert policies.get("PIPELINE_PUBLIC_BUCKET") in {"download", "public"}
    assert policies.get("PIPELINE_PRIMARY_BUCKET") == "none"
    script = MINIO_INIT.read_text(encoding="utf-8")
    for bucket in ("PIPELINE_PRIMARY_BUCKET", "PIPELINE_PUBLIC_BUCKET"):
        assert re.search(rf"mc mb --ignore-existing \"?[\w-]+/\$\{{?{bucket}\b", script), bucket


def test_minio_init_creates_the_buckets_the_app_uses() -> None:
    all_services = services()
    init_env = environment_of(all_services["minio-init"])
    app_env = environment_of(all_services["web"])
    for bucket in ("PIPELINE_PRIMARY_BUCKET", "PIPELINE_PUBLIC_BUCKET"):
        assert init_env[bucket] == app_env[bucket], bucket
    # MinIO's root user is the identity the app signs in with.
    assert environment_of(all_services["minio"])["MINIO_ROOT_USER"] == app_env["AWS_ACCESS_KEY_ID"]
    assert (
        environment_of(all_services["minio"])["MINIO_ROOT_PASSWORD"]
        == app_env["AWS_SECRET_ACCESS_KEY"]
    )


# --- environment --------------------------------------------------------------------------


def test_every_app_service_gets_every_setting() -> None:
    all_services = services()
    reference = environment_of(all_services["web"])
    for name in sorted(APP_SERVICES):
        env = environment_of(all_services[name])
        missing = APP_ENVIRONMENT - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        for variable in APP_ENVIRONMENT:
            # Same value everywhere, and taken from the variable of the same name in .env.
            assert env[variable] == reference[variable], (name, variable)
            names = [found for found, _, _ in interpolations(env[variable])]
            assert names == [variable], (name, variable, env[variable])


def test_env_example_lists_exactly_the_variables_the_compose_file_uses() -> None:
    used: dict[str, set[str | None]] = {}
    for text in walk_strings(load_compose()):
        for name, op, arg in interpolations(text):
            defaults = used.setdefault(name, set())
            defaults.add(arg if op in {"-", ":-"} else None)
    documented = load_env_example()
    assert sorted(set(used) - set(documented)) == [], "missing from .env.example"
    assert sorted(set(documented) - set(used)) == [], "in .env.example but unused"
    for name, defaults in used.items():
        # One default per variable, equal to the documented value: the stack behaves the
        # same with or without a .env copied from the example.
        assert defaults == {documented[name]}, (name, defaults, documented[name])


def test_env_file_is_optional_and_secrets_stay_out_of_the_image() -> None:
    for name, service in services().items():
        assert "env_file" not in service, f"{name}: env_file fails when .env is missing"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored
    assert ".git" in ignored


def test_dockerfile_runs_as_a_non_root_user() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0].startswith("FROM python:3.11")
    assert any("pip install -r requirements.txt" in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}


# --- the emulator's distribution ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fresh_moto_server() -> Iterator[str]:
    """A moto_server of the pinned version, empty, like the stack's on its first start."""
    pytest.importorskip("moto.server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto_server did not start")
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_cloudfront_init(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **load_env_example(), **overrides}
    return subprocess.run(
        [sys.executable, str(CLOUDFRONT_INIT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cloudfront_init_creates_the_documented_distribution(fresh_moto_server: str) -> None:
    """The id in .env.example is the one a fresh emulator of the pinned moto hands out."""
    first = run_cloudfront_init(AWS_CLOUDFRONT_ENDPOINT_URL=fresh_moto_server)
    assert first.returncode == 0, first.stderr
    again = run_cloudfront_init(AWS_CLOUDFRONT_ENDPOINT_URL=fresh_moto_server)
    assert again.returncode == 0, again.stderr
    assert "already exists" in again.stderr


def test_cloudfront_init_never_creates_on_real_aws() -> None:
    result = run_cloudfront_init(
        AWS_CLOUDFRONT_ENDPOINT_URL="",
        # Any attempt to reach AWS would fail on this proxy and exit non-zero.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to create" in result.stderr
