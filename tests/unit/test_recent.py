"""The per-process memo of recent objects (workers/stages.py): bounded by count and by size."""

from __future__ import annotations

from workers.stages import _Recent


def test_a_bound_by_total_size_keeps_many_small_entries_and_drops_the_least_recently_used() -> None:
    recent = _Recent(entries=1000, max_size=100, total_size=250)
    for name in ("a", "b"):
        recent.put(name, name.upper(), 100)
    assert recent.get("a", keep=True) == "A"  # used again: "b" is now the oldest
    recent.put("c", "C", 100)  # 300 > 250: the least recently used goes
    assert [recent.get(n, keep=True) for n in ("a", "b", "c")] == ["A", None, "C"]


def test_taking_an_entry_frees_its_size_and_oversized_objects_are_not_kept() -> None:
    recent = _Recent(entries=10, max_size=100, total_size=200)
    recent.put("a", "A", 100)
    recent.put("huge", "H", 101)
    assert recent.get("huge") is None
    assert recent.get("a") == "A" and recent.get("a") is None  # taken, not kept
    recent.put("b", "B", 100)
    recent.put("c", "C", 100)  # fits: "a"'s 100 no longer counts
    assert [recent.get(n, keep=True) for n in ("b", "c")] == ["B", "C"]


def test_a_count_bound_still_applies() -> None:
    recent = _Recent(entries=2, max_size=10)
    for name in "abc":
        recent.put(name, name, 1)
    assert [recent.get(n, keep=True) for n in "abc"] == [None, "b", "c"]
