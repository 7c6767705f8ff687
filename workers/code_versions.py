"""Stage code versions kept on disk, so a worker's start does not compute them again.

The fingerprints (workers/fingerprint.py) parse ~20 modules and walk what each stage
reaches: 0.2-0.3 s of CPU at every worker start, before its first ping. They follow from
the source alone, so they are stored under `check_cache_dir` (beside the estimator
signature tables) in a file named by the digest of every source file of the `workers`
package, names and bytes, and of Python's version (`ast.unparse` differs between
versions). That is more than a fingerprint reads: an edit anywhere in the package
computes them again, once. A missing, damaged or unwritable file only costs the
computation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import workers
from workers.fingerprint import forget_parsed
from workers.settings import STAGES
from workers.store import atomic_write
from workers.task import KNOWN_CODE_VERSIONS, stage_code_versions

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(workers.__file__).resolve().parent


def sources_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 (first 16 hex) of Python's version and every `.py` file under `package_dir`."""
    digest = hashlib.sha256(sys.version.encode())
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(b"\0" + path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def versions_file(directory: Path) -> Path:
    """Where this source's versions are kept under `directory`."""
    return Path(directory) / f"code-versions-{sources_digest()}.json"


def _stored(path: Path) -> dict[str, str] | None:
    try:
        versions = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(versions, dict) or set(versions) != set(STAGES)
            or not all(isinstance(v, str) and v for v in versions.values())):
        return None
    return versions


def load_or_compute(directory: Path | None) -> dict[str, str]:
    """This process's stage code versions: read from `directory` if an earlier process of
    the same source stored them, else computed (and stored there)."""
    started = time.perf_counter()
    path = None if directory is None else versions_file(directory)
    versions = None if path is None else _stored(path)
    if versions is not None:
        KNOWN_CODE_VERSIONS.update(versions)
        log.info("stage code versions read from %s", path)
        return versions
    versions = stage_code_versions()
    forget_parsed()
    log.info("stage code versions computed in %.2f s", time.perf_counter() - started)
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only directory only costs the next start
            atomic_write(path, json.dumps(versions, sort_keys=True).encode())
    return versions
