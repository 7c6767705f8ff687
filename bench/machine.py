"""Describe the machine a benchmark ran on: cores, memory, CPU, versions, load."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any


def _first(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def redis_server_version(binary: str) -> str:
    import subprocess

    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    # "Redis server v=6.2.x sha=..." -> "6.2.x"
    return next((part[2:] for part in out.split() if part.startswith("v=")), out.strip())


def describe(redis_binary: str | None = None) -> dict[str, Any]:
    mem_kb = _first("/proc/meminfo", "MemTotal")
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "cpu": _first("/proc/cpuinfo", "model name") or platform.processor(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for dist in ("celery", "kombu", "redis", "scikit-learn", "numpy"):
        info[dist] = version(dist)
    if redis_binary:
        info["redis-server"] = redis_server_version(redis_binary)
    return info


def as_markdown(info: dict[str, Any]) -> str:
    return (f"{info['cores']} cores ({info['cpu']}), {info['memory_gb']} GB memory, {info['os']}; "
            f"Python {info['python']}, celery {info['celery']}, kombu {info['kombu']}, "
            f"redis-py {info['redis']}, redis-server {info.get('redis-server', '?')}, "
            f"scikit-learn {info['scikit-learn']}, numpy {info['numpy']}")
