"""The outside of a running world model, for the demo, the benchmarks, the soak and the fuzzer:
one node that watches /hma/predicted_frames and /diagnostics and calls /hma/rollout.

Callbacks run on the caller's executor (``nodes/spin.py``); waiting happens in the caller's
threads on events set by those callbacks, never by polling a future.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from hma_ros.nodes.convert import stamp_to_sec
from hma_ros_interfaces.msg import PredictedFrames
from hma_ros_interfaces.srv import Rollout


class WorldModelClient:
    """Records predictions (arrival time, message) and the newest diagnostics of the world model.

    ``on_prediction(msg, arrival)`` is called for every prediction (executor thread).
    """

    def __init__(
        self,
        name: str = "hma_client",
        context: Any = None,
        on_prediction: Callable[[PredictedFrames, float], None] | None = None,
    ) -> None:
        self.node = rclpy.create_node(name, context=context)
        self.on_prediction = on_prediction
        self._lock = threading.Lock()
        self.predictions: list[tuple[float, float]] = []  # (arrival wall time, header stamp)
        self._diagnostics: dict[str, str] = {}
        self._diag_message = ""
        self._diag_level = -1
        self._diag_time = 0.0
        self._diag_event = threading.Event()
        self.node.create_subscription(PredictedFrames, "/hma/predicted_frames", self._on_prediction, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.rollout = self.node.create_client(Rollout, "/hma/rollout")

    def _on_prediction(self, msg: PredictedFrames) -> None:
        arrival = time.time()
        with self._lock:
            self.predictions.append((arrival, stamp_to_sec(msg.header.stamp)))
        if self.on_prediction is not None:
            self.on_prediction(msg, arrival)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "hma_ros: world_model":
                with self._lock:
                    self._diagnostics = {kv.key: kv.value for kv in status.values}
                    self._diag_message, self._diag_level = status.message, status.level
                    self._diag_time = time.monotonic()
                self._diag_event.set()

    # -- reading ---------------------------------------------------------------------------------
    def diagnostics(self) -> tuple[dict[str, str], str, float]:
        """(key/values, message, monotonic arrival time) of the newest world model status."""
        with self._lock:
            return dict(self._diagnostics), self._diag_message, self._diag_time

    def predictions_since(self, t: float) -> list[tuple[float, float]]:
        with self._lock:
            return [p for p in self.predictions if p[0] >= t]

    def wait_for_diagnostics(
        self,
        predicate: Callable[[dict[str, str]], bool],
        timeout: float,
        abort: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Wait until a diagnostics message satisfies ``predicate`` (False on timeout or ``abort()``)."""
        deadline = time.monotonic() + timeout
        while True:
            values, _, _ = self.diagnostics()
            if values and predicate(values):
                return True
            left = deadline - time.monotonic()
            if left <= 0 or abort():
                return False
            self._diag_event.clear()
            self._diag_event.wait(min(left, 0.5))

    def wait_until_active(
        self, alive: Callable[[], bool], timeout: float = 300.0, abort: Callable[[], bool] = lambda: False
    ) -> str:
        """Wait for the world model to configure and activate; "" once it has, else why not (its
        configure error, its exit, a timeout, or ``abort()``)."""
        done = self.wait_for_diagnostics(
            lambda d: d.get("state") == "active" or bool(d.get("config_error")),
            timeout,
            abort=lambda: abort() or not alive(),
        )
        values, _, _ = self.diagnostics()
        if done and values.get("state") == "active":
            return ""
        if values.get("config_error"):
            return f"configure failed: {values['config_error']}"
        if not alive():
            return "the world model process exited"
        return "stopped" if abort() else f"the world model did not come up within {timeout:g} s"

    def fresh_diagnostics(self, timeout: float = 5.0) -> dict[str, str]:
        """The first diagnostics message that arrives from now on (empty if none comes)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            values, _, arrived = self.diagnostics()
            if arrived > t0:
                return values
            self._diag_event.clear()
            self._diag_event.wait(0.2)
        return {}

    # -- calling -----------------------------------------------------------------------------------
    def call(self, request: Rollout.Request, timeout: float = 30.0) -> tuple[Rollout.Response | None, float]:
        """Call /hma/rollout; (response or None on timeout, round trip seconds). Thread-safe."""
        done = threading.Event()
        t0 = time.perf_counter()
        future = self.rollout.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            self.rollout.remove_pending_request(future)
            return None, time.perf_counter() - t0
        return future.result(), time.perf_counter() - t0

    def destroy(self) -> None:
        self.node.destroy_node()
