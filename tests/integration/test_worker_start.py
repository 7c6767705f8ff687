"""A real worker warms up in its main process before it forks its pool (workers/warm.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from producer.local import LocalWorkers, worker_command
from tests.conftest import REPO
from tests.support.processes import cmdline
from workers import stages  # noqa: F401  (registers the stage bodies)
from workers.code_versions import versions_file
from workers.fingerprint import fingerprint
from workers.settings import Settings
from workers.skops_import import names_file
from workers.task import BODIES

pytestmark = pytest.mark.integration


def test_every_worker_rehearses_the_steps_before_it_forks(workers: LocalWorkers) -> None:
    # Given workers that answer a ping (the fixture waits for it), when their logs are read
    logs = {name: (workers.log_dir / f"{name.split('@')[0]}.log").read_text() for name in workers.names}
    # Then each one ran the rehearsal, without an error, before its pool started
    for name, text in logs.items():
        assert "warmed up in" in text, f"{name} did not warm up:\n{text[-2000:]}"
        assert "rehearsal failed" not in text, text[-3000:]
        assert text.index("warmed up in") < text.index("ready."), text[-3000:]
        # and scikit-learn's int seeding is the cheaper one (workers/pipeline/seeding.py)
        assert "scikit-learn seeds as usual" not in text, text[-3000:]
        # and the stages' code versions were settled before the fork (workers/code_versions.py)
        assert "stage code versions" in text, text[-3000:]


def test_workers_store_what_a_later_start_reads_instead_of_computing(workers: LocalWorkers) -> None:
    # Given running workers (their check cache is relative: they run in this process's folder)
    assert workers.settings.check_cache_dir is not None
    stored = versions_file(workers.settings.check_cache_dir)
    # Then the file a later start reads holds exactly the fingerprints of the code here
    assert json.loads(stored.read_text()) == {s: fingerprint(body) for s, body in BODIES.items()}
    # and skops' estimator names, which a later start reads instead of crawling scikit-learn
    names = json.loads(names_file(workers.settings.check_cache_dir).read_text())
    assert ["sklearn.linear_model._ridge", "Ridge"] in names


def test_modelfleet_worker_becomes_python_m_workers_in_the_same_process(settings: Settings,
                                                                         tmp_path: Path) -> None:
    class CliWorker(LocalWorkers):
        def command(self, name: str) -> list[str]:  # what compose, Kubernetes and the image run
            return [sys.executable, "-m", "producer", "worker", "-Q", "train-large", "-c", "1", "-n", name]

    # Given `modelfleet worker`, started and answering a ping
    with CliWorker(settings, 1, tmp_path, name_prefix="cli") as worker:
        proc = worker.procs[0]
        # Then the CLI's process became the worker (its PID: a container's signals reach it),
        # started as LocalWorkers start theirs, with modelfleet's worker flags
        argv = cmdline(proc.pid).split()
        assert argv[1:4] == ["-m", "workers", "worker"], argv
        assert {"-Q", "train-large", "--without-mingle", "--without-gossip"} <= set(argv), argv
        assert argv == worker_command(argv[3:]), argv
    # and SIGTERM (LocalWorkers.stop) is Celery's warm shutdown of that process
    assert proc.returncode == 0, (worker.log_dir / "cli0.log").read_text()[-3000:]


@pytest.mark.slow  # two fresh processes import the worker's modules: ~4 s each
def test_a_worker_launcher_imports_no_celery_plugin_command() -> None:
    # Celery's command line imports every installed plugin command (Flower's, with tornado and
    # prometheus_client) as it is imported; a worker runs none of them (workers/__main__.py).
    env = {**os.environ, "MODELFLEET_BROKER_URL": "redis://127.0.0.1:9/0"}  # --help connects nowhere
    worker = subprocess.run([*worker_command(["worker", "--help"])[:1], "-X", "importtime",
                             *worker_command(["worker", "--help"])[1:]], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    assert "Start worker instance" in worker.stdout
    imported = [line.rpartition("|")[2].strip() for line in worker.stderr.splitlines()
                if line.startswith("import time:")]
    assert "celery.bin.worker" in imported and "skops.io" in imported
    assert not [m for m in imported if m.split(".")[0] in ("flower", "tornado")], imported
    # Any other command still has them
    other = subprocess.run(worker_command(["--help"]), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120, check=True)
    assert "flower" in other.stdout


def test_a_worker_launcher_answers_a_bad_setting_with_one_line() -> None:
    env = {**os.environ, "MODELFLEET_MODEL_CACHE_SIZE": "-1"}
    for command in (worker_command(["worker"]), [sys.executable, "-m", "workers.startfiles"]):
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            "error: invalid MODELFLEET_* environment: MODELFLEET_MODEL_CACHE_SIZE: Input should be "
            "greater than or equal to 0"], done.stderr
