"""Importing this module leaves a mark, so a test can prove a worker never imported it."""

import os

from sklearn.base import BaseEstimator, ClassifierMixin

from tests.support.canary_path import MARKS

MARKS.mkdir(exist_ok=True)
(MARKS / str(os.getpid())).touch()


class Canary(ClassifierMixin, BaseEstimator):
    """An estimator class that must never be reached through a worker's allow-list."""
