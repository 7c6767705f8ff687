"""Hostile specs (issue 10, point 7): each is a clean SpecError naming the file, the model
and the field, refused before anything is built, written or sent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from producer.cli import main
from producer.cli.common import UserError, err
from producer.spec import Batch, SpecError, load_batch
from producer.submit import submit
from tests.conftest import EXAMPLE_DATA, write_spec
from workers.contracts import ModelSpec
from workers.settings import Settings

SETTINGS = Settings(data_root=EXAMPLE_DATA)


def model(name: str = "m1", **over: Any) -> dict[str, Any]:
    base = {"name": name, "task": "classification", "dataset": {"kind": "sklearn", "name": "iris"},
            "estimator": {"class_path": "sklearn.linear_model.LogisticRegression"}}
    return {**base, **over}


def refused(path: Path, settings: Settings = SETTINGS) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_batch(path, settings)
    problems = info.value.problems
    assert problems and all(p.startswith(str(path)) for p in problems), problems
    return info.value


def refused_spec(tmp_path: Path, spec: dict[str, Any], settings: Settings = SETTINGS) -> str:
    return str(refused(write_spec(tmp_path, spec), settings))


def write_text(tmp_path: Path, text: str, name: str = "batch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- encoding -------------------------------------------------------------------------------

def test_a_non_utf8_spec_is_a_spec_error_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: b\nmodels:\n  - name: caf\u00e9\n".encode("latin-1"))
    msg = str(refused(path))
    assert "not UTF-8" in msg and "0xe9" in msg and "line 3" in msg


def test_crlf_specs_still_load_with_unix_newlines_in_the_source(tmp_path: Path) -> None:
    path = tmp_path / "crlf.yaml"
    path.write_bytes(yaml.safe_dump({"name": "b", "models": [model()]}).replace("\n", "\r\n").encode())
    batch = load_batch(path, SETTINGS)
    assert "\r" not in batch.source and [m.name for m in batch.models] == ["m1"]


# --- rich markup in user text ----------------------------------------------------------------

def test_error_messages_print_user_text_as_itself_not_as_markup() -> None:
    with err.capture() as captured:
        UserError("model '[/red]' and [bold]x[/bold] :smile:").show()
    assert captured.get() == "error: model '[/red]' and [bold]x[/bold] :smile:\n"


def test_markup_in_a_model_name_is_a_clean_cli_error(tmp_path: Path) -> None:
    path = write_spec(tmp_path, {"name": "b", "models": [model("[/red]x")]})
    result = CliRunner().invoke(main, ["submit", str(path)])
    assert result.exit_code == 2, result.output
    assert "'[/red]x'" in result.output and str(path) in result.output and "'name'" in result.output


def test_the_real_command_exits_2_with_escaped_user_text(tmp_path: Path) -> None:
    """The one subprocess test: `modelfleet submit` on a spec with markup in several fields."""
    path = write_spec(tmp_path, {"name": "b", "models": [
        model("[/red]", deploy={"gate": {"threshold": float("nan")}}),
        model("ok", tags={"[bold]": "x" * 20_000})]})
    env = {**os.environ, "MODELFLEET_BROKER_URL": "redis://127.0.0.1:1/0",
           "MODELFLEET_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
           "MODELFLEET_LOCAL_REDIS_DIR": str(tmp_path / "redis")}
    command = [str(Path(sys.executable).with_name("modelfleet"))]
    if not Path(command[0]).exists():
        command = [sys.executable, "-m", "producer"]
    out = subprocess.run([*command, "submit", str(path)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "invalid batch spec" in out.stderr and "nothing was submitted" in out.stderr
    assert str(path) in out.stderr and "'[/red]'" in out.stderr and "'tags.[bold]'" in out.stderr
    assert "deploy.gate.threshold" in out.stderr and "not a finite number" in out.stderr
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "redis").exists()


# --- names that pass a loose slug check but break the store ----------------------------------

LONG_DOTTED = "a" * 79 + ".b" * 110  # 299 characters, every dot segment short
BAD_NAMES = [LONG_DOTTED, "m1\n", "a" * 81, "a.b\n", "a." + "b" * 79]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_model_names_are_slugs_of_at_most_80_characters_in_all(tmp_path: Path, name: str) -> None:
    msg = refused_spec(tmp_path, {"name": "b", "models": [model(name)]})
    assert "field 'name'" in msg and "at most 80 characters" in msg and "(models[0])" in msg


@pytest.mark.parametrize("name", BAD_NAMES)
def test_batch_names_are_slugs_of_at_most_80_characters_in_all(tmp_path: Path, name: str) -> None:
    msg = refused_spec(tmp_path, {"name": name, "models": [model()]})
    assert "field 'name'" in msg and "at most 80 characters" in msg


@pytest.mark.parametrize("name", ["a" * 80, "a" * 40 + "." + "b" * 39, "a.b-c_d"])
def test_names_up_to_80_characters_still_pass(name: str) -> None:
    assert ModelSpec.model_validate(model(name)).name == name


def test_submit_refuses_a_long_batch_name_before_touching_the_broker() -> None:
    """A Batch built by hand (not through load_batch) is checked before anything is written."""
    batch = Batch(LONG_DOTTED, [ModelSpec.model_validate(model())], "", "x.yaml")
    with pytest.raises(ValueError, match="at most 80 characters"):
        submit(batch, app=None, runtime=None)  # type: ignore[arg-type]


def test_matrix_names_are_validated_like_given_names(tmp_path: Path) -> None:
    dotted = "a" + ".b" * 50  # each label a valid slug, the name 101+ characters
    spec = {"name": "b", "defaults": model(), "matrix": {"name": "{preprocess}-x", "axes": {
        "preprocess": {dotted: {"seed": 1}, "ok": {"seed": 2}}}}}
    msg = refused_spec(tmp_path, spec)
    assert "field 'name'" in msg and "103 characters" in msg and "matrix" in msg


@pytest.mark.parametrize("template", ["{seed:>1000000}", "{seed!r}", "{seed.real}", "{seed[0]}", "{0}", "{}"])
def test_matrix_name_templates_take_plain_fields_only(tmp_path: Path, template: str) -> None:
    spec = {"name": "b", "defaults": model(), "matrix": {"name": template, "axes": {
        "seed": {"s1": {"preprocess": {"seed": 1}}}}}}
    start = time.perf_counter()
    msg = refused_spec(tmp_path, spec)
    assert "matrix.name" in msg and "not a plain field" in msg
    assert time.perf_counter() - start < 2


def csv_data(tmp_path: Path, values: list[str]) -> Path:
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    rows = "".join(f"{i},{v},{i * 2}\n" for i, v in enumerate(values * 2))
    (root / "d.csv").write_text("a,s,y\n" + rows)
    return root


def csv_model(name: str = "m") -> dict[str, Any]:
    return model(name, task="regression", dataset={"kind": "csv", "path": "d.csv", "target": "y",
                                                   "features": ["a"], "segment_by": "s"},
                 estimator={"class_path": "sklearn.linear_model.Ridge"})


def test_names_built_from_csv_segment_values_are_validated(tmp_path: Path) -> None:
    root = csv_data(tmp_path, ["short", "v" * 100])
    msg = refused_spec(tmp_path, {"name": "b", "models": [csv_model()]}, Settings(data_root=root))
    assert "model 'm' (models[0])" in msg and "field 'name'" in msg and "at most 80 characters" in msg


def test_csv_segment_values_longer_than_the_string_limit_are_refused(tmp_path: Path) -> None:
    root = csv_data(tmp_path, ["a", "b" * 200])
    settings = Settings(data_root=root, max_string_chars=100)
    msg = refused_spec(tmp_path, {"name": "b", "models": [csv_model()]}, settings)
    assert "dataset.segment_by" in msg and "200 characters" in msg and "MODELFLEET_MAX_STRING_CHARS" in msg


def test_csv_segments_past_the_model_limit_are_refused_before_expanding(tmp_path: Path) -> None:
    root = csv_data(tmp_path, [f"s{i}" for i in range(30)])
    settings = Settings(data_root=root, max_models_per_batch=25)
    msg = refused_spec(tmp_path, {"name": "b", "models": [csv_model()]}, settings)
    assert "model 'm' (models[0]): field 'dataset.segment_by'" in msg and "30 distinct values" in msg


# --- non-finite numbers -------------------------------------------------------------------

@pytest.mark.parametrize("gate", [{"threshold": float("nan")}, {"threshold": float("inf")},
                                  {"threshold": float("-inf")}, {"min_improvement": float("inf")},
                                  {"threshold": "nan"}, {"min_improvement": "Infinity"}])
def test_non_finite_gate_numbers_are_refused(tmp_path: Path, gate: dict[str, Any]) -> None:
    msg = refused_spec(tmp_path, {"name": "b", "models": [model(deploy={"gate": gate})]})
    assert "model 'm1' (models[0])" in msg and f"deploy.gate.{next(iter(gate))}" in msg
    assert "finite number" in msg


@pytest.mark.parametrize("where", [
    {"estimator": {"class_path": "sklearn.svm.SVC", "params": {"C": float("nan")}}},
    {"dataset": {"kind": "synthetic", "noise": float("inf")}}])
def test_non_finite_numbers_are_refused_anywhere(tmp_path: Path, where: dict[str, Any]) -> None:
    assert "finite number" in refused_spec(tmp_path, {"name": "b", "models": [model(**where)]})


# --- YAML bombs -----------------------------------------------------------------------------

def billion_laughs(levels: int, merge: bool) -> str:
    lines = ["name: b", "defaults:", "  tags:", "    l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        if merge:
            lines[3] = "    l0: &l0 {x: 1}"
            lines.append(f"    l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * 10)}]}}")
        else:
            lines.append(f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    lines += ["models:", "  - {name: m1, task: classification, dataset: {kind: sklearn, name: iris},",
              "     estimator: {class_path: sklearn.linear_model.LogisticRegression}}", ""]
    return "\n".join(lines)


@pytest.mark.parametrize("merge", [False, True], ids=["aliases", "merge-keys"])
def test_an_alias_bomb_in_defaults_is_refused_at_once(tmp_path: Path, merge: bool) -> None:
    path = write_text(tmp_path, billion_laughs(12, merge))
    start = time.perf_counter()
    msg = str(refused(path))
    assert "aliases written out" in msg and "MODELFLEET_MAX_SPEC_BYTES" in msg
    assert time.perf_counter() - start < 2


def test_aliases_that_stay_small_still_work(tmp_path: Path) -> None:
    text = ("name: b\ndefaults: &d\n  task: classification\n  dataset: {kind: sklearn, name: iris}\n"
            "  estimator: &e {class_path: sklearn.linear_model.LogisticRegression}\n"
            "models:\n  - {<<: *d, name: m1}\n  - {name: m2, estimator: *e}\n")
    batch = load_batch(write_text(tmp_path, text), SETTINGS)
    assert [m.name for m in batch.models] == ["m1", "m2"]


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write_text(tmp_path, "name: b\ndefaults:\n  tags: &t {a: *t}\nmodels: [{name: m1}]\n")
    assert "contains it" in str(refused(path))


@pytest.mark.parametrize("anchor", ["", "x: &x 1\n"], ids=["plain", "with-anchor"])
def test_deep_nesting_is_refused(tmp_path: Path, anchor: str) -> None:
    depth = 500  # libyaml itself refuses 1000 levels
    path = write_text(tmp_path, f"{anchor}name: b\ndefaults: {{tags: {'[' * depth}{']' * depth}}}\n")
    assert "nested more than 64 levels" in str(refused(path))


# --- size limits ----------------------------------------------------------------------------

def test_a_spec_file_past_the_size_limit_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    path = write_spec(tmp_path, {"name": "b", "models": [model(f"m{i}") for i in range(40)]})
    monkeypatch.setenv("MODELFLEET_MAX_SPEC_BYTES", "2000")
    settings = Settings(data_root=EXAMPLE_DATA)
    assert settings.max_spec_bytes == 2000
    msg = str(refused(path, settings))
    assert "larger than the maximum 2000 bytes" in msg and "MODELFLEET_MAX_SPEC_BYTES" in msg
    assert Settings().max_spec_bytes == 2000 and Settings(max_spec_bytes=10**6).max_spec_bytes == 10**6


def test_the_default_limits() -> None:
    settings = Settings()
    assert settings.max_spec_bytes == 20_000_000 and settings.max_string_chars == 10_000


@pytest.mark.parametrize("where,field", [
    ({"tags": {"team": "x" * 10_001}}, "tags.team"),
    ({"tags": {"k" * 10_001: "x"}}, "tags.'kkkkk"),
    ({"estimator": {"class_path": "sklearn.svm.SVC", "params": {"kernel": "r" * 10_001}}},
     "estimator.params.kernel"),
])
def test_strings_past_the_limit_are_refused_with_model_and_field(tmp_path: Path, where: dict[str, Any],
                                                                 field: str) -> None:
    msg = refused_spec(tmp_path, {"name": "b", "models": [model(**where)]})
    assert "model 'm1' (models[0])" in msg and field in msg and "10001 characters" in msg


def test_a_long_string_outside_the_models_names_its_field(tmp_path: Path) -> None:
    msg = refused_spec(tmp_path, {"name": "b", "defaults": {"tags": {"t": "y" * 10_001}},
                                  "models": [model()]})
    assert "field 'defaults.tags.t'" in msg


def test_a_long_model_name_is_shown_shortened(tmp_path: Path) -> None:
    msg = refused_spec(tmp_path, {"name": "b", "models": [model("n" * 10_001)]})
    assert len(msg) < 400 and "field 'name'" in msg


def test_listed_models_past_the_limit_are_refused_before_any_is_validated(tmp_path: Path) -> None:
    error = refused(write_spec(tmp_path, {"name": "b", "models": [{"x": i} for i in range(60)]}),
                    Settings(max_models_per_batch=50))
    assert len(error.problems) == 1 and "field 'models': 60 models" in error.problems[0]


def test_models_and_matrix_together_past_the_limit_are_refused_before_expanding(tmp_path: Path) -> None:
    spec = {"name": "b", "defaults": model(), "models": [model(f"m{i}") for i in range(30)],
            "matrix": {"name": "x-{preprocess}", "axes": {"preprocess": {
                f"p{i}": {"seed": i} for i in range(30)}}}}
    msg = refused_spec(tmp_path, spec, Settings(max_models_per_batch=50))
    assert "60 models ('models' and 'matrix')" in msg


def test_defaults_repeated_into_many_models_count_as_written_out(tmp_path: Path) -> None:
    spec = {"name": "b", "defaults": {**model(), "tags": {f"t{i}": "v" * 50 for i in range(100)}},
            "models": [{"name": f"m{i}"} for i in range(40)]}
    path = write_spec(tmp_path, spec)
    assert path.stat().st_size < 20_000
    msg = str(refused(path, Settings(max_spec_bytes=100_000)))
    assert "merged into each model" in msg and "MODELFLEET_MAX_SPEC_BYTES" in msg
    assert len(load_batch(path, Settings()).models) == 40


def test_many_problems_are_summed_up(tmp_path: Path) -> None:
    error = refused(write_spec(tmp_path, {"name": "b", "models": [model(f"M{i}") for i in range(50)]}))
    assert len(error.problems) == 21 and "and 30 more" in error.problems[-1] and error.total == 50
