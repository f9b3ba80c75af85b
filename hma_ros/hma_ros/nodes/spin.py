"""How every hma_ros process runs its nodes: one ``SingleThreadedExecutor`` in its own thread,
signals in the main thread, an orderly stop. docs/executors.md has the measurements behind it.

* **No busy loop.** rclpy 9.1.2's ``MultiThreadedExecutor`` spins holding the GIL while a ready
  entity waits for a busy callback group (it starved the world model to 0.3 Hz), and
  ``rclpy.experimental.EventsExecutor`` dispatched nothing for our node. A single-threaded
  executor only runs short callbacks here: model work is on the node's own worker thread, and
  a rollout service handler is a coroutine that awaits it, so the executor keeps serving topics
  while a rollout runs.
* **Signals.** rclpy's own SIGINT/SIGTERM handler shuts the context down under running threads
  (publishers fail, the lifecycle shutdown transition races ours, and the process sometimes
  aborted with ``terminate called without an active exception``). :func:`init` turns it off and
  :class:`StopSignals` only records the signal; the main thread then stops the nodes' own work,
  the executor thread and the context, in that order, and the process exits 0.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future


class StopSignals:
    """SIGINT and SIGTERM set :attr:`received` (the signal number) instead of raising; ``install``
    before anything else so a signal during start-up is not lost.

    ``watch_parent``: also stop when the parent process is gone (this process was reparented).
    ``ros2 launch`` 3.7 exits on SIGTERM without stopping its children: a node must not depend
    on its launcher to end it.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._parent: int | None = None

    def install(self, watch_parent: bool = False) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        self._parent = os.getppid() if watch_parent else None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    @property
    def orphaned(self) -> bool:
        return self._parent is not None and os.getppid() != self._parent

    def reason(self) -> str:
        if self.received is not None:
            return signal.Signals(self.received).name
        return f"the parent process {self._parent} exited" if self.orphaned else ""

    def __bool__(self) -> bool:
        return self.received is not None or self.orphaned


def init(args: Sequence[str] | None = None, context: Any = None) -> None:
    """``rclpy.init`` without rclpy's signal handlers (see the module docstring)."""
    rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)


#: The executors docs/executors.md compares; "single" is the one every process uses.
EXECUTORS = ("single", "multi", "events")


def make_executor(kind: str = "single", context: Any = None) -> Any:
    if kind == "single":
        return SingleThreadedExecutor(context=context)
    if kind == "multi":
        from rclpy.executors import MultiThreadedExecutor

        return MultiThreadedExecutor(num_threads=8, context=context)
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    raise ValueError(f"executor {kind!r} is not one of {EXECUTORS}")


class ExecutorThread:
    """An executor (``SingleThreadedExecutor`` unless ``kind`` says otherwise, for comparisons)
    spinning ``nodes`` in a thread until :meth:`stop`."""

    def __init__(self, *nodes: Any, context: Any = None, kind: str = "single") -> None:
        self.executor = make_executor(kind, context)
        for node in nodes:
            self.executor.add_node(node)
        self._stop: Future = Future()
        self._thread = threading.Thread(target=self._spin, name="ros_executor", daemon=True)
        self.error: BaseException | None = None

    def _spin(self) -> None:
        try:
            self.executor.spin_until_future_complete(self._stop)
        except BaseException as e:  # noqa: BLE001 - reported by the owner (alive() turns false)
            self.error = e

    def start(self) -> ExecutorThread:
        self._thread.start()
        return self

    def add_node(self, node: Any) -> None:
        self.executor.add_node(node)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> bool:
        """Wake the executor, let it return, then shut it down; True if the thread ended."""
        if not self._stop.done():
            self._stop.set_result(None)  # its done callback wakes the executor
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.executor.shutdown(timeout_sec=0)
        return not self._thread.is_alive()


def wait_until(done: Callable[[], bool], timeout: float | None = None, period: float = 0.05) -> bool:
    """Sleep in the main thread (where Python runs signal handlers) until ``done()`` or ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(period)
    return True


def shutdown(context: Any = None) -> None:
    """``rclpy.shutdown`` once (it raises if the context is already down)."""
    if rclpy.ok(context=context):
        rclpy.shutdown(context=context)
