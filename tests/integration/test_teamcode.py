"""The team's own code (examples/teamcode) on the workers' PYTHONPATH: allowed by prefix, used
inside a Pipeline with a search, trained by a real worker, keyed by its source, loaded back
trusting the same allow-list, predicting."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sklearn.datasets import load_diabetes

from producer.serving import load_deployed
from tests.conftest import REPO
from tests.support.cluster import cluster
from workers.pipeline.errors import PipelineError
from workers.runtime import Runtime
from workers.usercode import source_hash

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEAMCODE = REPO / "examples" / "teamcode"
PIPELINE = {"class_path": "sklearn.pipeline.Pipeline", "params": {"steps": [
    ["clip", {"class_path": "teamcode.transformers.QuantileClipper", "params": {"lower": 0.02}}],
    ["model", {"class_path": "teamcode.regressors.ShrunkLinearRegressor"}]]}}


def test_a_team_package_trains_in_a_pipeline_and_serves(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The workers (started below) and this process, as a serving process would, import teamcode.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TEAMCODE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TEAMCODE))
    monkeypatch.delitem(sys.modules, "teamcode", raising=False)
    spec = {"name": "team", "models": [{
        "name": "team-sales", "task": "regression", "dataset": {"kind": "sklearn", "name": "diabetes"},
        "estimator": PIPELINE, "evaluation": {"metrics": ["r2", "rmse"]},
        "search": {"space": {"model__shrink": [0.1, 10.0], "clip__upper": [0.95, 0.99]}, "cv": 3}}]}
    with cluster(tmp_path, workers=1, allowed_estimator_prefixes=["sklearn.", "teamcode."]) as c:
        first = c.submit(spec)
        assert first.wait(timeout=120).counts == {"promoted": 1}, c.logs()[-3000:]
        again = c.submit(spec)
        assert again.wait(timeout=120).counts == {"promoted": 1}

        runs = {(r["stage"], r["batch_id"]): r for r in c.runtime.tracker.runs(model="team-sales")}
        train, evaluate = runs[("train", first.batch_id)], runs[("evaluate", first.batch_id)]
        # The package is part of the train and evaluate keys, by a hash of its sources (it is
        # not installed as a distribution here); unchanged code, so the second batch hit the cache.
        code = {"teamcode": f"sha256:{source_hash('teamcode')}"}
        assert train["params"]["user_code"] == code and evaluate["params"]["user_code"] == code
        assert runs[("train", again.batch_id)]["cache_hit"] and not train["cache_hit"]
        assert train["result"]["search"]["n_trials"] == 4

        # Loaded back: the model file holds the team's classes, trusted by the same allow-list.
        deployed = load_deployed("team-sales@production", c.runtime)
        fitted = deployed.estimator.named_steps["estimator"]
        assert [type(s).__name__ for _, s in fitted.steps] == ["QuantileClipper", "ShrunkLinearRegressor"]
        X, y = load_diabetes(return_X_y=True)
        assert deployed.estimator.score(X, y) > 0.3
        narrower = c.settings.model_copy(update={"allowed_estimator_prefixes": ["sklearn."]})
        with pytest.raises(PipelineError, match="outside the allow-list.*teamcode"):
            load_deployed("team-sales@production", Runtime.from_settings(narrower))
