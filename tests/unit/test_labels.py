"""The labels Flower shows and searches: stage, model(s), batch; bounded for big packs."""

from __future__ import annotations

import re

from workers.labels import MODELS_LIMIT, chain_label, stage_label


def test_a_single_models_label_names_stage_model_and_batch() -> None:
    label = chain_label("quickstart-20261127-105500-abc123", ["iris-tree"])
    assert label == "model=iris-tree batch=quickstart-20261127-105500-abc123"
    assert stage_label("train", label) == "train model=iris-tree batch=quickstart-20261127-105500-abc123"


def test_the_quoted_model_search_matches_that_model_only_also_in_a_pack() -> None:
    # Flower's search is a case-insensitive substring match; "model=NAME " is whole-name.
    labels = [chain_label("b1", ["store-1"]), chain_label("b1", ["store-10", "store-11"]),
              chain_label("b1", ["store-12", "store-1", "store-13"])]
    assert [("model=store-1 " in label) for label in labels] == [True, False, True]
    assert [("model=store-11 " in label) for label in labels] == [False, True, False]


def test_a_long_packs_label_is_bounded_and_counts_what_it_leaves_out() -> None:
    names = [f"model-{i:04d}" for i in range(200)]
    label = chain_label("b1", names)
    shown = re.findall(r"model=(\S+) ", label)
    left_out = int(re.search(r" \+(\d+) more batch=b1$", label).group(1))  # type: ignore[union-attr]
    assert shown == names[:len(shown)] and len(shown) + left_out == 200
    assert len(label) <= MODELS_LIMIT + len(" +200 more batch=b1")
    # a single name longer than the limit is still shown (names are at most 80 characters anyway)
    assert chain_label("b1", ["x" * 80], limit=10) == f"model={'x' * 80} batch=b1"
