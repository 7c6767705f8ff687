"""`modelfleet score --segment-by` on models trained by real workers: each chunk's rows by their
own segment's model on a `score` worker, the input read a chunk at a time by the producer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from producer.local import LocalWorkers, wait_for
from producer.scoring import score_workers
from producer.segment_scoring import score_segments
from producer.segments import predict_frame
from tests.conftest import EXAMPLE_DATA
from tests.support.cluster import Cluster, cluster
from workers.settings import SCORE_QUEUE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORES = ["1", "2", "3"]
TAMPERED = "4"  # trained too; only the tampering test scores its rows (no worker has it cached)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A family of 4 store models (Ridge on Walmart's numeric columns) and a worker on `score`."""
    tmp = tmp_path_factory.mktemp("score-segments")
    data = tmp / "data"
    data.mkdir()
    walmart = pd.read_csv(EXAMPLE_DATA / "walmart_weekly_sales.csv")
    walmart[walmart["Store"].astype(str).isin([*STORES, TAMPERED])].to_csv(data / "stores.csv", index=False)
    with cluster(tmp, workers=1, data_root=data) as c:
        spec = {"name": "segscore", "models": [
            {"name": "shop", "task": "regression",
             "dataset": {"kind": "csv", "path": "stores.csv", "target": "Weekly_Sales",
                         "segment_by": "Store"},
             "features": {"dates": {"columns": ["Date"], "format": "%d-%m-%Y", "parts": ["year", "week"]}},
             "estimator": {"class_path": "sklearn.linear_model.Ridge"},
             "evaluation": {"metrics": ["mae"], "primary": "mae"}}]}
        status = c.submit(spec).wait(timeout=180)
        assert status.counts == {"promoted": 4}, status.rows
        with LocalWorkers(c.settings, 1, tmp / "logs", queues=[SCORE_QUEUE], name_prefix="score"):
            yield c


def _rows() -> pd.DataFrame:
    """Rows of the three stores shuffled, three of a store with no model and one with no store."""
    walmart = pd.read_csv(EXAMPLE_DATA / "walmart_weekly_sales.csv")
    known = walmart[walmart["Store"].astype(str).isin(STORES)].groupby("Store").tail(5)
    stranger = walmart[walmart["Store"] == 1].head(3).assign(Store=99)
    blank = walmart[walmart["Store"] == 2].head(1).assign(Store=None)
    rows = pd.concat([known, stranger, blank]).drop(columns="Weekly_Sales")
    rows = rows.sample(frac=1.0, random_state=5).reset_index(drop=True)
    return rows.assign(Store=rows["Store"].astype("Int64"))


def _cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer", *args], cwd=c.tmp, capture_output=True,
                          env={**os.environ, **c.settings.to_env()}, text=True, timeout=180)


def test_each_chunks_rows_get_their_own_segments_model(trained: Cluster) -> None:
    rows = _rows()
    rows.to_parquet(trained.tmp / "mixed.parquet", index=False)
    objects_before = {digest for digest, _ in trained.runtime.store.objects()}

    # 19 rows in chunks of 4: every chunk holds rows of several stores.
    done = _cli(trained, "score", "shop@production", "mixed.parquet", "--segment-by", "Store",
                "--out", "scored", "--chunk-rows", "4")

    assert done.returncode == 0, done.stderr
    assert "scored 15 of 19 row(s) with 3 segment model(s) of shop@production in 5 chunk(s)" in done.stderr
    assert "4 row(s) of 2 Store value(s) with no model" in done.stderr and "'99': 3" in done.stderr
    out = pd.read_parquet(trained.tmp / "scored" / "predictions.parquet")
    pd.testing.assert_frame_equal(out[rows.columns], rows)
    # The same predictions as `predict --segment-by` (each store's model, in this process).
    expected = predict_frame("shop@production", rows, trained.runtime, "Store").frame
    np.testing.assert_allclose(out["prediction"].to_numpy(dtype=float),
                               expected["prediction"].to_numpy(dtype=float))
    assert out["model"].fillna("-").tolist() == expected["model"].fillna("-").tolist()
    assert out.loc[out["Store"] == 99, "model"].isna().all() and out["prediction"].isna().sum() == 4
    by_store = out.dropna(subset=["model"]).groupby("Store")["model"].unique()
    assert {int(s): list(m) for s, m in by_store.items()} == \
        {1: ["shop-1/1"], 2: ["shop-2/1"], 3: ["shop-3/1"]}
    # The chunks and their predictions were scratch.
    assert {digest for digest, _ in trained.runtime.store.objects()} <= objects_before


def test_the_producer_sends_chunks_before_the_input_ends(trained: Cluster) -> None:
    """A named pipe as the input: its second half is written only once the first chunk is in the
    store, so a producer that read the whole input first would never send anything."""
    rows = pd.concat([_rows()] * 1000, ignore_index=True)  # 19,000 rows, about 850 kB of CSV
    text = rows.to_csv(index=False).splitlines(keepends=True)
    half = len(text) // 2
    assert sum(map(len, text[:half])) > 300_000  # more than pandas' first read (256 kB): a chunk
    fifo = trained.tmp / "rows.csv"
    os.mkfifo(fifo)
    store = trained.runtime.store
    before = {digest for digest, _ in store.objects()}
    stored_early: list[bool] = []

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.writelines(text[:half])
            pipe.flush()
            try:
                wait_for(lambda: {d for d, _ in store.objects()} - before, 60, "the first chunk stored")
                stored_early.append(True)
            finally:
                pipe.writelines(text[half:])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = score_segments("shop@production", fifo, "Store", trained.runtime, trained.app,
                                trained.tmp / "piped", chunk_rows=1000, timeout=120)
    finally:
        writer.join()
    assert stored_early == [True]
    assert result.chunks == 19 and result.rows == len(rows) and sum(result.unknown.values()) == 4 * 1000
    out = pd.read_parquet(result.path)
    assert len(out) == len(rows) and out["prediction"].notna().sum() == 15 * 1000
    # In order; the segment column read as text, as segments were trained.
    pd.testing.assert_frame_equal(out[rows.columns].drop(columns="Store"), rows.drop(columns="Store"))
    assert out["Store"].fillna("-").tolist() == rows["Store"].astype(object).fillna("-").astype(str).tolist()


def test_a_row_that_does_not_fit_its_model_names_the_chunk_and_model(trained: Cluster) -> None:
    rows = _rows()
    store2 = rows.index[rows["Store"] == 2][0]
    rows["Temperature"] = rows["Temperature"].astype(object)
    rows.loc[store2, "Temperature"] = "warm"
    rows.to_csv(trained.tmp / "bad.csv", index=False)

    done = _cli(trained, "score", "shop@production", "bad.csv", "--segment-by", "Store", "--out", "bad")

    assert done.returncode == 2, done.stderr
    assert "bad.csv, chunk 1" in done.stderr and "model shop-2/1, column 'Temperature'" in done.stderr
    assert not (trained.tmp / "bad").exists()
    nothing = _cli(trained, "score", "nosuch@production", "bad.csv", "--segment-by", "Store", "--out", "n")
    assert nothing.returncode == 2 and "no Store segment of 'nosuch' has a model" in nothing.stderr


def test_a_model_file_modified_in_the_store_is_refused_by_the_worker(trained: Cluster) -> None:
    from workers.contracts import ChainState

    record = trained.runtime.registry.resolve(f"shop-{TAMPERED}@production")
    lineage = ChainState.model_validate(record["lineage"])
    assert lineage.trained is not None and record["trusted_types"]
    store = trained.runtime.store
    path = Path(trained.settings.artifact_root) / store.key(lineage.trained.model_digest)
    other = ChainState.model_validate(trained.runtime.registry.resolve("shop-1@production")["lineage"])
    assert other.trained is not None
    walmart = pd.read_csv(EXAMPLE_DATA / "walmart_weekly_sales.csv")
    walmart[walmart["Store"] == int(TAMPERED)].head(3).drop(columns="Weekly_Sales").to_csv(
        trained.tmp / "four.csv", index=False)
    original = path.read_bytes()
    try:
        # Another store's model file, of the very types recorded for this digest.
        path.write_bytes(store.get(other.trained.model_digest))
        done = _cli(trained, "score", "shop@production", "four.csv", "--segment-by", "Store", "--out", "t")
        assert done.returncode == 1, done.stderr
        assert "modified in the artifact store" in done.stderr and not (trained.tmp / "t").exists()
    finally:
        path.write_bytes(original)


def test_score_finds_its_workers_from_their_registrations(trained: Cluster) -> None:
    # The score worker registered its queue (workers/slots.py): no broadcast to ask (app None
    # would fail there); the cluster's stage workers are not score workers.
    found = score_workers(None, trained.runtime)
    assert len(found) == 1 and found[0].startswith("score")
