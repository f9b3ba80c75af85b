"""Nodes as child processes, the way ``ros2 launch`` starts them: the demo, the benchmarks, the
soak and fuzz tests run ``world_model`` and ``bag_replay`` like this, and read their CPU time
and memory from /proc (Linux).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def node_command(executable: str, params: dict[str, Any] | None = None) -> list[str]:
    """``python -m hma_ros.nodes.<executable> --ros-args -p k:=v ...`` with this interpreter."""
    cmd = [sys.executable, "-m", f"hma_ros.nodes.{executable}"]
    if params:
        cmd += ["--ros-args"] + [x for k, v in params.items() for x in ("-p", f"{k}:={_ros_value(v)}")]
    return cmd


def _ros_value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


class NodeProcess:
    """A node in its own process group, its output in ``log`` (a path, or a writable file).

    A new session: SIGINT reaches it even from a non-interactive shell job (which ignores
    SIGINT for its children), and signals to this process do not reach it by accident.
    """

    def __init__(
        self,
        executable: str,
        params: dict[str, Any] | None = None,
        log: str | os.PathLike | IO[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = executable
        self.log_path = Path(log) if isinstance(log, (str, os.PathLike)) else None
        out: Any = subprocess.DEVNULL if log is None else log
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self._out = out
        # PYTHONSAFEPATH: a cwd holding the ament folder hma_ros/ must not shadow the Python package.
        full_env = {**os.environ, "PYTHONSAFEPATH": "1", **(env or {})}
        self.popen = subprocess.Popen(
            node_command(executable, params),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            text=True,
        )
        self.pid = self.popen.pid
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far (None once the process is gone)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_mb(self) -> float | None:
        """Resident memory in MB (None once the process is gone)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``sig`` and wait; kill after ``timeout``. Returns (exit code, seconds to exit);
        a killed process reports -9."""
        t0 = time.monotonic()
        if self.alive():
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        seconds = time.monotonic() - t0
        if self.log_path is not None and not self._out.closed:
            self._out.close()
        return self.popen.returncode, seconds

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]
