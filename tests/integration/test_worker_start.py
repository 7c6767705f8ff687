"""A real worker warms up in its main process before it forks its pool (workers/warm.py)."""

from __future__ import annotations

import pytest

from producer.local import LocalWorkers

pytestmark = pytest.mark.integration


def test_every_worker_rehearses_the_steps_before_it_forks(workers: LocalWorkers) -> None:
    # Given workers that answer a ping (the fixture waits for it), when their logs are read
    logs = {name: (workers.log_dir / f"{name.split('@')[0]}.log").read_text() for name in workers.names}
    # Then each one ran the rehearsal, without an error, before its pool started
    for name, text in logs.items():
        assert "warmed up in" in text, f"{name} did not warm up:\n{text[-2000:]}"
        assert "rehearsal failed" not in text, text[-3000:]
        assert text.index("warmed up in") < text.index("ready."), text[-3000:]
