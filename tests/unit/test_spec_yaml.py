"""The spec's event-built YAML loading gives yaml.safe_load's result and errors, always."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from producer import spec as spec_module
from producer.spec import SpecError, _load_plain_yaml, _load_yaml, _NotPlain, load_batch
from tests.conftest import REPO
from workers.settings import Settings

PLAIN = [
    "---\n", "~\n", "a: 1\n", "- 1\n- two\n- 3.5\n",
    "a: {b: [1, 2, {c: d}], e: []}\nf: {}\n",
    "yes: no\non: off\nnull: ~\n'quoted': \"also\"\n",
    "n: 0o17\nh: 0x1F\nf: 1e3\ninf: .inf\nnan_is_str: nanx\nd: 2024-01-02\nt: 2024-01-02T03:04:05Z\n",
    "lit: |\n  two\n  lines\nfold: >\n  one\n  line\n",
    "a: 1\na: 2\n",  # duplicate keys: the last wins, as in PyYAML
    "1: int key\n1.5: float key\ntrue: bool key\n",
    "? simple\n: explicit key\n",
    "name: x\nmodels:\n  - name: m1\n    dataset: {kind: sklearn, name: iris}\n  - name: m2\n",
    "'<<': quoted merge is a string\n",
]
NOT_PLAIN = [
    "",  # no document at all
    "base: &b {x: 1}\nuse: *b\n",  # anchor and alias
    "base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n",  # merge key
    "a: !!str 1\n",  # explicit tag
    "a: ! 1\n",  # non-specific tag
    "? [1, 2]\n: complex key\n",  # unhashable key: PyYAML's error
    "--- 1\n--- 2\n",  # two documents: PyYAML's error
    "= : value key\n",
    "a: !!binary aGVsbG8=\n",
    "!!set {a, b}\n",
]
MALFORMED = ["a: [1, 2\n", "a: b: c\n", "- a\nb: c\n", "a: *undefined\n", "\t- tab\n", "a: 'open\n"]


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=spec_module._YAML_LOADER)


@pytest.mark.parametrize("text", PLAIN)
def test_plain_documents_are_built_from_events_as_safe_load_builds_them(text: str) -> None:
    assert _load_plain_yaml(text) == _safe_load(text)
    assert _load_yaml(text) == _safe_load(text)


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_anything_else_goes_through_pyyaml(text: str) -> None:
    with pytest.raises((_NotPlain, yaml.YAMLError)):
        _load_plain_yaml(text)
    try:
        expected = _safe_load(text)
    except yaml.YAMLError as exc:
        with pytest.raises(type(exc)) as got:
            _load_yaml(text)
        assert str(got.value) == str(exc)
    else:
        assert _load_yaml(text) == expected


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_yaml_gives_pyyamls_error(text: str, tmp_path: Path) -> None:
    with pytest.raises(yaml.YAMLError) as expected:
        _safe_load(text)
    with pytest.raises(type(expected.value)) as got:
        _load_yaml(text)
    assert str(got.value) == str(expected.value)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_batch(path, Settings())
    assert err.value.problems[0].startswith(f"{path}: malformed YAML")


def test_types_and_timestamps_match() -> None:
    got = _load_yaml("d: 2024-01-02\ni: 7\nf: 0.5\nb: true\nn: null\ns: '7'\n")
    assert got == {"d": datetime.date(2024, 1, 2), "i": 7, "f": 0.5, "b": True, "n": None, "s": "7"}
    assert [type(v) for v in got.values()] == [datetime.date, int, float, bool, type(None), str]


def test_every_example_spec_loads_the_same() -> None:
    for path in sorted((REPO / "examples").glob("*.yaml")):
        text = path.read_text()
        assert _load_yaml(text) == _safe_load(text), path


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                     st.text(max_size=12), st.dates())
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner,
                                                 max_size=4)), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_values, st.booleans())
def test_any_dumped_document_loads_the_same(value: Any, flow: bool) -> None:
    text = yaml.safe_dump(value, default_flow_style=flow, allow_unicode=True)
    assert _load_yaml(text) == _safe_load(text)
