"""Nobody let in: forged and pickled messages, tampered artifacts, Redis passwords."""

from __future__ import annotations

import json
import pickle
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from producer.local import LocalWorkers, wait_for
from tests.conftest import run_batch
from tests.support.canary_path import MARKS
from tests.support.cluster import classifier, cluster
from workers.app import create_app, queue_lists
from workers.contracts import ChainState
from workers.runtime import Runtime
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class TouchOnUnpickle:
    """A payload that creates a file if anyone ever unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _states(runtime: Runtime, batch_id: str, names: list[str]) -> dict[str, dict[str, str]]:
    return runtime.tracker.model_states(batch_id, names)


def _worker_logs(workers: LocalWorkers) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(workers.log_dir.glob("*.log")))


@pytest.mark.parametrize("class_path", ["os.system", "subprocess.Popen", "builtins.eval",
                                        "tests.support.canary.Canary"])
def test_forged_message_with_forbidden_estimator_is_refused_by_the_worker(
        class_path: str, workers: LocalWorkers, app: Any, runtime: Runtime, uniq: str) -> None:
    # Given a message made by hand, skipping the producer's validation entirely
    shutil.rmtree(MARKS, ignore_errors=True)
    batch_id, name = f"forged-{uniq}", f"forged-{uniq}"
    model = {**classifier(name), "estimator": {"class_path": class_path, "params": {}}}
    state = ChainState.model_validate({"job": {"batch_id": batch_id, "model": model}, "prepared": {
        "dataset_digest": "0" * 64, "data_digest": "0" * 64, "n_train": 1, "n_test": 1,
        "n_features": 1, "run_id": "forged"}})
    # When it reaches a worker's train queue directly
    app.send_task("modelfleet.train", args=[state.model_dump(mode="json")], queue="train")
    wait_for(lambda: _states(runtime, batch_id, [name])[name].get("status") == "failed", 60,
             "the forged model failing")
    # Then the worker fails it on the allow-list, before importing anything
    error = _states(runtime, batch_id, [name])[name]["error"]
    assert "estimator.class_path" in error and "not under an allowed prefix" in error
    assert not MARKS.exists() or not any(MARKS.iterdir()), "the forbidden module was imported"


def test_pickled_message_is_rejected_and_logged(tmp_path: Path, workers: LocalWorkers, app: Any) -> None:
    tag = uuid.uuid4().hex
    marker = tmp_path / f"unpickled-{tag}"
    task_id = f"pickled-{tag}"
    app.send_task("modelfleet.preprocess", args=[TouchOnUnpickle(marker)], queue="preprocess",
                  serializer="pickle", task_id=task_id)
    # The worker logs the refused body, which names the marker: that is our handshake.
    wait_for(lambda: tag in _worker_logs(workers), 60, "the worker logging the pickled message")
    entry = _worker_logs(workers).split("Received invalid task message")[-1]
    assert tag in entry and "The message has been ignored and discarded" in entry
    assert "Refusing to deserialize untrusted content of type pickle" in entry
    assert not marker.exists(), "the worker unpickled the message"
    assert app.AsyncResult(task_id).state == "PENDING", "the task must never run"


def test_tampered_model_file_is_refused_not_loaded(tmp_path: Path, settings: Settings,
                                                   workers: LocalWorkers, app: Any,
                                                   runtime: Runtime, uniq: str) -> None:
    from tests.conftest import load

    # A model of its own (random_state from uniq), so no other test shares its artifact.
    spec = {"name": f"tamper-{uniq}", "models": [
        classifier(f"tamper-{uniq}", random_state=int(uniq, 16), max_depth=3)]}
    _, status = run_batch(load(tmp_path, spec, settings), app, runtime)
    assert status.counts == {"promoted": 1}
    lineage = ChainState.model_validate(runtime.registry.resolve(f"tamper-{uniq}@production")["lineage"])
    assert lineage.trained is not None
    path = Path(settings.artifact_root) / runtime.store.key(lineage.trained.model_digest)
    marker = tmp_path / "unpickled"
    try:
        # Given the stored model file replaced by a pickle that would leave a mark if loaded
        path.write_bytes(pickle.dumps(TouchOnUnpickle(marker)))
        job = lineage.job.model_copy(update={"batch_id": f"tamper2-{uniq}", "no_cache": True})
        message = ChainState(job=job, prepared=lineage.prepared, trained=lineage.trained)
        # When a stage that must load it runs
        app.send_task("modelfleet.evaluate", args=[message.model_dump(mode="json")], queue="evaluate")
        name = job.model.name
        wait_for(lambda: _states(runtime, job.batch_id, [name])[name].get("status") == "failed", 60,
                 "the evaluate stage failing")
        # Then it fails on the digest check and nothing was unpickled
        state = _states(runtime, job.batch_id, [name])[name]
        assert state["stage"] == "evaluate" and "IntegrityError" in state["error"]
        assert "modified in the artifact store" in state["error"] and str(path) in state["error"]
        assert not marker.exists()
    finally:
        path.unlink(missing_ok=True)  # a missing artifact is a cache miss for later runs


def _redis_values(runtime: Runtime) -> str:
    """Every value in Redis, as text: runs, batches, results, the queues' bindings."""
    r, out = runtime.redis, []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == "string":
            out.append(r.get(key))
        elif kind == "hash":
            out.append(json.dumps(r.hgetall(key)))
        elif kind == "list":
            out += r.lrange(key, 0, -1)
        elif kind == "set":
            out += sorted(r.smembers(key))
        elif kind == "zset":
            out += r.zrange(key, 0, -1)
    return "\n".join(str(v) for v in out)


def test_password_protected_redis_and_no_secret_in_logs_events_or_records(tmp_path: Path) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    with cluster(tmp_path, password=secret) as c:
        assert secret in c.settings.broker()  # the password really is in the URL workers use
        events: list[dict[str, Any]] = []
        receiver_app = create_app(c.settings)
        with receiver_app.connection_for_read() as conn:
            receiver = receiver_app.events.Receiver(conn, handlers={"*": events.append})
            thread = threading.Thread(target=receiver.capture,
                                      kwargs={"limit": None, "timeout": None, "wakeup": True})
            thread.start()
            try:
                wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in events), 30,
                         "the event receiver (as Flower runs it)")
                handle = c.submit({"name": "secret", "models": [classifier("s1"),
                                                                classifier("s2", max_depth=2)]})
                status = handle.wait(timeout=120)
                # (Two small models: two fused tasks, each through the four stages.)
                tasks = {r["task_id"] for r in c.runtime.tracker.runs(batch_id=handle.batch_id)}
                wait_for(lambda: sum(e["type"] == "task-succeeded" for e in events) >= len(tasks), 30,
                         "every task-succeeded event")
            finally:
                receiver.should_stop = True
                thread.join(10)
                receiver_app.close()

        assert status.counts == {"promoted": 2}
        received = [e for e in events if e["type"] == "task-received"]
        # Flower shows these args: they are really there, and the secret is not.
        assert len(received) == len(tasks) and all(handle.batch_id in e["args"] for e in received)
        assert secret not in json.dumps(events, default=str), "the password reached task events"
        assert secret not in c.logs(), "the password reached a worker log"
        assert secret not in _redis_values(c.runtime)
        records = [p.read_text() for p in (tmp_path / "artifacts").rglob("*.json")]
        assert records and not any(secret in text for text in records)


# Bodies that are not a task's: Celery's consumer raised on each of these and the worker
# exited ("Unrecoverable error"); the restored message then stopped the next worker.
FORGED = [("null", "application/json"), ("[1]", "application/json"), ('"hello"', "application/json"),
          ('{"a": 1}', "application/json"), ("raw bytes", "application/data"),
          ("plain text", "application/text")]


def test_malformed_messages_are_dead_lettered_and_workers_keep_consuming(tmp_path: Path) -> None:
    from kombu import Connection, Producer

    from workers import keys

    with cluster(tmp_path, workers=1) as c:
        pid = c.workers.procs[0].pid
        # Given messages that claim to be stage tasks, published straight to a stage queue
        with Connection(c.settings.broker()) as conn:
            producer = Producer(conn)
            for body, content_type in FORGED:
                producer.publish(body, exchange="", routing_key="preprocess", content_type=content_type,
                                 content_encoding="utf-8",
                                 headers={"task": "modelfleet.preprocess", "id": uuid.uuid4().hex,
                                          "lang": "py"})
            # and one that parses as a task but whose argument is no modelfleet message
            producer.publish(json.dumps([[{"a": 1}], {}, {}]), exchange="", routing_key="train",
                             content_type="application/json", content_encoding="utf-8",
                             headers={"task": "modelfleet.train", "id": uuid.uuid4().hex, "lang": "py"})
        # When a real batch follows them
        handle = c.submit({"name": "after-forgery", "models": [classifier("survivor")]})
        status = handle.wait(timeout=90)

        # Then the one worker is still the same process, and it trained the real model
        assert status.counts == {"promoted": 1}
        assert c.workers.procs[0].poll() is None and c.workers.procs[0].pid == pid
        assert "Unrecoverable error" not in c.logs()
        # Each malformed message was kept once, with its error, and counted; none is queued again.
        letters = [json.loads(x) for x in c.runtime.redis.lrange(keys.DEAD_LETTERS, 0, -1)]
        assert len(letters) == len(FORGED)
        assert {x["content_type"] for x in letters} == {t for _, t in FORGED}
        assert all(x["task"] == "modelfleet.preprocess" and x["error"] for x in letters)
        assert c.runtime.redis.hgetall(keys.DEAD_LETTER_COUNTS) == {"modelfleet.preprocess": str(len(FORGED))}
        assert not any(c.runtime.redis.llen(q) for s in ("preprocess", "train") for q in queue_lists(s))
        assert "rejected a message that is not a modelfleet chain state" in c.logs()
