"""A real MLflow tracking server on a loopback port: sqlite store, proxied artifacts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import TracebackType

from producer.local import free_port, stop_process, wait_for


def mlflow_command() -> str | None:
    """The `mlflow` command of this environment (the full package ships the server), if any."""
    here = Path(sys.executable).parent / "mlflow"
    return str(here) if here.exists() else shutil.which("mlflow")


class MlflowServer:
    """`mlflow server` started here and stopped on exit, with its log for failures."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MlflowServer:
        command = mlflow_command()
        assert command is not None, "no mlflow command: pip install mlflow"
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [command, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._healthy, 120, f"mlflow server on {self.url} (log: {self.root / 'server.log'})",
                     interval=0.2)
        except BaseException:
            stop_process(self.proc)
            raise
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: "
                               f"{(self.root / 'server.log').read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            stop_process(self.proc)
