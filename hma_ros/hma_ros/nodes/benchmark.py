"""Benchmark the world model node over real DDS: the node in its own process, this one drives it.

1. Streams the bundled recording's camera and command messages (restamped with the wall clock,
   at the recorded rates) for ``--seconds`` and measures, for every published prediction, the
   delay from the camera message it was predicted from to its arrival here (both processes
   read the same clock), and the achieved prediction rate.
2. Stops the stream (the live context stays) and calls /hma/rollout with N candidates of
   horizon ``--horizon`` for each N in ``--candidates``: round trip here, model time in the
   node, throughput in predicted frames (candidates x horizon) per second.

Prints a table and writes JSON. Without ROS_DOMAIN_ID set it picks a random domain, so a
benchmark never talks to (or is slowed by) another graph on this machine.

    python -m hma_ros.nodes.benchmark --robot franka --out out/benchmark_ros.json
    python -m hma_ros.nodes.benchmark --quick --checkpoint DIR --out /tmp/bench.json   # smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.serialization import deserialize_message

from hma_ros.data.rosbag import iter_raw
from hma_ros.nodes.bag_replay import DEFAULT_BAG, BagReplay, message_class
from hma_ros.nodes.convert import sec_to_stamp, stamp_to_sec
from hma_ros.nodes.demo import DemoError, percentiles_ms, rate_hz, resolve_checkpoint, setup_logging
from hma_ros.runtime.robot_config import RobotConfig, load_robot_config
from hma_ros_interfaces.msg import PredictedFrames
from hma_ros_interfaces.srv import Rollout

log = logging.getLogger("hma_ros.demo")  # the demo's stdout/stderr handlers


def load_recording(bag: str, robot: RobotConfig) -> list[tuple[float, str, Any]]:
    """(offset s, topic, message) of the robot's camera and action topics, in recorded order."""
    path = BagReplay._resolve(bag)
    topics = [robot.camera.topic, robot.action.topic]
    out, first = [], None
    for raw in iter_raw(path, topics):
        first = raw.log_time_ns if first is None else first
        out.append(
            ((raw.log_time_ns - first) * 1e-9, raw.topic, deserialize_message(raw.cdr, message_class(raw.msgtype)))
        )
    if not any(t == robot.camera.topic for _, t, _ in out):
        raise DemoError(f"{path} has no {robot.camera.topic} messages")
    return out


class Driver:
    """Publishes the recording restamped to now, records predictions and serves rollout calls."""

    def __init__(self, robot: RobotConfig, recording: list[tuple[float, str, Any]]) -> None:
        self.node = rclpy.create_node("hma_benchmark")
        self.recording = recording
        self.pubs = {
            robot.camera.topic: self.node.create_publisher(
                type(self._first(robot.camera.topic)), robot.camera.topic, 10
            ),
            robot.action.topic: self.node.create_publisher(
                type(self._first(robot.action.topic)), robot.action.topic, 50
            ),
        }
        self.predictions: list[tuple[float, float]] = []  # (arrival, camera stamp), wall clock
        self.diagnostics: list[DiagnosticArray] = []
        self.camera_sent = 0
        self.node.create_subscription(
            PredictedFrames,
            "/hma/predicted_frames",
            self._on_prediction,
            50,
            callback_group=MutuallyExclusiveCallbackGroup(),  # one group each: see world_model
        )
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            self.diagnostics.append,
            10,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.client = self.node.create_client(Rollout, "/hma/rollout")
        self.camera_topic = robot.camera.topic
        self._stop = threading.Event()

    def _first(self, topic: str) -> Any:
        return next(m for _, t, m in self.recording if t == topic)

    def _on_prediction(self, msg: PredictedFrames) -> None:
        self.predictions.append((time.time(), stamp_to_sec(msg.header.stamp)))

    def stream(self, seconds: float) -> None:
        """Publish the recording (looped) at its own pace for ``seconds``; stamps = wall clock."""
        t0 = time.monotonic()
        period = self.recording[-1][0] + 0.1
        loop = 0
        while not self._stop.is_set():
            for offset, topic, msg in self.recording:
                at = t0 + loop * period + offset
                if at - t0 >= seconds:
                    return
                delay = at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                msg.header.stamp = sec_to_stamp(time.time())
                self.pubs[topic].publish(msg)
                self.camera_sent += topic == self.camera_topic
            loop += 1

    def call(self, request: Rollout.Request, timeout: float) -> tuple[Rollout.Response | None, float]:
        t0 = time.perf_counter()
        future = self.client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.001)
        return (future.result() if future.done() else None), time.perf_counter() - t0


def start_world_model(robot: str, checkpoint: Path, args: argparse.Namespace, logfile) -> subprocess.Popen:
    params = {
        "robot": robot,
        "checkpoint": checkpoint,
        "backend": args.backend,
        "autostart": "true",
        "horizon": args.live_horizon,
        "max_candidates": max(args.candidates),
        "max_rollout_horizon": max(16, args.horizon),
        "rollout_wait": 60.0,
    }
    cmd = [sys.executable, "-m", "hma_ros.nodes.world_model", "--ros-args"]
    cmd += [x for k, v in params.items() for x in ("-p", f"{k}:={v}")]
    # PYTHONSAFEPATH: a cwd holding the ament folder hma_ros/ must not shadow the Python package.
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    return subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def measure_stream(driver: Driver, args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.time()
    driver.stream(args.seconds)
    time.sleep(1.0)  # predictions of the last steps arrive
    kept = [(arrival, stamp) for arrival, stamp in driver.predictions if stamp >= t_start + args.warmup]
    diag = {kv.key: kv.value for kv in driver.diagnostics[-1].status[0].values} if driver.diagnostics else {}
    return {
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "live_horizon": args.live_horizon,
        "camera_messages": driver.camera_sent,
        "camera_to_prediction_ms": percentiles_ms([arrival - stamp for arrival, stamp in kept]),
        "prediction_rate_hz": round(rate_hz([a for a, _ in kept]), 3),
        "predictions": len(kept),
        "node": {
            k: diag.get(k)
            for k in (
                "latency_mean_ms",
                "latency_max_ms",
                "frames_in",
                "steps",
                "steps_dropped",
                "ticks_model_busy",
                "prediction_errors",
                "camera_rate_hz",
            )
        },
    }


def measure_rollouts(driver: Driver, robot: RobotConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for n in args.candidates:
        acts = rng.normal(0, 0.05, (n, args.horizon, robot.stride, robot.action_dim)).astype(np.float32)
        request = Rollout.Request(
            num_candidates=n, horizon=args.horizon, action_dim=robot.action_dim, seed=0, return_frames=True
        )
        request.candidate_actions = acts.reshape(-1).tolist()
        trips, model, frames, error = [], [], 0, ""
        for rep in range(args.repeats + (0 if args.quick else 1)):  # the first call warms up (not timed)
            resp, trip = driver.call(request, timeout=args.timeout)
            if resp is None or not resp.success:
                error = "no answer within --timeout" if resp is None else resp.message
                break
            if rep or args.quick:
                trips.append(trip)
                model.append(resp.inference_time)
                frames = len(resp.frames)
        row: dict[str, Any] = {"candidates": n, "horizon": args.horizon, "calls": len(trips)}
        if trips:
            t, m = float(np.median(trips)), float(np.median(model))
            row |= {
                "round_trip_s": round(t, 4),
                "model_s": round(m, 4),
                "frames_per_s": round(n * args.horizon / t, 2),
                "model_frames_per_s": round(n * args.horizon / m, 2),
                "frames_returned": frames,
            }
        else:
            row["error"] = error
        rows.append(row)
        log.info(f"benchmark: rollout N={n}: " + (f"{row['round_trip_s']:.3f} s" if trips else f"FAILED: {error}"))
    return rows


def print_table(result: dict[str, Any]) -> None:
    s = result["stream"]
    lat = s["camera_to_prediction_ms"]
    lines = [
        f"world model node: {result['model']['model_id']} on {result['model']['backend']}, "
        f"{result['host']['cpus']} CPUs, separate process over DDS (domain {result['host']['ros_domain_id']})",
        f"camera -> prediction ({s['live_horizon']} steps, n={lat['n']}): median {lat['median']} ms, "
        f"p90 {lat['p90']} ms, p99 {lat['p99']} ms, max {lat['max']} ms",
        f"predictions: {s['prediction_rate_hz']:.2f} Hz (target 2), node tick mean {s['node']['latency_mean_ms']} ms, "
        f"steps dropped {s['node']['steps_dropped']}",
        f"{'rollout N':>10} {'horizon':>8} {'round trip s':>13} {'model s':>9} {'frames/s':>9} {'model frames/s':>15}",
    ]
    for r in result["rollout"]:
        if "error" in r:
            lines.append(f"{r['candidates']:>10} {r['horizon']:>8}  failed: {r['error']}")
        else:
            lines.append(
                f"{r['candidates']:>10} {r['horizon']:>8} {r['round_trip_s']:>13.3f} {r['model_s']:>9.3f} "
                f"{r['frames_per_s']:>9.1f} {r['model_frames_per_s']:>15.1f}"
            )
    for line in lines:
        log.info(line)


def run(args: argparse.Namespace, robot: RobotConfig, checkpoint: Path, recording: list, logfile) -> int:
    """Start the node, measure, write the JSON; the exit code."""
    executor = MultiThreadedExecutor(num_threads=4)
    driver = Driver(robot, recording)
    executor.add_node(driver.node)
    threading.Thread(target=executor.spin, daemon=True).start()
    t0 = time.perf_counter()
    proc = start_world_model(args.robot, checkpoint, args, logfile)
    log.info(f"benchmark: started world_model (pid {proc.pid}) on {checkpoint}; waiting for it")
    code = 1
    try:
        while not driver.diagnostics and proc.poll() is None and time.perf_counter() - t0 < 300:
            time.sleep(0.05)
        if not driver.diagnostics or not driver.client.wait_for_service(timeout_sec=10.0):
            raise DemoError("the world model did not come up")
        log.info(f"benchmark: node up after {time.perf_counter() - t0:.1f} s; streaming for {args.seconds:g} s")
        stream = measure_stream(driver, args)
        rollouts = measure_rollouts(driver, robot, args)
        result = {
            "robot": args.robot,
            "model": {"checkpoint": str(checkpoint), "model_id": checkpoint.name, "backend": args.backend},
            "host": {
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "ros_domain_id": int(os.environ["ROS_DOMAIN_ID"]),
                "rmw": os.environ.get("RMW_IMPLEMENTATION", "default (Fast DDS)"),
            },
            "quick": args.quick,
            "stream": stream,
            "rollout": rollouts,
        }
        print_table(result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        log.info(f"benchmark: wrote {args.out}")
        code = 0 if stream["predictions"] and all("error" not in r for r in rollouts) else 1
    except DemoError as e:
        log.error(f"benchmark: error: {e}")
    finally:
        rc = stop_process(proc)
        executor.shutdown(timeout_sec=5.0)
        driver.node.destroy_node()
        if code:
            logfile.seek(0)
            log.error(f"benchmark: world_model exited {rc}; its output:\n{logfile.read()[-4000:]}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="franka")
    parser.add_argument("--checkpoint", default="", help="model folder; empty: the robot config's model")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--bag", default=DEFAULT_BAG, help="recording whose camera/action messages are streamed")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of streaming")
    parser.add_argument("--warmup", type=float, default=2.0, help="first seconds of predictions not counted")
    parser.add_argument("--live-horizon", type=int, default=4, help="the node's horizon parameter while streaming")
    parser.add_argument("--candidates", default="1,8,32", help="rollout batch sizes, comma separated")
    parser.add_argument("--horizon", type=int, default=8, help="rollout horizon")
    parser.add_argument("--repeats", type=int, default=3, help="timed rollout calls per batch size")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one rollout call may take")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 s, N 1,8, horizon 2, one call each")
    parser.add_argument("--out", type=Path, default=Path("out/benchmark_ros.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.candidates, args.horizon, args.repeats = 3.0, 0.5, "1,8", 2, 1
    args.candidates = [int(n) for n in args.candidates.split(",")]
    setup_logging()
    try:
        checkpoint = resolve_checkpoint(args.robot, args.checkpoint)
        robot = load_robot_config(args.robot)
        recording = load_recording(args.bag, robot)
    except (DemoError, ValueError) as e:
        log.error(f"benchmark: error: {e}")
        return 1
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))  # the child inherits it
    rclpy.init()
    try:
        with tempfile.TemporaryFile(mode="w+") as logfile:
            return run(args, robot, checkpoint, recording, logfile)
    finally:
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
