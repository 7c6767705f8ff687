"""`modelfleet report`: an HTML page per model version (metrics, plots, lineage) and a batch
page that ranks every model and links its page. The PNGs are drawn here, from the plot data the
evaluate stage stored, so workers never load matplotlib."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import click

from producer import reports
from producer.cli.common import MAX_COUNT, MAX_PROCESSES, UserError, console, pass_settings, runtime
from producer.cli.report_html import batch_page, model_page
from workers.settings import Settings

PARALLEL_FROM = 16  # models; fewer are drawn faster than a pool starts


@click.command()
@click.argument("ref", required=False, metavar="MODEL@ALIAS|MODEL/VERSION")
@click.option("--batch", "batch_id", help="A batch report: every model ranked, each linked to its page.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              show_default=True)
@click.option("--top", type=click.IntRange(1, MAX_COUNT), metavar="N",
              help="With --batch: only the first N models of each task (pages and ranking).")
@click.option("--jobs", type=click.IntRange(1, MAX_PROCESSES), metavar="N",
              help="With --batch: processes drawing the pages (default: up to 8 from 16 models on).")
@pass_settings
def report(settings: Settings, ref: str | None, batch_id: str | None, out_dir: Path, top: int | None,
           jobs: int | None) -> None:
    """Write a model version's report page, or with --batch a batch's report pages, under --out."""
    if (ref is None) == (batch_id is None):
        raise UserError("give a model (NAME@ALIAS or NAME/VERSION) or --batch BATCH_ID, not both")
    with runtime(settings) as rt:
        try:
            if ref is not None:
                models, batch = [reports.model_report(rt, ref)], None
            else:
                batch = reports.batch_report(rt, batch_id or "", top)
                models = [reports.model_report(rt, f"{e.name}/{e.version}")
                          for part in batch["sections"] for e in part.rows if e.version is not None]
        except ValueError as exc:  # a version record whose lineage does not parse
            raise UserError(f"{ref}: {exc}") from exc
    plots_module()  # a missing matplotlib is a user error, before any file is written
    out_dir.mkdir(parents=True, exist_ok=True)
    if batch is None:
        path = write_model(out_dir, models[0], back=None)
    else:
        pages = out_dir / "models"
        pages.mkdir(exist_ok=True)
        written = write_models(pages, models, jobs)
        links = {m["name"]: f"models/{page.name}" for m, page in zip(models, written, strict=True)}
        path = out_dir / "index.html"
        path.write_text(batch_page(batch, links))
    console.print(f"wrote {path}", markup=False)


def pool_size(jobs: int | None, pages: int) -> int:
    """Processes drawing `pages` pages: --jobs, else up to 8 from 16 pages on; never more than pages."""
    if jobs is None:
        jobs = min(os.cpu_count() or 1, 8) if pages >= PARALLEL_FROM else 1
    return max(min(jobs, pages), 1)


def write_models(out_dir: Path, models: list[dict[str, Any]], jobs: int | None) -> list[Path]:
    """Every model's page; drawing takes 0.1-0.2 s of CPU per model, so many go to a process pool."""
    jobs = pool_size(jobs, len(models))
    if jobs == 1:
        return [write_model(out_dir, m, back="../index.html") for m in models]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(partial(write_model, out_dir, back="../index.html"), models, chunksize=8))


def plots_module() -> Any:
    """producer.cli.plots, which imports matplotlib: only once there is something to draw."""
    try:
        from producer.cli import plots
    except ImportError as exc:
        raise UserError(f"report needs matplotlib ({exc}): pip install 'modelfleet[report]'") from exc
    return plots


def write_model(out_dir: Path, data: dict[str, Any], back: str | None) -> Path:
    """NAME-vVERSION.html beside a NAME-vVERSION/ folder with its PNGs and report.json."""
    plots = plots_module()

    stem = f"{data['name']}-v{data['version']}"
    folder = out_dir / stem
    folder.mkdir(exist_ok=True)
    images: dict[str, str] = {}
    found = data.get("plots") or {}
    if "confusion" in found:
        images["confusion matrix"] = plots.confusion(found["labels"], found["confusion"],
                                                     folder / "confusion.png").name
    if "y_true" in found:
        images["residuals"] = plots.residuals(found["y_true"], found["y_pred"], folder / "residuals.png").name
    if found.get("importances"):
        imp = found["importances"]
        images["feature importances"] = plots.importances(imp["features"], imp["kind"],
                                                          folder / "importances.png").name
    (folder / "report.json").write_text(json.dumps(data, indent=1, default=str))
    page = out_dir / f"{stem}.html"
    page.write_text(model_page(data, {k: f"{stem}/{v}" for k, v in images.items()}, stem, back))
    return page


COMMANDS = [report]
