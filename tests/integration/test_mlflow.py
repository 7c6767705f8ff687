"""MLflow as an optional sink: real workers copy every deployed model into a real MLflow server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.local import free_port, wait_for
from tests.support.cluster import classifier, cluster
from tests.support.mlflow_server import MlflowServer, mlflow_command
from workers.contracts import parse_message
from workers.mlflow_sink import MlflowSink

pytest.importorskip("mlflow", reason="the `mlflow` extra is not installed (pip install mlflow)")
if mlflow_command() is None:
    pytest.skip("no `mlflow server` command: the server needs the full package (pip install mlflow)",
                allow_module_level=True)

from mlflow import MlflowClient  # noqa: E402 (after the skip: an optional dependency)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


def _gated(name: str, threshold: float, **params: Any) -> dict[str, Any]:
    spec = classifier(name, **params)
    spec.update(tags={"team": "mlflow-test"},
                deploy={"alias": "production", "gate": {"metric": "accuracy", "threshold": threshold}})
    return spec


def test_every_deployed_model_is_a_run_and_a_version_in_mlflow(tmp_path: Path, mlflow_server: MlflowServer,
                                                               uniq: str) -> None:
    # Given 2 workers that copy into a real MLflow server, and a batch of 3 models (2 share a chain),
    # one of them held back by its gate ...
    experiment = f"mf-{uniq}"
    with cluster(tmp_path, workers=2, mlflow_tracking_uri=mlflow_server.url,
                 mlflow_experiment=experiment) as c:
        names = [f"ml{uniq}-tree-{d}" for d in (1, 2, 3)]
        models = [_gated(names[0], 0.5, max_depth=1), _gated(names[1], 0.5, max_depth=3),
                  _gated(names[2], 0.99, max_depth=1)]  # a stump on iris: 2 classes at best, not promoted
        handle = c.submit({"name": f"mlflow-{uniq}", "pack": 2, "models": models})
        status = handle.wait(timeout=180)
        assert status.counts == {"promoted": 2, "registered": 1}

        # ... then MLflow gets one finished run per model, written by the workers' sink threads.
        client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)

        def finished_runs() -> list[Any]:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                return []
            return [r for r in client.search_runs([found.experiment_id], max_results=100)
                    if r.info.status == "FINISHED"]

        wait_for(lambda: len(finished_runs()) == 3, 120, "3 finished MLflow runs", interval=0.5)
        runs = {r.info.run_name: r for r in finished_runs()}
        assert set(runs) == set(names)
        for name, spec in zip(names, models, strict=True):
            run = runs[name]
            ours = c.runtime.registry.version(name, 1)  # modelfleet's own registry record
            # Metrics, params and tags are the model's.
            assert run.data.metrics == pytest.approx(ours["metrics"]) and "accuracy" in run.data.metrics
            assert run.data.params["estimator"] == "sklearn.tree.DecisionTreeClassifier"
            assert run.data.params["estimator.max_depth"] == str(spec["estimator"]["params"]["max_depth"])
            assert run.data.params["dataset.name"] == "iris" and int(run.data.params["n_test"]) > 0
            assert run.data.tags["team"] == "mlflow-test"
            assert run.data.tags["modelfleet.batch_id"] == handle.batch_id
            assert run.data.tags["modelfleet.version"] == "1"
            # The model file is an artifact, byte for byte the one modelfleet stored.
            assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"model", "report.json"}
            model_digest = ours["lineage"]["trained"]["model_digest"]
            local = client.download_artifacts(run.info.run_id, "model/model.skops", str(tmp_path))
            assert Path(local).read_bytes() == c.runtime.store.get(model_digest)

            # One registered version, from that run, tagged with modelfleet's version ...
            [version] = client.search_model_versions(f"name = '{name}'")
            assert version.run_id == run.info.run_id and version.tags["modelfleet.version"] == "1"
            # ... and the alias where modelfleet's gate moved it, and only there.
            aliases = client.get_registered_model(name).aliases
            if ours["decision"]["promoted"]:
                assert aliases == {"production": version.version}
            else:
                assert name == names[2] and aliases == {}
        assert c.runtime.registry.aliases(names[2]) == {}

        # Writing a model again (a redelivered deploy) finds its finished run and adds nothing.
        deploy_task = c.runtime.tracker.task_ids(handle.batch_id)[names[0]][-1]
        [deployed] = [state for state in parse_message(c.app.AsyncResult(deploy_task).get(timeout=10))
                      if state.job.model.name == names[0]]  # in a pack of two
        assert MlflowSink(c.settings, c.runtime.store).write(deployed) == runs[names[0]].info.run_id
        assert len(finished_runs()) == 3 and len(client.search_model_versions(f"name = '{names[0]}'")) == 1


def test_a_hung_mlflow_server_stalls_and_fails_no_stage(tmp_path: Path, uniq: str) -> None:
    # Given workers pointed at an MLflow "server" that accepts connections and never answers ...
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", free_port()))
        hung.listen(64)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        with cluster(tmp_path, workers=1, mlflow_tracking_uri=url) as c:
            # ... when two batches run one after the other on one worker process,
            for batch in (1, 2):
                models = [classifier(f"hung{uniq}-{batch}-{i}", max_depth=i + 1) for i in range(2)]
                handle = c.submit({"name": f"hung-{uniq}-{batch}", "pack": 1, "models": models})
                # then every model deploys, though the sink thread waits on the first request
                # (10 s: MLflow's HTTP timeout as the sink sets it) ...
                assert handle.wait(timeout=120).counts == {"promoted": 2}
                deploys = [r for r in c.runtime.tracker.runs(batch_id=handle.batch_id)
                           if r["stage"] == "deploy"]
                # ... and no deploy waited for it: a stalled one would take 10 s or more.
                assert len(deploys) == 2 and all(r["duration"] < 5 for r in deploys), deploys
            # The sink did try: its request waits in the hung server's backlog.
            hung.settimeout(30)
            conn, _ = hung.accept()
            conn.close()
