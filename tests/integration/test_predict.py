"""`modelfleet predict` and `modelfleet.predict_frame` on models trained by real workers: one
model, a segment family routed row by row, the input schema check, and reading the registry
after `modelfleet run` with no broker configured."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import modelfleet
from producer.local import serves_directory
from producer.segments import predict_frame
from producer.serving import load_deployed
from producer.spec import load_batch
from tests.conftest import EXAMPLE_DATA, write_spec
from tests.support.cluster import Cluster, cluster
from workers.loadcache import load_cache
from workers.modelcache import served_key
from workers.pipeline.schema import SchemaError

# Each CLI call imports pandas and scikit-learn (seconds on a busy machine): slow.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORES = ["1", "2", "3"]
FEATURES = ["Holiday_Flag", "Temperature", "Fuel_Price", "CPI", "Unemployment"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A family of 3 store models (Ridge on Walmart's numeric columns), one iris tree, and the
    store family again behind a gate that store 2 fails."""
    tmp = tmp_path_factory.mktemp("predict")
    data = tmp / "data"
    data.mkdir()
    walmart = pd.read_csv(EXAMPLE_DATA / "walmart_weekly_sales.csv")
    walmart[walmart["Store"].astype(str).isin(STORES)].to_csv(data / "stores.csv", index=False)
    # The load cache where the CLI (run in tmp) finds it by default, the workers' too.
    with cluster(tmp, workers=1, data_root=data, model_load_cache=tmp / ".modelfleet" / "loaded") as c:
        spec = {"name": "predict", "models": [
            {"name": "shop", "task": "regression",
             "dataset": {"kind": "csv", "path": "stores.csv", "target": "Weekly_Sales",
                         "segment_by": "Store"},
             # Text dates (dd-mm-yyyy): the schema records the format, predict reads them by it.
             "features": {"dates": {"columns": ["Date"], "format": "%d-%m-%Y", "parts": ["year", "week"]}},
             "estimator": {"class_path": "sklearn.linear_model.Ridge"},
             "evaluation": {"metrics": ["mae", "r2"], "primary": "mae"}},
            {"name": "flower", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
             "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 3}}},
            # A model file over KEEP_TRAINED_BYTES (~500 KiB): kept loaded as it is trained.
            {"name": "boosted", "task": "regression", "dataset": {"kind": "sklearn", "name": "diabetes"},
             "estimator": {"class_path": "sklearn.ensemble.GradientBoostingRegressor",
                           "params": {"n_estimators": 40, "random_state": 0}}}]}
        # The same stores behind a gate store 2 fails (its mae about 147,000; 1 and 3: 102,000, 30,000).
        spec["models"].append({**spec["models"][0], "name": "gated",
                               "deploy": {"gate": {"metric": "mae", "threshold": 125000}}})
        batch = load_batch(write_spec(tmp, spec), c.settings)
        assert [m.name for m in batch.models] == ["shop-1", "shop-2", "shop-3", "flower", "boosted",
                                                  "gated-1", "gated-2", "gated-3"]
        status = c.submit(spec).wait(timeout=180)
        assert sum(status.counts.values()) == 8 and not {"failed", "cancelled"} & set(status.counts), \
            status.rows
        assert {r.name for r in status.rows if not r.promoted} == {"gated-2"}, status.rows
        yield c


def _mixed_rows(tmp: Path) -> pd.DataFrame:
    """Rows of the three stores in shuffled order, two rows of a store with no model and
    one with no store."""
    walmart = pd.read_csv(EXAMPLE_DATA / "walmart_weekly_sales.csv")
    known = walmart[walmart["Store"].astype(str).isin(STORES)].groupby("Store").tail(4)
    stranger = walmart[walmart["Store"] == 1].head(2).assign(Store=99)
    blank = walmart[walmart["Store"] == 2].head(1).assign(Store=None)
    rows = pd.concat([known, stranger, blank]).drop(columns="Weekly_Sales")
    return rows.sample(frac=1.0, random_state=3).reset_index(drop=True)


def _redis_servers(data_dir: Path) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and serves_directory(int(p.name), data_dir)]


def _cli(c: Cluster, *args: str, python: tuple[str, ...] = (),
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *python, "-m", "producer", *args], cwd=c.tmp, capture_output=True,
                          env={**os.environ, **c.settings.to_env(), **(env or {})}, text=True, timeout=120)


def test_segment_rows_go_to_their_own_store_model(trained: Cluster) -> None:
    rows = _mixed_rows(trained.tmp)
    rows.to_csv(trained.tmp / "mixed.csv", index=False)

    done = _cli(trained, "predict", "shop@production", "mixed.csv", "--segment-by", "Store",
                "--out", "out.parquet")

    assert done.returncode == 0, done.stderr
    out = pd.read_parquet(trained.tmp / "out.parquet")
    assert list(out.columns) == [*rows.columns, "prediction", "model"]
    # The input kept, in its order (the segment column read as text, as segments were trained).
    pd.testing.assert_frame_equal(out[rows.columns], rows.astype({"Store": str}))
    for store in STORES:
        mine = out["Store"].astype(str) == store
        model = load_deployed(f"shop-{store}@production", trained.runtime)
        assert set(out.loc[mine, "model"]) == {f"shop-{store}/{model.version}"}
        assert [c["name"] for c in model.input_schema or []] == [*FEATURES, "Date"]
        assert (model.input_schema or [])[-1] == {"name": "Date", "kind": "datetime", "format": "%d-%m-%Y",
                                                  "dtype": (model.input_schema or [])[-1]["dtype"]}
        # The model's own Pipeline on the raw rows (text dates and all).
        expected = model.estimator.predict(rows.loc[mine, [*FEATURES, "Date"]])
        np.testing.assert_array_equal(out.loc[mine, "prediction"].to_numpy(), expected)
    # Each store's model predicts differently: a row sent to the wrong store would show.
    one = rows.loc[rows["Store"] == 2, [*FEATURES, "Date"]].head(1)
    assert load_deployed("shop-1@production", trained.runtime).estimator.predict(one)[0] != \
        load_deployed("shop-2@production", trained.runtime).estimator.predict(one)[0]
    unknown = (out["Store"] == "99") | out["Store"].isna()
    assert out.loc[unknown, "prediction"].isna().all() and out.loc[unknown, "model"].isna().all()
    assert "3 row(s) of 2 Store value(s) with no model at shop@production" in done.stderr
    assert "'(missing)': 1, '99': 2" in done.stderr
    assert "predicted 12 of 15 row(s)" in done.stderr

    strict = _cli(trained, "predict", "shop@production", "mixed.csv", "--segment-by", "Store", "--strict",
                  "--out", "strict.csv")
    assert strict.returncode == 1 and "'99': 2" in strict.stderr

    # The Python API gives the same frame (CSV round trip aside) and reports the same rows.
    with pytest.warns(UserWarning, match=r"3 row\(s\) of segments with no model"):
        api = modelfleet.predict_frame("shop@production", rows, segment_by="Store",
                                       settings=trained.settings)
    np.testing.assert_array_equal(api["prediction"].to_numpy(), out["prediction"].to_numpy())


def test_one_model_csv_in_json_out_and_the_schema_is_checked(trained: Cluster) -> None:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame.drop(columns="target").iloc[::15].reset_index(drop=True)
    iris.to_csv(trained.tmp / "iris.csv", index=False)
    model = load_deployed("flower@production", trained.runtime)
    assert [c["name"] for c in model.input_schema or []] == list(iris.columns)

    done = _cli(trained, "predict", f"flower/{model.version}", "iris.csv", "--out", "iris.json")
    assert done.returncode == 0, done.stderr
    out = pd.DataFrame(json.loads((trained.tmp / "iris.json").read_text()))
    assert list(out["prediction"]) == list(model.estimator.predict(iris.to_numpy()))

    # A missing column and a value that is not a number: exit 2, the column named.
    iris.drop(columns="petal width (cm)").to_csv(trained.tmp / "missing.csv", index=False)
    missing = _cli(trained, "predict", "flower@production", "missing.csv")
    assert missing.returncode == 2
    assert "column 'petal width (cm)': missing from the input" in missing.stderr
    bad = iris.astype({"sepal width (cm)": object})
    bad.loc[3, "sepal width (cm)"] = "wide"
    bad.to_csv(trained.tmp / "bad.csv", index=False)
    wrong = _cli(trained, "predict", "flower@production", "bad.csv")
    assert wrong.returncode == 2
    assert ("column 'sepal width (cm)': must be numeric (float64 in training); row 4 has 'wide'"
            in wrong.stderr)
    assert wrong.stdout == ""  # nothing half-written

    with pytest.raises(SchemaError) as raised:
        predict_frame("flower@production", iris.drop(columns="sepal length (cm)"), trained.runtime)
    assert raised.value.column == "sepal length (cm)"
    # Rows as dicts (what a web handler has) work through the Python API.
    records = iris.head(3).to_dict("records")
    api = modelfleet.predict_frame("flower@production", records, settings=trained.settings)
    assert list(api["prediction"]) == list(model.estimator.predict(iris.head(3).to_numpy()))


def test_predict_after_run_with_no_broker_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    spec = write_spec(tmp_path, {"name": "fresh", "models": [
        {"name": "iris-tree", "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
         "estimator": {"class_path": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 3}}}]})
    run = subprocess.run([sys.executable, "-m", "producer", "run", str(spec), "--workers", "1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not _redis_servers(tmp_path / ".modelfleet" / "redis"), "run left its Redis running"

    from sklearn.datasets import load_iris

    load_iris(as_frame=True).frame.drop(columns="target").head(5).to_csv(tmp_path / "some.csv", index=False)
    done = subprocess.run([sys.executable, "-m", "producer", "predict", "iris-tree@production", "some.csv"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    predicted = pd.read_csv(io.StringIO(done.stdout))["prediction"]

    script = ("import modelfleet, pandas as pd; rows = pd.read_csv('some.csv'); "
              "print(modelfleet.load_model('iris-tree@production').predict(rows.to_numpy()).tolist())")
    api = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert api.returncode == 0, api.stderr
    assert json.loads(api.stdout) == list(predicted)
    assert not _redis_servers(tmp_path / ".modelfleet" / "redis"), "the read left a Redis running"


def test_score_splits_a_table_into_chunks_for_the_score_workers(trained: Cluster) -> None:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).frame.drop(columns="target")
    rows = pd.concat([iris] * 7, ignore_index=True)  # 1,050 rows: 5 chunks of 250, the last 50
    rows.to_parquet(trained.tmp / "many.parquet", index=False)
    objects_before = {digest for digest, _ in trained.runtime.store.objects()}
    # The cluster's worker consumes the stage queues only: nothing would score the chunks.
    idle = _cli(trained, "score", "flower@production", "many.parquet", "--out", "none")
    assert idle.returncode == 2 and "no worker consumes the 'score' queue" in idle.stderr

    done = _cli(trained, "score", "flower@production", "many.parquet", "--out", "scored",
                "--chunk-rows", "250", "--workers", "2")

    assert done.returncode == 0, done.stderr
    assert "scored 1050 row(s) with flower/1 in 5 chunk(s)" in done.stderr
    out = pd.read_parquet(trained.tmp / "scored" / "predictions.parquet")
    pd.testing.assert_frame_equal(out[rows.columns], rows)
    model = load_deployed("flower@production", trained.runtime)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), model.estimator.predict(rows.to_numpy()))
    # The chunks and their predictions were scratch: the artifact store holds no new object.
    assert {digest for digest, _ in trained.runtime.store.objects()} <= objects_before

    rows.drop(columns="sepal length (cm)").to_csv(trained.tmp / "short.csv", index=False)
    bad = _cli(trained, "score", "flower@production", "short.csv", "--out", "x")
    assert bad.returncode == 2 and "column 'sepal length (cm)': missing from the input" in bad.stderr
    assert not (trained.tmp / "x").exists()


def test_predict_never_overwrites_the_input_or_an_existing_file(trained: Cluster) -> None:
    rows = _mixed_rows(trained.tmp)
    rows.to_csv(trained.tmp / "mine.csv", index=False)
    before = (trained.tmp / "mine.csv").read_bytes()

    same = _cli(trained, "predict", "shop@production", "mine.csv", "--segment-by", "Store",
                "--out", "./mine.csv", "--force")
    assert same.returncode == 2 and "that is the input file" in same.stderr, same.stderr
    assert (trained.tmp / "mine.csv").read_bytes() == before

    (trained.tmp / "taken.csv").write_text("precious\n")
    taken = _cli(trained, "predict", "shop@production", "mine.csv", "--segment-by", "Store",
                 "--out", "taken.csv")
    assert taken.returncode == 2 and "--force" in taken.stderr, taken.stderr
    assert (trained.tmp / "taken.csv").read_text() == "precious\n"

    forced = _cli(trained, "predict", "shop@production", "mine.csv", "--segment-by", "Store",
                  "--out", "taken.csv", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "prediction" in (trained.tmp / "taken.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("ref, says", [("shop@", "alias after '@' is empty"),
                                       ("nosuch@production", "no Store segment of 'nosuch'"),
                                       ("shop@nosuchalias", "at alias 'nosuchalias'")])
def test_segment_predict_with_an_unknown_family_or_alias_is_exit_2(trained: Cluster, ref: str,
                                                                   says: str) -> None:
    _mixed_rows(trained.tmp).to_csv(trained.tmp / "seg.csv", index=False)

    done = _cli(trained, "predict", ref, "seg.csv", "--segment-by", "Store", "--out", f"x{len(says)}.csv")

    assert done.returncode == 2 and says in done.stderr, (done.returncode, done.stderr)
    assert not (trained.tmp / f"x{len(says)}.csv").exists()


def test_an_infinite_value_is_refused_naming_the_file_column_and_row(trained: Cluster) -> None:
    # Issue 19, case 9: scikit-learn refused the whole input, naming no column.
    rows = _mixed_rows(trained.tmp)
    rows.loc[4, "Temperature"] = np.inf
    rows.to_csv(trained.tmp / "inf.csv", index=False)

    for extra in ([], ["--segment-by", "Store"]):
        ref = "shop@production" if extra else f"shop-{rows.loc[4, 'Store']}@production"
        done = _cli(trained, "predict", ref, "inf.csv", *extra)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, done.stderr
        assert ("inf.csv: model shop-" in errors[0] and "column 'Temperature': must be a finite number; "
                "row 5 has inf (1 such row(s))" in errors[0]), errors[0]
        assert done.stdout == ""


def test_schema_errors_name_the_files_row_with_and_without_segment_by(trained: Cluster) -> None:
    # Issue 19, case 9: the same cell was "row 4" with --segment-by (its place among its
    # store's rows) and "row 8" (the file's) without.
    rows = _mixed_rows(trained.tmp)
    store = int(rows.loc[7, "Store"])
    assert (rows.loc[:6, "Store"] == store).sum() == 3, "the cell's store has rows before it"
    rows = rows.astype({"Fuel_Price": object})
    rows.loc[7, "Fuel_Price"] = "cheap"
    rows.to_csv(trained.tmp / "cell.csv", index=False)

    alone = _cli(trained, "predict", f"shop-{store}@production", "cell.csv")
    routed = _cli(trained, "predict", "shop@production", "cell.csv", "--segment-by", "Store")

    for done in (alone, routed):
        assert done.returncode == 2
        assert ("column 'Fuel_Price': must be numeric (float64 in training); row 8 has 'cheap'"
                in done.stderr), done.stderr


def test_a_segment_value_whose_name_is_another_segments_model_is_left_unpredicted(trained: Cluster) -> None:
    # Issue 19, case 9: Store -1 is named like store 1's model (shop-1); the whole predict was
    # refused. Its rows now go without a prediction, as a store with no model, the rest predicted.
    rows = _mixed_rows(trained.tmp)
    rows.loc[rows["Store"] == 99, "Store"] = -1
    rows.to_csv(trained.tmp / "minus.csv", index=False)

    done = _cli(trained, "predict", "shop@production", "minus.csv", "--segment-by", "Store", "--out",
                "minus_out.csv")

    assert done.returncode == 0, done.stderr
    out = pd.read_csv(trained.tmp / "minus_out.csv")
    minus = out["Store"] == -1
    assert minus.sum() == 2
    assert out.loc[minus, "prediction"].isna().all() and out.loc[minus, "model"].isna().all()
    one = out["Store"] == 1
    assert out.loc[one, "prediction"].notna().all() and set(out.loc[one, "model"]) == {"shop-1/1"}
    assert "predicted 12 of 15 row(s)" in done.stderr and "'-1': 2" in done.stderr


def test_deploy_records_each_files_audited_types_and_a_tampered_file_is_still_refused(
        trained: Cluster) -> None:
    import skops.io as sio

    from workers.contracts import ChainState

    record = trained.runtime.registry.resolve("shop-1@production")
    lineage = ChainState.model_validate(record["lineage"])
    assert lineage.trained is not None
    digest = lineage.trained.model_digest
    store = trained.runtime.store
    # Recorded once at deploy, keyed by the file's digest: at least what skops' audit finds in
    # it (the types named as the file was written, each within the allow-list).
    assert set(record["trusted_types"]) == {digest}
    assert set(sio.get_untrusted_types(data=store.get(digest))) <= set(record["trusted_types"][digest])
    path = Path(trained.settings.artifact_root) / store.key(digest)
    original = path.read_bytes()
    rows = _mixed_rows(trained.tmp)
    rows[rows["Store"] == 1].to_csv(trained.tmp / "one.csv", index=False)
    # Loaded once, so this machine's load cache holds the model: it must not serve it past a bad file.
    assert _cli(trained, "predict", "shop@production", "one.csv", "--segment-by", "Store").returncode == 0
    assert list((trained.tmp / ".modelfleet" / "loaded").glob("*.pkl"))
    try:
        # Another model file of the same types under this digest: the recorded list would load
        # it, but its bytes no longer match their name.
        other = load_deployed("shop-2@production", trained.runtime).lineage.trained
        assert other is not None
        path.write_bytes(store.get(other.model_digest))
        done = _cli(trained, "predict", "shop@production", "one.csv", "--segment-by", "Store")
        assert done.returncode == 1 and "modified in the artifact store" in done.stderr, done.stderr
    finally:
        path.write_bytes(original)
    again = _cli(trained, "predict", "shop@production", "one.csv", "--segment-by", "Store")
    assert again.returncode == 0, again.stderr


def test_a_repeated_predict_reads_its_models_from_the_machines_load_cache(trained: Cluster) -> None:
    rows = _mixed_rows(trained.tmp)
    rows.to_csv(trained.tmp / "cached.csv", index=False)
    loaded = trained.tmp / ".modelfleet" / "loaded"
    first = _cli(trained, "predict", "gated@production", "cached.csv", "--segment-by", "Store",
                 "--out", "first.csv")
    assert first.returncode == 0, first.stderr
    # Store 2 failed its gate: gated-1 and gated-3 were loaded, each under its files' digests.
    cache = load_cache(loaded, trained.settings.model_load_cache_mb)
    assert cache is not None
    entries = {}
    for store in ("1", "3"):
        lineage = load_deployed(f"gated-{store}@production", trained.runtime).lineage
        assert lineage.trained is not None and lineage.prepared is not None
        path = cache.entry(served_key(lineage.trained.model_digest, lineage.prepared.transform_digest,
                                      trained.settings.allowed_estimator_prefixes))
        entries[path] = path.stat().st_ino
    for path in entries:
        os.utime(path, (1, 1))
    again = _cli(trained, "predict", "gated@production", "cached.csv", "--segment-by", "Store",
                 "--out", "again.csv", python=("-X", "importtime"))
    assert again.returncode == 0, again.stderr
    # Served from this machine's cache: skops (0.6-1 s of a process's CPU) is never imported.
    assert not re.search(r"\| +skops$", again.stderr, re.M), "a cached predict imported skops"
    expected = pd.read_csv(trained.tmp / "first.csv")
    pd.testing.assert_frame_equal(pd.read_csv(trained.tmp / "again.csv"), expected)
    # Read, not rewritten: each entry the same file, marked used.
    used = {p: p.stat() for p in entries}
    assert {p: s.st_ino for p, s in used.items()} == entries
    assert all(s.st_mtime > 1 for s in used.values())
    # With the cache off, the same predictions from skops' load.
    off = _cli(trained, "predict", "gated@production", "cached.csv", "--segment-by", "Store",
               "--out", "off.csv", python=("-X", "importtime"), env={"MODELFLEET_MODEL_LOAD_CACHE": ""})
    assert off.returncode == 0, off.stderr
    assert re.search(r"\| +skops$", off.stderr, re.M)
    pd.testing.assert_frame_equal(pd.read_csv(trained.tmp / "off.csv"), expected)


def test_a_big_model_is_in_the_machines_load_cache_from_its_training_on(trained: Cluster) -> None:
    from sklearn.datasets import load_diabetes

    from workers.modelcache import KEEP_TRAINED_BYTES

    deployed = load_deployed("boosted@production", trained.runtime)
    assert deployed.lineage.trained is not None
    digest = deployed.lineage.trained.model_digest
    assert len(trained.runtime.store.get(digest)) >= KEEP_TRAINED_BYTES
    cache = load_cache(trained.settings.model_load_cache, trained.settings.model_load_cache_mb)
    assert cache is not None
    entry = cache.entry(served_key(digest, None, trained.settings.allowed_estimator_prefixes))
    written = entry.stat()  # by the worker that trained it
    os.utime(entry, (1, 1))
    X = load_diabetes(as_frame=True).data.head(5)
    X.to_csv(trained.tmp / "diabetes.csv", index=False)
    done = _cli(trained, "predict", "boosted@production", "diabetes.csv", "--out", "boosted.csv")
    assert done.returncode == 0, done.stderr
    # The first predict read the worker's entry (the same file, marked used), and its
    # predictions are the deployed model's.
    assert entry.stat().st_ino == written.st_ino and entry.stat().st_mtime > 1
    np.testing.assert_allclose(pd.read_csv(trained.tmp / "boosted.csv")["prediction"],
                               deployed.estimator.predict(X))


def test_an_unpromoted_segment_is_named_with_its_gate_and_fallback_latest_scores_it(
        trained: Cluster) -> None:
    # Issue 21, item 4: store 2's model is registered but failed its gate; it was lumped with
    # a store that has no model at all.
    rows = _mixed_rows(trained.tmp)
    rows.to_csv(trained.tmp / "gated.csv", index=False)
    store2 = (rows["Store"] == 2).to_numpy()
    latest = load_deployed("gated-2/1", trained.runtime)
    assert "gate failed: mae=" in latest.record["decision"]["reason"]

    done = _cli(trained, "predict", "gated@production", "gated.csv", "--segment-by", "Store",
                "--out", "g.csv")

    assert done.returncode == 0, done.stderr
    out = pd.read_csv(trained.tmp / "g.csv")
    assert out.loc[store2, "prediction"].isna().all() and out.loc[store2, "model"].isna().all()
    assert set(out.loc[out["Store"].isin([1, 3]), "model"]) == {"gated-1/1", "gated-3/1"}
    assert "served_by" not in out.columns
    # Which is which, and why: the store with no model apart from the unpromoted one.
    assert "predicted 8 of 15 row(s)" in done.stderr
    assert "3 row(s) of 2 Store value(s) with no model at gated@production" in done.stderr
    assert ("4 row(s) of 1 Store value(s) whose model is registered but not promoted at gated@production, "
            "left without a prediction (--fallback latest") in done.stderr, done.stderr
    reason = latest.record["decision"]["reason"]
    assert f"  Store 2: gated-2: registered (version 1), not promoted: {reason} (4 row(s))" in done.stderr
    assert "'2'" not in done.stderr.split("with no model")[1].splitlines()[0]
    strict = _cli(trained, "predict", "gated@production", "gated.csv", "--segment-by", "Store", "--strict",
                  "--out", "gs.csv")
    assert strict.returncode == 1, strict.stderr

    fell = _cli(trained, "predict", "gated@production", "gated.csv", "--segment-by", "Store",
                "--fallback", "latest", "--out", "f.parquet")

    assert fell.returncode == 0, fell.stderr
    scored = pd.read_parquet(trained.tmp / "f.parquet")
    assert list(scored.columns) == [*rows.columns, "prediction", "model", "served_by"]
    assert set(scored.loc[store2, "model"]) == {"gated-2/1"}
    assert set(scored.loc[store2, "served_by"]) == {"latest"}
    np.testing.assert_array_equal(scored.loc[store2, "prediction"].to_numpy(),
                                  latest.estimator.predict(rows.loc[store2, [*FEATURES, "Date"]]))
    promoted = scored["Store"].isin(["1", "3"])
    assert promoted.sum() == 8 and set(scored.loc[promoted, "served_by"]) == {"production"}
    np.testing.assert_array_equal(scored.loc[promoted, "prediction"].to_numpy(),
                                  out.loc[promoted, "prediction"].to_numpy())
    assert scored.loc[~promoted & ~store2, "served_by"].isna().all()
    assert "predicted 12 of 15 row(s)" in fell.stderr
    assert ("note: 4 row(s) of 1 Store value(s) scored with their latest version, not promoted at "
            "gated@production (served_by 'latest'):") in fell.stderr
    assert "  Store 2: gated-2: registered (version 1), not promoted: gate failed" in fell.stderr

    # The Python API says the same, and takes the same fallback.
    with pytest.warns(UserWarning, match=r"4 row\(s\) of Store 2 scored with its latest version: gated-2"):
        api = modelfleet.predict_frame("gated@production", rows, segment_by="Store",
                                       settings=trained.settings, fallback="latest")
    np.testing.assert_array_equal(api["prediction"].to_numpy(), scored["prediction"].to_numpy())

    # Only unpromoted segments in the rows: nothing at the alias, exit 2, saying why.
    rows[store2].to_csv(trained.tmp / "only2.csv", index=False)
    none = _cli(trained, "predict", "gated@production", "only2.csv", "--segment-by", "Store")
    assert none.returncode == 2
    assert ("no Store segment of 'gated' has a model at alias 'production'; 1 registered but not promoted "
            "(`--fallback latest` scores them with their latest version), e.g. gated-2: registered"
            in none.stderr), none.stderr
    # evaluate says the same of it: no check, and why.
    walmart = pd.read_csv(EXAMPLE_DATA / "walmart_weekly_sales.csv")
    new = walmart[walmart["Store"].isin([1, 2])].groupby("Store").tail(3)
    new.to_csv(trained.tmp / "new.csv", index=False)
    checked = _cli(trained, "evaluate", "gated@production", "new.csv", "--segment-by", "Store", "--json")
    assert checked.returncode == 0, checked.stderr
    checks = {c["segment"]: c for c in json.loads(checked.stdout)["checks"]}
    assert checks["1"]["model"] == "gated-1/1" and checks["1"]["rows"] == 3 and checks["1"]["now"]
    assert checks["2"]["model"] == "gated-2" and not checks["2"]["now"]
    assert checks["2"]["note"] == ("at gated@production: gated-2: registered (version 1), not promoted: "
                                   f"{reason}")

    # --fallback is for segment families at an alias.
    for args in (["gated-1@production", "only2.csv"], ["gated", "only2.csv", "--segment-by", "Store"]):
        refused = _cli(trained, "predict", *args, "--fallback", "latest")
        assert refused.returncode == 2 and "--fallback" in refused.stderr, refused.stderr
