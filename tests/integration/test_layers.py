"""The layers hold at run time: reading commands do not load scikit-learn (nor pandas).

import-linter (in .ci/run) checks the static import graph; this checks what a real
`modelfleet` process imports while it reads a real index, lazy imports included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from producer.local import RedisServer
from tests.conftest import REPO

pytestmark = pytest.mark.integration

READ_COMMANDS = [["runs", "--json"], ["batches", "--json"], ["models", "--json"],
                 ["cache", "stats", "--json"], ["show", "nobody"], ["lineage", "nobody@production"],
                 ["status", "no-such-batch"], ["leaderboard", "no-such-batch"], ["compare", "a", "b"],
                 ["report", "nobody/1"]]

PROBE = """
import json, sys
from producer.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
except Exception as exc:  # a clean user error still counts: what matters is what got imported
    print(type(exc).__name__, exc, file=sys.stderr)
HEAVY = ("sklearn", "scipy", "skops", "pandas", "pyarrow", "matplotlib", "mlflow")
print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))
"""


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: " ".join(a))
def test_reading_commands_do_not_import_scikit_learn(args: list[str], redis_server: RedisServer,
                                                      tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFLEET_")}
    env.update(MODELFLEET_BROKER_URL=redis_server.url, MODELFLEET_ARTIFACT_ROOT=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`modelfleet {' '.join(args)}` imported {loaded}; stderr:\n{done.stderr}"
