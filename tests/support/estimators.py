"""Test-only estimators that misbehave on purpose, driven through their params.

Workers import them only when a test widens the allow-list to `tests.support.`;
every handshake goes through files, so tests wait on conditions, not on sleeps.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
from celery.signals import before_task_publish
from sklearn.base import BaseEstimator, ClassifierMixin


class FaultyClassifier(ClassifierMixin, BaseEstimator):
    """Predicts the majority class; its fit can announce itself, block, die or raise.

    - started: append "pid ppid time" to this file when fit begins;
    - wait_for: block until this file exists (at most 300 s), then go on below;
    - die: "never", "once" (SIGKILL its own process the first time, marked by
      die_flag), "always", "once_on_retry" (as "once", on the first fit that gets past
      the transient failures below) or "before_retry_send" (once: the process is killed
      as it publishes the task's second retry, after the platform has marked the model
      retrying and before the message is sent; see the hook below);
    - fail: "none", "connection" (raise ConnectionError on the first fail_times
      fits, counted in counter) or "value" (raise ValueError(message) every time).
    """

    _parameter_constraints: dict[str, list[Any]] = {}

    def __init__(self, started: str = "", wait_for: str = "", die: str = "never",
                 die_flag: str = "", fail: str = "none", fail_times: int = 0,
                 counter: str = "",
                 message: str = "deterministic failure: bad data for FaultyClassifier") -> None:
        self.started = started
        self.wait_for = wait_for
        self.die = die
        self.die_flag = die_flag
        self.fail = fail
        self.fail_times = fail_times
        self.counter = counter
        self.message = message

    def fit(self, X: np.ndarray, y: np.ndarray) -> FaultyClassifier:
        if self.started:
            with open(self.started, "a") as fh:
                fh.write(f"{os.getpid()} {os.getppid()} {time.time()}\n")
        if self.die == "always" or (self.die == "once" and _first_time(self.die_flag)):
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does
        if self.wait_for:
            deadline = time.monotonic() + 300
            while not Path(self.wait_for).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.fail == "value":
            raise ValueError(self.message)
        if self.fail == "connection" and _count(self.counter) <= self.fail_times:
            raise ConnectionError("transient failure: connection reset (test)")
        if self.die == "once_on_retry" and _first_time(self.die_flag):
            os.kill(os.getpid(), signal.SIGKILL)
        values, counts = np.unique(y, return_counts=True)
        self.classes_ = values
        self.majority_ = values[np.argmax(counts)]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.majority_)


def _first_time(flag: str) -> bool:
    """True exactly once per flag file (O_EXCL makes it atomic across processes)."""
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _count(counter: str) -> int:
    """Append a line and return how many there are: a cross-process call counter."""
    with open(counter, "a+") as fh:
        fh.write("x\n")
        fh.seek(0)
        return len(fh.readlines())


@before_task_publish.connect
def _die_before_the_second_retry_is_sent(body: Any = None, headers: Any = None, **_: Any) -> None:
    # Connected in every process that imports this module (a worker child builds the estimator
    # before its first fit): only a model that asks for it, at its second retry, once.
    if (headers or {}).get("retries") != 2:
        return
    flag = _die_flag(body)
    if flag and _first_time(flag):
        os.kill(os.getpid(), signal.SIGKILL)


def _die_flag(node: Any) -> str:
    """The die_flag of an estimator in a message body whose die is "before_retry_send"."""
    if isinstance(node, dict):
        if node.get("die") == "before_retry_send":
            return str(node.get("die_flag") or "")
        return next((flag for value in node.values() if (flag := _die_flag(value))), "")
    if isinstance(node, list | tuple):
        return next((flag for value in node if (flag := _die_flag(value))), "")
    return ""
