"""Fuzz the spec input surface: bytes, YAML-ish text, hostile values in plausible specs.

Whatever the file holds, loading it through the CLI's path (producer.cli.batches.load, what
`run` and `submit` call before anything else) gives a Batch or a UserError built from
a SpecError whose every line names the file; printing that error never raises and
prints user text as itself, never as rich markup.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.cli.batches import load
from producer.cli.common import UserError, err
from producer.spec import Batch, SpecError, load_batch
from workers.settings import Settings

_counter = itertools.count()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "d.csv").write_text("a,s,y\n1,x,2\n2,[/red],3\n3," + "z" * 90 + ",4\n4,x,5\n")
    # Small limits, so that hypothesis' small inputs reach them.
    return Settings(data_root=root, max_models_per_batch=20, max_spec_bytes=50_000, max_string_chars=60)


def _write(root: Path, data: bytes) -> Path:
    path = root / f"spec-{next(_counter)}.yaml"
    path.write_bytes(data)
    return path


def check(path: Path, s: Settings) -> None:
    """Either a valid batch, or a UserError from a SpecError that prints cleanly."""
    try:
        batch = load(path, s)
    except UserError as exc:
        assert isinstance(exc.__cause__, SpecError)
        problems = exc.__cause__.problems
        assert problems and all(isinstance(p, str) and p.startswith(str(path)) for p in problems)
        with err.capture() as captured:
            exc.show()
        out = captured.get()
        assert out.startswith("error: invalid batch spec") and str(path) in out
    else:
        assert isinstance(batch, Batch) and 0 < len(batch.models) <= s.max_models_per_batch


@FAST
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes, fuzz_settings: Settings) -> None:
    check(_write(fuzz_settings.data_root, data), fuzz_settings)


TOKENS = ["name: b\n", "models:\n", "defaults:\n", "matrix:\n", "  ", "- ", "name: m1\n", "&a ", "*a ",
          "&b ", "*b ", "<<: ", "[", "]", "{", "}", ", ", ": ", "!!str ", "!!python/object:os.system ",
          "'", '"', "\n", ".nan", ".inf", "-.inf", "[/red]", "[bold]", "x" * 70, "\ufeff", "\x00", "\x1b[31m",
          "---\n", "...\n", "? ", "|\n", "#c", "%YAML 1.1\n", "1e999", "a..b", "A\n",
          "task: classification\n", "dataset: {kind: sklearn, name: iris}\n",
          "dataset: {kind: csv, path: d.csv, target: y, segment_by: s}",
          "estimator: {class_path: sklearn.linear_model.LogisticRegression}\n", "threshold: ",
          "name: \"m1\\n\"\n", "{x}", "{x:>99999}", "é", "\u202e", "~", "0x10", "2024-01-01"]


@FAST
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=40))
def test_yaml_ish_token_soup(parts: list[str], fuzz_settings: Settings) -> None:
    check(_write(fuzz_settings.data_root, "".join(parts).encode("utf-8", "surrogatepass")), fuzz_settings)


hostile_text = st.sampled_from([
    "[/red]", "[bold]x[/]", "m1\n", "a" * 79 + ".b" * 30, "x" * 61, "M1", "a..b", "\x1b]0;t\x07", ":smile:",
    "{x}", "{x:>999999}", "{0}", "\u202e", "", "ok", "m1", "m2", "y", "s", "d.csv", "x-{x}",
]) | st.text(max_size=20)
hostile_leaf = (st.none() | st.booleans() | st.integers() | st.floats() | hostile_text)
hostile_value = st.recursive(hostile_leaf, lambda inner: st.lists(inner, max_size=3)
                             | st.dictionaries(hostile_text, inner, max_size=3), max_leaves=10)


def _model(name: Any, extra: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
            "estimator": {"class_path": "sklearn.linear_model.LogisticRegression"}, **extra}


fields = st.dictionaries(st.sampled_from(["tags", "deploy", "preprocess", "evaluation", "dataset", "x"]),
                         hostile_value, max_size=2)
gates = st.fixed_dictionaries({}, optional={"threshold": st.floats() | hostile_text,
                                             "min_improvement": st.floats() | hostile_text})
models = st.builds(_model, hostile_text, fields) | st.builds(
    lambda n, g: _model(n, {"deploy": {"gate": g}}), hostile_text, gates) | st.builds(
    lambda n: _model(n, {"task": "regression", "dataset": {"kind": "csv", "path": "d.csv", "target": "y",
                                                           "features": ["a"], "segment_by": "s"},
                         "estimator": {"class_path": "sklearn.linear_model.Ridge"}}), hostile_text)
specs = st.fixed_dictionaries(
    {"name": hostile_text, "models": st.lists(models, max_size=4)},
    optional={"defaults": st.dictionaries(st.sampled_from(["tags", "deploy"]), hostile_value, max_size=2),
              "matrix": st.fixed_dictionaries(
                  {"name": hostile_text, "axes": st.dictionaries(
                      st.sampled_from(["x", "preprocess"]),
                      st.dictionaries(hostile_text, hostile_value, min_size=1, max_size=30),
                      min_size=1, max_size=2)},
                  optional={"base": st.just(_model("base", {}))})})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs, aliased=st.booleans())
def test_plausible_specs_with_hostile_values(spec: dict[str, Any], aliased: bool,
                                              fuzz_settings: Settings) -> None:
    # yaml.dump writes shared objects as anchors and aliases: the loader's other path.
    if aliased and spec["models"]:
        spec["models"] = spec["models"] * 3
    text = yaml.dump(spec, Dumper=yaml.SafeDumper, allow_unicode=True)
    check(_write(fuzz_settings.data_root, text.encode("utf-8", "surrogatepass")), fuzz_settings)


@settings(max_examples=50, deadline=None)
@given(spec=specs)
def test_load_batch_itself_raises_only_spec_errors(spec: dict[str, Any], fuzz_settings: Settings) -> None:
    path = _write(fuzz_settings.data_root, yaml.safe_dump(spec).encode("utf-8", "surrogatepass"))
    with contextlib.suppress(SpecError):
        load_batch(path, fuzz_settings)


csv_cells = st.sampled_from(["1", "2.5", "", "nan", "x", "[/red]", "z" * 90, "a,b", '"q"', "\x00", "é", "\r",
                             "s", "y", "a"]) | st.text(max_size=6)
csv_texts = st.lists(st.lists(csv_cells, min_size=1, max_size=4), max_size=8).map(
    lambda rows: "\n".join(",".join(r) for r in [["a", "s", "y"], *rows]).encode("utf-8", "surrogatepass"))


@FAST
@given(data=csv_texts | st.binary(max_size=200), features=st.sampled_from([None, ["a"]]))
def test_arbitrary_csv_contents(data: bytes, features: list[str] | None, fuzz_settings: Settings) -> None:
    name = f"c{next(_counter)}.csv"
    (fuzz_settings.data_root / name).write_bytes(data)
    spec = {"name": "b", "models": [{
        "name": "m", "task": "regression", "estimator": {"class_path": "sklearn.linear_model.Ridge"},
        "dataset": {"kind": "csv", "path": name, "target": "y", "segment_by": "s",
                    **({"features": features} if features else {})}}]}
    check(_write(fuzz_settings.data_root, yaml.safe_dump(spec).encode()), fuzz_settings)


@FAST
@given(text=st.text(max_size=60) | st.sampled_from(["[/red]", "[bold]x", "[link=file:///etc]x[/link]",
                                                    ":smile:", "\\[x]", "[/]"]))
def test_any_error_text_prints_as_itself(text: str) -> None:
    """CLI arguments (batch ids, aliases, tags) and spec text reach UserError messages."""
    with err.capture() as captured:
        UserError(text).show()
    out = captured.get()
    assert out.startswith("error: ")
    if text.isprintable():
        assert out == f"error: {text}\n"
