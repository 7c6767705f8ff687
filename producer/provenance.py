"""Who submitted a batch, from which spec file and which code: recorded with the batch, so a
shared workspace can say who ran what, from which commit, and whether that checkout was clean."""

from __future__ import annotations

import getpass
import hashlib
import socket
import subprocess
from pathlib import Path
from typing import Any

# The batch record's fields this module fills (status, batches, lineage and the page show them).
ORIGIN_FIELDS = ("submitted_by", "host", "spec_path", "spec_digest", "git_commit", "git_dirty")


def origin(spec_path: str, source: str, user: str | None) -> dict[str, Any]:
    """The batch's origin: `user` (MODELFLEET_USER) or the OS user, the host, the spec file's
    absolute path and the sha256 of its text, and the commit and dirty flag of the git
    checkout the spec lives in (None where it lives in none)."""
    path = Path(spec_path).resolve() if spec_path else None
    commit, dirty = _git_state(path.parent) if path is not None else (None, None)
    return {"submitted_by": user or _os_user(), "host": socket.gethostname(),
            "spec_path": str(path) if path is not None else spec_path,
            "spec_digest": "sha256:" + hashlib.sha256(source.encode()).hexdigest(),
            "git_commit": commit, "git_dirty": dirty}


def describe(record: dict[str, Any]) -> str:
    """One line for `status` and the page: `by ann on host1 from /x/spec.yaml (sha256:ab12..)
    at commit 1a2b3c4d5e6f (dirty)`; whatever an older record lacks is left out."""
    parts = [f"by {record.get('submitted_by') or '?'}"]
    if record.get("host"):
        parts.append(f"on {record['host']}")
    if record.get("spec_path"):
        digest = str(record.get("spec_digest") or "")
        parts.append(f"from {record['spec_path']}" + (f" ({digest[:19]})" if digest else ""))
    if record.get("git_commit"):
        dirty = " (dirty)" if record.get("git_dirty") else ""
        parts.append(f"at commit {str(record['git_commit'])[:12]}{dirty}")
    return " ".join(parts)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _git_state(directory: Path) -> tuple[str | None, bool | None]:
    """(HEAD's commit, whether tracked files differ from it) of the checkout holding `directory`."""
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    # Untracked files do not count: a results folder beside the spec does not make the code dirty.
    changed = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return commit, None if changed is None else bool(changed)


def _git(directory: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
