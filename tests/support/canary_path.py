"""Where tests.support.canary leaves its mark (importable without importing the canary)."""

import tempfile
from pathlib import Path

MARKS = Path(tempfile.gettempdir()) / "modelfleet-canary"
