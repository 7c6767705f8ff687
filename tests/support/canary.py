"""Importing this module leaves a mark, so a test can prove a worker never imported it."""

import os
import tempfile
from pathlib import Path

from sklearn.base import BaseEstimator, ClassifierMixin

MARKS = Path(tempfile.gettempdir()) / "modelfleet-canary"
MARKS.mkdir(exist_ok=True)
(MARKS / str(os.getpid())).touch()


class Canary(ClassifierMixin, BaseEstimator):
    """An estimator class that must never be reached through a worker's allow-list."""
