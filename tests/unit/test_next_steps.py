"""The commands `modelfleet run` prints at its end name the batch's own models, files and id."""

from __future__ import annotations

from pathlib import Path

from producer.nextsteps import next_steps
from producer.spec import load_batch
from producer.status import BatchStatus, ModelRow
from tests.conftest import REPO
from workers.settings import Settings


def row(name: str, value: float, promoted: bool = True) -> ModelRow:
    return ModelRow(name=name, status="promoted" if promoted else "registered", stage="deploy", metric="mae",
                    value=value, version=1, promoted=promoted, reason="" if promoted else "mape 0.104 > 0.1",
                    error="", worker="w0", seconds=1.0)


def test_a_segmented_batch_gets_a_segment_predict_with_its_family_column_and_file() -> None:
    batch = load_batch(REPO / "examples" / "walmart_forecast.yaml", Settings(data_root=REPO))
    rows = [row("store-18", 1.0, promoted=False), row("store-4", 5.0), row("store-3", 2.0)]
    status = BatchStatus("walmart-forecast-1", "walmart-forecast", rows, {"promoted": 2, "registered": 1},
                         {}, 1.0, None, done=True)

    steps = [s.command for s in next_steps(batch, status, Path("."), workers=3)]

    data = "examples/data/walmart_weekly_sales.csv"
    # The best promoted model (store-18 ranks first but was not promoted), by its alias.
    assert steps[0] == f"modelfleet predict store-3@production {data}"
    assert steps[1] == f"modelfleet predict store@production {data} --segment-by Store"
    # store-18 failed its gate: segment predict leaves it empty unless asked for its latest version.
    assert steps[2] == f"modelfleet predict store@production {data} --segment-by Store --fallback latest"
    assert steps[3:] == ["modelfleet report --batch walmart-forecast-1 --out reports",
                         "modelfleet leaderboard walmart-forecast-1", "modelfleet up --workers 3"]
