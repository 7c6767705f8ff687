"""What to type after `modelfleet run`: the next commands, with the batch's real names.

A new user's first batch ends with a leaderboard and nothing that says how to use what
was trained; these lines name a model, its alias, its data file and the batch id.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from producer.spec import Batch, segment_model_name
from producer.status import BatchStatus, ModelRow, ranked
from workers.contracts import CsvDataset, ModelSpec


@dataclass(frozen=True)
class Step:
    command: str
    why: str


def next_steps(batch: Batch, status: BatchStatus, data_root: Path, workers: int) -> list[Step]:
    """Predict one model, predict per segment (where the batch has segments), report,
    leaderboard, `up`: each a command that runs as printed."""
    specs = {m.name: m for m in batch.models}
    steps = []
    best = _best(status.rows)
    if best is not None:
        spec = specs[best.name]
        ref = f"{best.name}@{spec.deploy.alias}" if best.promoted else f"{best.name}/{best.version}"
        rows = _data_file(spec, data_root) or "ROWS.csv"
        steps.append(Step(f"modelfleet predict {ref} {rows}",
                          f"predict a table with {best.name} ({'promoted' if best.promoted else 'latest'})"))
    family = _segment_family(batch)
    if family is not None:
        spec, name = family
        assert isinstance(spec.dataset, CsvDataset) and spec.dataset.segment_by is not None
        command = (f"modelfleet predict {name}@{spec.deploy.alias} {_data_file(spec, data_root)} "
                   f"--segment-by {shlex.quote(spec.dataset.segment_by)}")
        steps.append(Step(command, f"each row by its own {spec.dataset.segment_by}'s model"))
        # Segments whose gate failed are left empty there: say how to score them anyway.
        unpromoted = [r.name for r in status.rows if r.version and not r.promoted
                      and r.name.startswith(f"{name}-") and r.name in specs]
        if unpromoted:
            shown = ", ".join(unpromoted[:3]) + (", ..." if len(unpromoted) > 3 else "")
            steps.append(Step(f"{command} --fallback latest",
                              f"also the {len(unpromoted)} segment(s) not promoted ({shown}), each by its "
                              "latest version"))
    steps += [
        Step(f"modelfleet report --batch {status.batch_id} --out reports",
             "HTML pages per model (needs pip install -e '.[report]')"),
        Step(f"modelfleet leaderboard {status.batch_id}", "the ranking again, --json for scripts"),
        Step(f"modelfleet up --workers {workers}", "Flower and the batch page, until Ctrl-C"),
    ]
    return steps


def _best(rows: list[ModelRow]) -> ModelRow | None:
    """The best model with a version, promoted ones first."""
    versioned = [r for r in ranked(rows) if r.version]
    return next((r for r in versioned if r.promoted), versioned[0] if versioned else None)


def _data_file(spec: ModelSpec, data_root: Path) -> str | None:
    if not isinstance(spec.dataset, CsvDataset):
        return None
    path = Path(spec.dataset.path)
    return shlex.quote(str(path if data_root == Path(".") else data_root / path))


def _segment_family(batch: Batch) -> tuple[ModelSpec, str] | None:
    """A segmented model of the batch and its family name (`store` for `store-8`)."""
    for spec in batch.models:
        ds = spec.dataset
        if isinstance(ds, CsvDataset) and ds.segment_by and ds.segment is not None:
            suffix = segment_model_name("", ds.segment)
            if spec.name.endswith(suffix):
                return spec, spec.name[: -len(suffix)]
    return None
