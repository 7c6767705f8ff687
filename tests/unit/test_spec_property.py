"""Property: whatever spec is thrown at the validator, it accepts it or raises SpecError."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.spec import Batch, SpecError, load_batch
from workers.settings import Settings

leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
)
anything = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values, now and then anything at all."""
    return st.sampled_from(range(20)).flatmap(lambda i: anything if i == 19 else valid)


names = maybe(
    st.sampled_from(range(5)).flatmap(
        lambda i: (
            st.sampled_from(["m1", "m2", "m3", "a.b", "m-4"])
            if i < 4
            else st.sampled_from(["a..b", "../x", "Upper", "", "x" * 81, "-lead"]) | st.text(max_size=12)
        )
    )
)
datasets = maybe(
    st.fixed_dictionaries(
        {"kind": st.just("sklearn"), "name": maybe(st.sampled_from(["iris", "wine", "diabetes", "mnist"]))}
    )
    | st.fixed_dictionaries(
        {"kind": st.just("synthetic")},
        optional={
            "n_samples": maybe(st.integers(-5, 3000)),
            "n_features": maybe(st.integers(-1, 50)),
            "n_informative": maybe(st.integers(-1, 60)),
            "n_classes": maybe(st.integers(0, 5)),
            "noise": leaf,
            "seed": leaf,
        },
    )
    | st.fixed_dictionaries(
        {
            "kind": st.just("csv"),
            "path": maybe(
                st.sampled_from(
                    ["data.csv", "../outside.csv", "/etc/passwd", "missing.csv", "link.csv", "", "."]
                )
            ),
            "target": maybe(st.sampled_from(["y", "a", "empty", "nope", ""])),
        },
        optional={
            "segment_by": maybe(st.sampled_from(["a", "s", "nope"])),
            "features": maybe(st.lists(st.sampled_from(["a", "s", "empty", "y", "nope"]), max_size=3)),
            "segment": leaf,
        },
    )
)
estimators = maybe(
    st.fixed_dictionaries(
        {
            "class_path": maybe(
                st.sampled_from(
                    [
                        "sklearn.linear_model.LogisticRegression",
                        "sklearn.tree.DecisionTreeClassifier",
                        "sklearn.linear_model.Ridge",
                        "sklearn.svm.SVC",
                        "os.system",
                        "builtins.eval",
                        "sklearn.base.os",
                        "sklearn",
                        "sklearn.utils.Bunch",
                        "sklearn._config",
                        "sklearn.tree",
                        "sklearn.nope.X",
                    ]
                )
            )
        },
        optional={
            "params": maybe(
                st.dictionaries(
                    st.sampled_from(
                        ["max_iter", "C", "max_depth", "alpha", "random_state", "n_estimators", "nope"]
                    ),
                    leaf,
                    max_size=3,
                )
            )
        },
    )
)
metrics = st.sampled_from(["accuracy", "f1_macro", "r2", "mae", "nope"])
models = st.fixed_dictionaries(
    {
        "name": names,
        "task": maybe(st.sampled_from(["classification", "regression", "ranking"])),
        "dataset": datasets,
        "estimator": estimators,
    },
    optional={
        "preprocess": maybe(
            st.dictionaries(st.sampled_from(["test_size", "impute", "scale", "seed", "x"]), leaf, max_size=3)
        ),
        "evaluation": maybe(
            st.fixed_dictionaries(
                {}, optional={"metrics": maybe(st.lists(metrics, max_size=3)), "primary": maybe(metrics)}
            )
        ),
        "deploy": maybe(st.fixed_dictionaries({}, optional={"alias": names, "gate": anything})),
        "tags": maybe(st.dictionaries(st.sampled_from(["team", "x"]), st.text(max_size=5), max_size=2)),
    },
)
matrices = st.fixed_dictionaries(
    {
        "name": maybe(
            st.sampled_from(
                [
                    "{dataset}-{seed}",
                    "{nope}",
                    "{0}",
                    "{dataset.real}",
                    "{dataset!z}",
                    "{dataset[0]}",
                    "{dataset:>{seed}}",
                    "x",
                    "{",
                ]
            )
        ),
        "axes": maybe(
            st.dictionaries(
                st.sampled_from(["dataset", "estimator", "preprocess", "seed", "task"]),
                st.dictionaries(st.text(max_size=5), anything, min_size=1, max_size=3),
                min_size=1,
                max_size=2,
            )
        ),
    },
    optional={"base": maybe(models)},
)
batches = st.fixed_dictionaries(
    {
        "name": maybe(st.sampled_from(["b", "batch-1"])),
        "models": maybe(st.lists(models, min_size=1, max_size=3, unique_by=lambda m: str(m["name"]))),
    },
    optional={
        "matrix": maybe(matrices),
        "defaults": maybe(
            st.dictionaries(st.sampled_from(["task", "estimator", "preprocess"]), anything, max_size=2)
        ),
    },
)
# Mostly well-formed batches (so the checks deep inside are reached), some garbage.
specs = st.sampled_from(range(10)).flatmap(
    lambda i: anything if i == 9 else batches.map(lambda b: {**b, "extra": 1}) if i == 8 else batches
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("prop")
    root = base / "data"
    root.mkdir()
    (root / "data.csv").write_text("a,s,empty,y\n1,x,,2\n2,x,,3\n3,z,,4\n4,z,,5\n5,x,nan,6\n")
    (base / "outside.csv").write_text("a,y\n1,2\n")
    (root / "link.csv").symlink_to(base / "outside.csv")
    return root


_counter = itertools.count()


def _check(path: Path, root: Path) -> None:
    try:
        batch = load_batch(path, Settings(data_root=root, max_models_per_batch=50))
    except SpecError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        assert all(path.name in p for p in exc.problems), "every problem names the file"
    else:
        assert isinstance(batch, Batch) and batch.models


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs)
def test_random_specs_are_accepted_or_refused_with_spec_error(spec: Any, data_root: Path) -> None:
    path = data_root.parent / f"spec-{next(_counter)}.yaml"
    path.write_text(yaml.safe_dump(spec))
    _check(path, data_root)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_yaml_text_is_accepted_or_refused_with_spec_error(text: str, data_root: Path) -> None:
    path = data_root.parent / f"text-{next(_counter)}.yaml"
    path.write_text(text)
    _check(path, data_root)
