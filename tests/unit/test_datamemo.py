"""What submit's data checks remember: a repeated check of the same file imports neither
pandas nor scikit-learn; an edited file, or a check that failed, is checked again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from producer.datamemo import MAX_ENTRIES, DataMemo
from producer.spec import SpecError, load_batch
from tests.conftest import EXAMPLE_DATA, REPO, write_spec
from workers.contracts import CsvDataset
from workers.settings import Settings

CHECK = """
import json, sys
from producer.spec import SpecError, load_batch
from workers.settings import Settings
settings = Settings(check_cache_dir=sys.argv[2], data_root=sys.argv[3])
try:
    out = {"models": sorted(m.name for m in load_batch(sys.argv[1], settings).models)}
except SpecError as exc:
    out = {"error": str(exc)}
print(json.dumps({**out, "heavy": sorted(m for m in ("pandas", "sklearn") if m in sys.modules)}))
"""


def check(spec: Path, cache: Path, data_root: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHECK, str(spec), str(cache), str(data_root)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def stores_spec(tmp_path: Path, **features: Any) -> Path:
    model = {"name": "store", "task": "regression",
             "dataset": {"kind": "csv", "path": "sales.csv", "target": "Weekly_Sales", "segment_by": "Store"},
             "estimator": {"class_path": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}},
             "evaluation": {"metrics": ["r2"], "primary": "r2"}, **features}
    return write_spec(tmp_path, {"name": "stores", "models": [model]})


@pytest.mark.slow
def test_a_repeated_check_of_an_unchanged_file_reads_nothing_an_edited_one_is_read(tmp_path: Path) -> None:
    data, cache = tmp_path / "data", tmp_path / "checks"
    data.mkdir()
    lines = (EXAMPLE_DATA / "walmart_weekly_sales.csv").read_text().splitlines()
    three_stores = [lines[0], *(line for line in lines[1:] if line.split(",")[0] in ("1", "2", "3"))]
    (data / "sales.csv").write_text("\n".join(three_stores) + "\n")
    spec = stores_spec(tmp_path, split={"kind": "time", "time_column": "Date", "test_size": 0.2},
                       features={"dates": {"columns": ["Date"], "format": "%d-%m-%Y"}})
    # Given a first check, which reads the file with pandas and prepares the table
    first = check(spec, cache, data)
    assert first == {"models": ["store-1", "store-2", "store-3"], "heavy": ["pandas", "sklearn"]}
    # When the same spec is checked again, then neither pandas nor scikit-learn is imported
    assert check(spec, cache, data) == {**first, "heavy": []}
    # When the file is edited (a fourth store), it is read again and its new segment found
    fourth = [line.replace("1,", "4,", 1) for line in three_stores[1:] if line.startswith("1,")]
    (data / "sales.csv").write_text("\n".join(three_stores + fourth) + "\n")
    assert check(spec, cache, data) == {"models": ["store-1", "store-2", "store-3", "store-4"],
                                        "heavy": ["pandas", "sklearn"]}
    # A failing check is not remembered: the same message each time, from the real check
    bad = stores_spec(tmp_path, features={"categorical": {"columns": ["Nope"]}})
    errors = [check(bad, cache, data) for _ in range(2)]
    assert "'features.categorical.columns'" in errors[0]["error"] and "Nope" in errors[0]["error"]
    assert errors[0] == errors[1] and errors[1]["heavy"] == ["pandas", "sklearn"]


def test_the_key_names_the_file_as_it_is_and_the_memo_stays_bounded(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x,y\n1,2\n")
    memo = DataMemo.open(tmp_path / "checks")
    dataset = CsvDataset(kind="csv", path="a.csv", target="y")
    key = memo.key("features", "{}", dataset, tmp_path)
    assert key is not None and key == memo.key("features", "{}", dataset, tmp_path)
    assert memo.key("segments", "{}", dataset, tmp_path) != key
    missing = CsvDataset(kind="csv", path="missing.csv", target="y")
    assert memo.key("features", "{}", missing, tmp_path) is None
    os.utime(tmp_path / "a.csv", ns=(1, 1))  # the same bytes, another modification time
    assert memo.key("features", "{}", dataset, tmp_path) != key
    for i in range(MAX_ENTRIES + 5):
        memo.put(f"k{i}", True)
    memo.save()
    kept = json.loads((tmp_path / "checks" / "data-checks.json").read_text())
    assert len(kept) == MAX_ENTRIES and "k0" not in kept and f"k{MAX_ENTRIES + 4}" in kept
    assert DataMemo.open(None).key("features", "{}", dataset, tmp_path) is None


def test_with_no_cache_every_check_runs(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"name": "b", "models": [{
        "name": "m", "task": "regression",
        "dataset": {"kind": "csv", "path": "walmart_weekly_sales.csv", "target": "Weekly_Sales",
                    "segment_by": "Store"},
        "estimator": {"class_path": "sklearn.linear_model.Ridge"}, "features": {"categorical": {
            "columns": ["Nope"]}}}]})
    with pytest.raises(SpecError, match="Nope"):
        load_batch(spec, Settings(check_cache_dir=None, data_root=EXAMPLE_DATA))
