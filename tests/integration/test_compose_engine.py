"""docker-compose.yml on a real Docker engine, run the way its header tells users to.

`docker compose build` (the default builder), `up -d --scale worker=3`, the producer
profile, Flower's API on its published port, scaling up, down and `docker kill` mid-batch,
the team's own data and specs from a folder outside the repository, and `down -v`. Each
test is its own compose project (a unique name); the image is built once per run and
reused (tests/support/engine.py). Where no registry can be reached, the base images are
the stand-ins of deploy/standins/ under the real names.

Skipped only where no Docker engine answers; .ci/run installs and starts one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.compose_local import COMPOSE_FILE, REPO
from tests.support.engine import (
    Project,
    batch_id_in,
    build_image,
    deploys_per_model,
    docker,
    project_on_engine,
    record_timings,
    require_engine,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

S3_OVERRIDE = REPO / "deploy" / "compose.s3.yml"
QUICKSTART_MODELS = 12
BIG_MODELS = 24
FINISHED = ("promoted", "registered", "failed", "cancelled")


@pytest.fixture(autouse=True)
def engine() -> None:
    require_engine()


def up_and_ready(project: Project, workers: int) -> float:
    """`up -d --scale worker=K`, then wait until Redis is healthy and Flower's live
    inspection (?refresh=1) lists the K replicas; the seconds that took. (Flower keeps
    listing replicas that have gone, so a fresh stack lists exactly the K.)"""
    started = time.monotonic()
    project.compose("up", "-d", "--scale", f"worker={workers}")

    def ready() -> bool:
        states = [json.loads(line) for line in project.compose("ps", "--format", "json", "redis")
                  .stdout.splitlines() if line.strip()]
        if not states or states[0].get("Health") != "healthy":
            return False
        nodes = project.nodes()
        try:
            code, listed = project.flower("/api/workers?refresh=1")
        except OSError:  # Flower not listening yet
            return False
        return len(nodes) == workers and code == 200 and set(nodes) <= set(listed or {})

    wait_until(ready, 300, f"redis healthy and flower listing {workers} workers", interval=2)
    return time.monotonic() - started


def run_producer(project: Project, spec: str | None = None) -> tuple[str, float]:
    """`docker compose --profile producer run --rm producer` (MODELFLEET_SPEC=spec if
    given): exit 0; the batch id and the seconds it took."""
    if spec:
        project.shell["MODELFLEET_SPEC"] = spec
    started = time.monotonic()
    done = project.compose("--profile", "producer", "run", "--rm", "producer", timeout=900, check=False)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return batch_id_in(done.stdout), seconds


def assert_promoted_once(project: Project, batch_id: str, n: int) -> None:
    """Every model of the batch promoted, by exactly one deploy, with one registry version."""
    status = project.status(batch_id)
    assert status["counts"] == {"promoted": n}, status["counts"]
    names = {row["name"] for row in status["rows"]}
    deploys = deploys_per_model(project.runs(batch_id))
    assert deploys == dict.fromkeys(names, 1), {m: c for m, c in deploys.items() if c != 1}
    models = {m["name"]: m for m in project.cli("models")}
    for name in names:
        assert models[name]["latest"] == 1 and models[name]["aliases"] == {"production": 1}, models[name]


def batch_done(project: Project, batch_id: str) -> bool:
    return bool(project.status(batch_id)["done"])


@contextlib.contextmanager
def rows_on_timeout(project: Project, batch_id: str) -> Iterator[None]:
    """A wait that times out says where each unfinished model stands."""
    try:
        yield
    except TimeoutError as exc:
        rows = [(r["name"], r["status"], r["stage"], r["worker"]) for r in project.status(batch_id)["rows"]
                if r["status"] not in FINISHED]
        raise AssertionError(f"{exc}; unfinished: {rows}") from exc


def assert_nothing_left(project: Project) -> None:
    """`docker compose down -v` as a user types it: no container, volume or network left.
    (The test's own probe goes first: `down` leaves a running `run -d` container alone.)"""
    docker("rm", "-f", str(project.probe))
    project.probe = None
    project.compose("down", "-v")
    assert project.leftovers() == {"containers": [], "volumes": [], "networks": []}


def team_folder(root: Path) -> tuple[Path, Path]:
    """A team's CSV and specs, outside the repository, readable by the image's user."""
    data, specs = root / "data", root / "specs"
    (data / "churn").mkdir(parents=True)
    specs.mkdir()
    rng = random.Random(7)
    with (data / "churn" / "customers.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["tenure", "monthly", "calls", "churned"])
        for _ in range(600):
            tenure, monthly, calls = rng.uniform(0, 60), rng.uniform(10, 120), rng.randint(0, 9)
            writer.writerow([round(tenure, 1), round(monthly, 2), calls,
                             int(monthly / 40 + calls / 3 - tenure / 20 + rng.gauss(0, 0.5) > 1.5)])
    common = """defaults:
  task: classification
  preprocess: {test_size: 0.25, impute: mean, scale: standard, seed: 7}
  evaluation: {metrics: [accuracy], primary: accuracy}
  deploy: {alias: production, gate: {metric: accuracy, threshold: 0.5}}
"""
    (specs / "churn.yaml").write_text(f"""name: churn
{common}models:
  - name: churn-tree
    dataset: {{kind: csv, path: churn/customers.csv, target: churned}}
    estimator: {{class_path: sklearn.tree.DecisionTreeClassifier, params: {{max_depth: 4}}}}
  - name: churn-logreg
    dataset: {{kind: csv, path: churn/customers.csv, target: churned}}
    estimator: {{class_path: sklearn.linear_model.LogisticRegression}}
""")
    # Stages of a few seconds each (300-tree forests), so a scale-down lands mid-stage.
    datasets = "\n".join(
        f"      d{i}: {{kind: synthetic, n_samples: 3000, n_features: 20, n_informative: 8, "
        f"n_classes: 2, seed: {i}}}" for i in range(1, 9))
    (specs / "slow.yaml").write_text(f"""name: slow
{common}matrix:
  name: "slow-{{dataset}}-{{estimator}}"
  axes:
    dataset:
{datasets}
    estimator:
      forest:
        class_path: sklearn.ensemble.RandomForestClassifier
        params: {{n_estimators: 300, random_state: 0}}
""")
    # A larger batch whose train stages take seconds (300-tree forests on 3,000 rows).
    big = "\n".join(
        f"      r{i:02}: {{kind: synthetic, n_samples: 4000, n_features: 20, n_informative: 8, "
        f"n_classes: 2, seed: {i}}}" for i in range(1, 13))
    (specs / "big.yaml").write_text(f"""name: big
{common}matrix:
  name: "big-{{dataset}}-{{estimator}}"
  axes:
    dataset:
{big}
    estimator:
      forest:
        class_path: sklearn.ensemble.RandomForestClassifier
        params: {{n_estimators: 300, random_state: 0}}
      extratrees:
        class_path: sklearn.ensemble.ExtraTreesClassifier
        params: {{n_estimators: 300, random_state: 0}}
""")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return data, specs


# In the image: whether the files a worker's start reads exist where its code looks.
STARTFILES_FOUND = ("from workers.code_versions import versions_file; "
                    "from workers.skops_import import names_file; "
                    "from workers.settings import Settings; d = Settings().check_cache_dir; "
                    "print(versions_file(d).is_file(), names_file(d).is_file())")


def test_stack_builds_scales_serves_flower_takes_team_data_and_scales_down(tmp_path: Path) -> None:
    with project_on_engine(tmp_path / "project") as project:
        # 1. `docker compose build`: one image, built once (only `worker` has `build:`),
        #    nothing left untagged; then `up -d --scale worker=3` until ready.
        build = build_image(project)
        assert build["new_dangling"] == set(), "the build left untagged images"
        # The image carries what a worker's start would compute (workers/startfiles.py), at
        # the path its code looks for: every replica's first start reads it.
        found = docker("run", "--rm", build["image"], "python", "-c", STARTFILES_FOUND).stdout
        assert found.split() == ["True", "True"], found
        ready = up_and_ready(project, 3)
        images = {docker("inspect", "-f", "{{.Image}}", cid).stdout.strip()
                  for cid in project.ids("worker") + project.ids("flower")}
        assert images == {build["image"]}

        # 2. The producer profile runs the quickstart: exit 0, every model promoted.
        quick_batch, quickstart = run_producer(project)
        project.start_probe()
        assert_promoted_once(project, quick_batch, QUICKSTART_MODELS)
        workers_used = {r["worker"] for r in project.runs(quick_batch)}
        assert workers_used <= set(project.nodes())

        # 3. Flower: the 3 replicas with the credentials, 401 without or with a wrong password.
        code, listed = project.flower("/api/workers?refresh=1")
        assert code == 200 and set(listed) == set(project.nodes()) and len(listed) == 3
        assert project.flower("/api/workers", auth=False)[0] == 401
        project.shell["MODELFLEET_FLOWER_PASSWORD"] = "wrong"
        assert project.flower("/api/workers")[0] == 401
        del project.shell["MODELFLEET_FLOWER_PASSWORD"]

        # 6. The team's own data and specs from a folder outside the repository, as the
        #    header says: set the variables, `up -d` again (compose recreates the workers
        #    with the new mounts), then the producer with MODELFLEET_SPEC.
        data, specs = team_folder(tmp_path / "team")
        project.shell.update(MODELFLEET_DATA_DIR=str(data), MODELFLEET_SPECS_DIR=str(specs))
        before = set(project.ids("worker"))
        up_and_ready(project, 3)
        assert not before & set(project.ids("worker")), "the workers were not recreated"
        for cid in project.ids("worker"):
            mounts = json.loads(docker("inspect", "-f", "{{json .Mounts}}", cid).stdout)
            assert {"Source": str(data), "Destination": "/data", "RW": False}.items() <= \
                next(m for m in mounts if m["Destination"] == "/data").items()
        churn_batch, _ = run_producer(project, "churn.yaml")
        docker("rm", "-f", str(project.probe))  # its mounts are the old ones
        project.start_probe()
        assert_promoted_once(project, churn_batch, 2)

        # 5. Scale down to 1 mid-batch: the stopped replicas get SIGTERM, finish the stage
        #    they run (warm shutdown within stop_grace_period) and exit 0; nothing is lost.
        slow_batch = project.submit("/specs/slow.yaml")
        nodes = project.nodes()

        def every_replica_took_a_stage() -> bool:
            return {r["worker"] for r in project.runs(slow_batch)} >= set(nodes)

        wait_until(every_replica_took_a_stage, 300, "all 3 replicas running the slow batch", interval=2)
        scale_started = time.time()
        project.compose("up", "-d", "--scale", "worker=1", "--no-recreate", timeout=1900)
        scale_ended = time.time()
        stopped = {node: cid for node, cid in nodes.items() if cid not in project.ids("worker")}
        assert len(stopped) == 2
        died = [json.loads(line) for line in docker(
            "events", "--since", str(int(scale_started) - 1), "--until", str(int(scale_ended) + 1),
            "--filter", "event=die", "--format", "{{json .}}").stdout.splitlines()]
        exit_codes = {e["Actor"]["ID"]: e["Actor"]["Attributes"]["exitCode"] for e in died}
        assert {cid: exit_codes.get(cid) for cid in stopped.values()} == dict.fromkeys(stopped.values(), "0")
        wait_until(lambda: batch_done(project, slow_batch), 600, "the slow batch on 1 worker", interval=2)
        runs = project.runs(slow_batch)
        for node in stopped:
            # Each stopped replica finished a stage after the scale-down was asked for.
            ends = [r["started"] + r["duration"] for r in runs if r["worker"] == node]
            assert max(ends) >= scale_started, (node, ends, scale_started)
        assert_promoted_once(project, slow_batch, 8)

        record_timings("stack", {"build_s": build["seconds"], "up_to_ready_s": ready,
                                 "quickstart_producer_s": quickstart})
        # 7. `docker compose down -v` leaves no container, volume or network of the project.
        assert_nothing_left(project)


def test_scale_out_mid_batch_and_a_killed_worker_loses_no_model(tmp_path: Path) -> None:
    _, specs = team_folder(tmp_path / "team")
    with project_on_engine(tmp_path / "project") as project:
        build_image(project)
        project.shell["MODELFLEET_SPECS_DIR"] = str(specs)
        up_and_ready(project, 3)
        project.start_probe()
        # 4. A larger batch (24 models whose train stages take seconds); scale to 5 mid-batch ...
        submitted = time.monotonic()
        batch = project.submit("/specs/big.yaml")
        first = set(project.nodes())
        wait_until(lambda: project.status(batch)["counts"].get("promoted", 0) >= 1, 300,
                   "the first model of the batch", interval=2)
        project.compose("up", "-d", "--scale", "worker=5", "--no-recreate")
        nodes = project.nodes()
        new = set(nodes) - first
        assert len(new) == 2

        # ... and the new replicas take work.
        wait_until(lambda: {r["worker"] for r in project.runs(batch)} >= new, 300,
                   "the 2 new replicas running stages of the batch", interval=2)

        # `docker kill` a replica in the middle of a train stage, near the end of the batch
        # (little is left for the others, so the batch ends soon after the killed
        # replica's stage is recovered).
        # Right after the kill its state shows what it held; should it have been between
        # stages after all, another replica is killed (at most 3).
        held: list[tuple[str, str]] = []
        for _ in range(3):
            victim = wait_for_a_trainer(project, batch, nodes)
            docker("kill", nodes.pop(victim))
            killed = time.monotonic()
            done = {(r["model"], r["stage"]) for r in project.runs(batch)}
            held = [(r["name"], r["stage"]) for r in project.status(batch)["rows"]
                    if r["worker"] == victim and r["status"] == "running"
                    and (r["name"], r["stage"]) not in done]
            if held:
                break
        assert held, "no kill landed in the middle of a stage"

        # What the killed replica held is promoted within 60 s of the kill, at the compose
        # file's own timeouts (lease TTL, sweep interval; not the hour-long visibility
        # timeout), and every model ends promoted exactly once. The rest of the batch gets
        # longer: on a slow 2-core host its last models alone once took over 60 s (CI).
        held_models = {model for model, _ in held}
        with rows_on_timeout(project, batch):
            wait_until(lambda: {r["name"] for r in project.status(batch)["rows"]
                                if r["status"] == "promoted"} >= held_models, 60,
                       f"the killed replica's {sorted(held_models)} promoted within 60 s of the kill",
                       interval=2)
            wait_until(lambda: batch_done(project, batch), 240, "every model promoted", interval=2)
        record_timings("kill", {"batch_s": time.monotonic() - submitted,
                                "done_after_kill_s": time.monotonic() - killed})
        assert_promoted_once(project, batch, BIG_MODELS)
        # The stage the killed replica held was run again, to success, by another one.
        runs = project.runs(batch)
        for model, stage in held:
            again = [r["worker"] for r in runs if (r["model"], r["stage"]) == (model, stage)
                     and r["status"] == "succeeded"]
            assert again and victim not in again, (model, stage, again)
        assert_nothing_left(project)


def wait_for_a_trainer(project: Project, batch: str, nodes: dict[str, str]) -> str:
    """A live replica running the train stage of one of the batch's last models (at most
    two per live replica left)."""
    found: list[str] = []

    def training_in_the_tail() -> bool:
        status = project.status(batch)
        assert not status["done"], "the batch ended before a replica could be killed mid-stage"
        left = [r for r in status["rows"] if r["status"] not in FINISHED]
        training = [r for r in left if r["status"] == "running" and r["stage"] == "train"
                    and r["worker"] in nodes]
        if len(left) > 2 * len(nodes) or not training:
            return False
        done = {(r["model"], r["stage"]) for r in project.runs(batch)}
        found[:] = [r["worker"] for r in training if (r["name"], "train") not in done]
        return bool(found)

    wait_until(training_in_the_tail, 600, "a replica training one of the last models", interval=0.5)
    return found[0]


def test_s3_override_keeps_every_artifact_in_the_bucket(tmp_path: Path) -> None:
    """deploy/compose.s3.yml with its `s3` profile (MinIO, or where no registry answers
    deploy/standins/'s moto server under MinIO's names): the quickstart through the
    producer, every artifact in the bucket and none on the `artifacts` volume."""
    with project_on_engine(tmp_path / "project", (COMPOSE_FILE, S3_OVERRIDE), ("s3",)) as project:
        build_image(project, s3=True)
        up_and_ready(project, 2)
        (bucket_job,) = project.ids("minio-bucket", all_states=True)
        assert docker("inspect", "-f", "{{.State.ExitCode}}", bucket_job).stdout.strip() == "0"
        batch, quickstart = run_producer(project)
        project.start_probe()
        assert_promoted_once(project, batch, QUICKSTART_MODELS)
        env = project.env
        listing = docker("exec", str(project.probe), "python", "-c", (
            "import boto3, os; s3 = boto3.client('s3', "
            "endpoint_url=os.environ['MODELFLEET_S3_ENDPOINT_URL'], "
            "region_name=os.environ['MODELFLEET_S3_REGION']); "
            f"pages = s3.get_paginator('list_objects_v2').paginate(Bucket='{env['MODELFLEET_S3_BUCKET']}', "
            "Prefix='artifacts/'); print(sum(p.get('KeyCount', 0) for p in pages))")).stdout
        assert int(listing) > 0, listing
        # A promoted model loads back from the bucket (its file digest-checked on the way).
        loaded = docker("exec", str(project.probe), "python", "-c",
                        "import modelfleet; print(hasattr(modelfleet.load_model('iris-forest@production'), "
                        "'predict'))")
        assert loaded.stdout.strip() == "True", loaded.stdout
        on_volume = docker("exec", str(project.probe), "find", "/var/lib/modelfleet/artifacts", "-type", "f")
        assert on_volume.stdout.split() == []
        record_timings("s3", {"quickstart_producer_s": quickstart})
        assert_nothing_left(project)
