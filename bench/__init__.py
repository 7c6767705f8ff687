"""The scaling benchmark (run by hand: `python bench/scaling.py`); not part of the test suite."""
