"""A team's own producer script: submit a batch from Python and wait for it.

Run with workers up, e.g. `modelfleet up --workers 2` in another shell (or a broker
in MODELFLEET_BROKER_URL and `modelfleet worker`s), then `python examples/producer_script.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import modelfleet
from producer.spec import SpecError


def main() -> int:
    spec = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("quickstart.yaml")
    try:
        batch = modelfleet.load_batch(spec)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    handle = modelfleet.submit(batch)
    print(f"submitted {handle.batch_id}")
    status = handle.wait(timeout=3600)
    for row in sorted(status.rows, key=lambda r: r.name):
        print(f"{row.name:30} {row.status:10} {row.metric}={row.value} v{row.version}")
    # promoted: the gate passed and the alias moved; registered: a new version, gate not passed
    registered = status.counts.get("promoted", 0) + status.counts.get("registered", 0)
    return 0 if registered == len(status.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
