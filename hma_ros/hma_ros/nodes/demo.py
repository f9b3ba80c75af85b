"""The demo without ROS tooling: replay a recording into the world model and show what it predicted.

Runs the nodes of ``launch/demo.launch.py`` as a robot would: ``world_model`` and
``bag_replay`` each in its own process (``nodes/processes.py``), talking over DDS, with a
listener in this process that keeps every camera frame and every published prediction. After
``--seconds`` of replay it asks /hma/rollout once for a few candidate action sequences around
the last commanded action, stops both processes with SIGINT (their exit codes count: a node
that does not exit 0 fails the demo) and writes, next to ``--out``:

* ``demo.mp4`` (H.264): per 2 Hz tick t, the camera frame that actually arrived at t + k*0.5 s
  above the frame predicted for it at t (k = 1..horizon), and the observed frame at t;
* ``demo.png``: a few ticks as rows actual / predicted / |difference|;
* ``demo.json``: latency camera message -> published prediction (median, p90, p99, max),
  the prediction rate, dropped inputs, the rollout's timing, the PSNR of each prediction
  step against the frames that later arrived (beside a copy-the-last-frame baseline), and the
  node processes' CPU use and exit codes;
* ``demo_world_model.log``, ``demo_bag_replay.log``: what the two nodes printed.

Needs no robot and no GPU. ``make demo`` runs

    python -m hma_ros.nodes.demo --robot franka --seconds 20 --out out/demo.json
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, JointState

from hma_ros.eval.video import abs_diff, grid, stack, write_png, write_video
from hma_ros.nodes import spin
from hma_ros.nodes.bag_replay import DEFAULT_BAG, resolve_bag
from hma_ros.nodes.client import WorldModelClient
from hma_ros.nodes.convert import image_to_numpy, joint_positions, stamp_to_sec
from hma_ros.nodes.feed import ToolError, tool_context
from hma_ros.nodes.processes import NodeProcess
from hma_ros.runtime.image import fit_image
from hma_ros.runtime.robot_config import RobotConfig, RobotConfigError, load_robot_config
from hma_ros_interfaces.msg import PredictedFrames
from hma_ros_interfaces.srv import Rollout

log = logging.getLogger("hma_ros.demo")

STEP_PERIOD = 0.5  # s: the model clock (2 Hz); a prediction's frame k is for context stamp + k * 0.5 s
MATCH_TOLERANCE = 0.05  # s: a camera frame this close to a predicted stamp is its ground truth
NEW_PASS = 0.5  # s: camera stamps jumping back this far start a new pass (a looped recording)
PSNR_CAP = 100.0  # dB: identical frames give +inf; capped so means and JSON stay finite
STRIP_TICKS = 4  # ticks shown in the PNG


class DemoError(ToolError):
    """Something the user must fix (a missing model or recording); the text says what."""


# -- ROS-free bookkeeping: pair predictions with the frames that arrived later ------------------
@dataclass(frozen=True)
class Tick:
    """One published prediction and what the camera showed.

    ``stamp``: camera stamp of the newest context frame; ``latency``: seconds from that camera
    message's arrival to the prediction's arrival (None if the frame was not seen);
    ``observed``: that frame; ``predicted`` (H, h, w, 3); ``actual``: per step k the camera frame
    at ``stamp + (k+1) * 0.5 s`` or None if none arrived (end of the recording, dropped).
    """

    stamp: float
    received: float
    latency: float | None
    observed: np.ndarray | None
    predicted: np.ndarray
    actual: list[np.ndarray | None]


class Recorder:
    """Keeps camera frames (fitted to the model's ``size``) and predictions as they arrive.

    Camera stamps restart when a recording loops; each restart opens a new *pass*, and a
    prediction is matched inside the pass that held its context frame when it arrived.
    Thread-safe; ``close()`` stops recording (later arrivals are ignored).
    """

    def __init__(self, size: tuple[int, int], tolerance: float = MATCH_TOLERANCE) -> None:
        self.size = tuple(size)
        self.tolerance = tolerance
        self._lock = threading.Lock()
        self._passes: list[tuple[list[float], list[float], list[np.ndarray]]] = []  # stamps, arrivals, frames
        self._predictions: list[tuple[float, float, int | None, np.ndarray]] = []  # stamp, arrival, pass, frames
        self.camera_frames = 0
        self.closed = False

    def add_camera(self, stamp: float, frame: np.ndarray, received: float) -> None:
        frame = fit_image(frame, self.size)
        with self._lock:
            if self.closed:
                return
            self.camera_frames += 1
            if not self._passes or stamp < self._passes[-1][0][-1] - NEW_PASS:
                self._passes.append(([], [], []))
            stamps, arrivals, frames = self._passes[-1]
            i = bisect.bisect(stamps, stamp)
            stamps.insert(i, stamp)
            arrivals.insert(i, received)
            frames.insert(i, frame)

    def add_prediction(self, stamp: float, frames: np.ndarray, received: float) -> None:
        with self._lock:
            if self.closed:
                return
            found = next(
                (p for p in range(len(self._passes) - 1, -1, -1) if self._find(p, stamp) is not None),
                None,
            )
            self._predictions.append((stamp, received, found, np.asarray(frames)))

    def close(self) -> None:
        with self._lock:
            self.closed = True

    @property
    def num_predictions(self) -> int:
        with self._lock:
            return len(self._predictions)

    def _find(self, p: int, stamp: float) -> int | None:
        """Index of the frame of pass ``p`` nearest to ``stamp``, if within the tolerance."""
        stamps = self._passes[p][0]
        i = bisect.bisect(stamps, stamp)
        best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - stamp), default=None)
        return best if best is not None and abs(stamps[best] - stamp) <= self.tolerance else None

    def ticks(self) -> list[Tick]:
        out = []
        with self._lock:
            for stamp, received, p, frames in self._predictions:
                latency, observed, actual = None, None, [None] * len(frames)
                if p is not None:
                    _, arrivals, images = self._passes[p]
                    i = self._find(p, stamp)
                    latency, observed = received - arrivals[i], images[i]
                    for k in range(len(frames)):
                        j = self._find(p, stamp + (k + 1) * STEP_PERIOD)
                        actual[k] = images[j] if j is not None else None
                out.append(Tick(stamp, received, latency, observed, frames, actual))
        return out


def percentiles_ms(values: list[float]) -> dict[str, Any]:
    """n, median, p90, p99, max of durations in seconds, reported in milliseconds."""
    if not values:
        return {"n": 0, "median": None, "p90": None, "p99": None, "max": None}
    v = np.asarray(values, np.float64) * 1e3
    q = np.percentile(v, [50, 90, 99])
    return {
        "n": len(v),
        "median": round(q[0], 1),
        "p90": round(q[1], 1),
        "p99": round(q[2], 1),
        "max": round(v.max(), 1),
    }


def rate_hz(times: list[float]) -> float:
    """Events per second between the first and the last of ``times``."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def psnr_per_step(ticks: list[Tick], horizon: int) -> dict[str, list]:
    """Mean PSNR (dB) per prediction step k over the ticks whose frame t + k*0.5 s arrived, and
    the same for the trivial predictor "the future looks like the observed frame"."""
    from hma_ros.eval.metrics.pixel import psnr  # torch: imported once the model is running anyway

    model, copy_last, pairs = [], [], []
    for k in range(horizon):
        have = [t for t in ticks if t.actual[k] is not None and t.observed is not None]
        pairs.append(len(have))
        if not have:
            model.append(None)
            copy_last.append(None)
            continue
        actual = np.stack([t.actual[k] for t in have])
        for preds, acc in (
            (np.stack([t.predicted[k] for t in have]), model),
            (np.stack([t.observed for t in have]), copy_last),
        ):
            acc.append(round(float(psnr(preds, actual).clamp(max=PSNR_CAP).mean()), 2))
    return {"model": model, "copy_last_frame": copy_last, "pairs": pairs}


def comparison_frame(tick: Tick, index: int, t0: float, diff: bool = False) -> np.ndarray:
    """One tick as a labelled grid: the observed frame, then actual above predicted per step."""
    horizon = len(tick.predicted)
    actual = [tick.observed, *tick.actual]
    predicted = [None, *tick.predicted]
    rows, labels = [actual, predicted], ["actual", "predicted"]
    if diff:
        rows.append(
            [None]
            + [abs_diff(a, p) if a is not None else None for a, p in zip(tick.actual, tick.predicted, strict=True)]
        )
        labels.append("|diff|")
    cols = ["now (t)"] + [f"t+{(k + 1) * STEP_PERIOD:g}s" for k in range(horizon)]
    latency = f", latency {tick.latency * 1e3:.0f} ms" if tick.latency is not None else ""
    title = f"tick {index}: recording t = {tick.stamp - t0:.1f} s{latency}"
    return grid(rows, row_labels=labels, col_labels=cols, title=title)


def write_outputs(ticks: list[Tick], video: Path, strip: Path, fps: float) -> dict[str, Any]:
    """The MP4 (every tick) and the PNG (a few ticks with every future frame, evenly spread)."""
    t0 = ticks[0].stamp
    frames = [comparison_frame(t, i, t0) for i, t in enumerate(ticks)]
    size = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    frames = [np.pad(f, ((0, size[0] - f.shape[0]), (0, size[1] - f.shape[1]), (0, 0))) for f in frames]
    n = write_video(video, frames, fps=fps)
    complete = [i for i, t in enumerate(ticks) if all(a is not None for a in t.actual)] or list(range(len(ticks)))
    chosen = [complete[int(j)] for j in np.linspace(0, len(complete) - 1, min(STRIP_TICKS, len(complete)))]
    write_png(strip, stack([comparison_frame(ticks[i], i, t0, diff=True) for i in sorted(set(chosen))]))
    return {
        "video": str(video),
        "video_frames": n,
        "video_size": [size[1], size[0]],
        "video_fps": fps,
        "strip": str(strip),
        "strip_ticks": sorted(set(chosen)),
    }


# -- the ROS part ---------------------------------------------------------------------------------
def run(args: argparse.Namespace, checkpoint: Path, signals: spin.StopSignals) -> tuple[dict[str, Any], list[Tick]]:
    """Start world_model and bag_replay as processes, record, roll out once, stop them; returns
    the summary and the recorded ticks."""
    robot = load_robot_config(args.robot)
    logs = args.out.parent
    recorder: Recorder | None = None
    commands: list[JointState] = []
    received: list[float] = []

    def on_prediction(msg: PredictedFrames, arrival: float) -> None:
        if msg.frames and recorder is not None:
            frames = np.stack([image_to_numpy(f) for f in msg.frames])
            recorder.add_prediction(stamp_to_sec(msg.header.stamp), frames, time.monotonic())
            received.append(arrival)

    client = WorldModelClient("demo_listener", on_prediction=on_prediction)
    spinner = spin.ExecutorThread(client.node).start()
    world = replay = None
    try:
        t_load = time.perf_counter()
        world = NodeProcess(
            "world_model",
            {
                "robot": args.robot,
                "checkpoint": checkpoint,
                "backend": args.backend,
                "horizon": args.horizon,
                "autostart": True,
            },
            log=logs / "demo_world_model.log",
        )
        log.info(f"demo: started world_model (pid {world.pid}, log {world.log_path}); waiting for it to load")
        if why := client.wait_until_active(world.alive, abort=lambda: bool(signals)):
            raise DemoError(f"the world model did not load {checkpoint}: {why}\n{world.log_tail()}")
        values, _, _ = client.diagnostics()
        load_s = time.perf_counter() - t_load
        size = tuple(int(v) for v in values["image_size"].split("x"))[::-1]  # "WxH" -> (h, w)
        recorder = Recorder(size)
        log.info(
            f"demo: world model {checkpoint.name} up in {load_s:.1f} s ({args.backend}, {size[1]}x{size[0]} frames); "
            f"predicting {args.horizon} steps ({args.horizon * STEP_PERIOD:g} s) ahead at 2 Hz"
        )

        def on_camera(msg: Image) -> None:
            now = time.monotonic()
            with contextlib.suppress(ValueError):  # the world model counts and reports refused frames
                recorder.add_camera(stamp_to_sec(msg.header.stamp), image_to_numpy(msg), now)

        # A camera subscription as deep as the world model's, and reliable commands, as a robot's.
        client.node.create_subscription(Image, robot.camera.topic, on_camera, QoSProfile(depth=50))
        client.node.create_subscription(JointState, robot.action.topic, commands.append, 50)
        path = resolve_bag(args.bag)
        replay = NodeProcess(
            "bag_replay",
            # The robot's two topics, each with two subscribers (the world model, this listener) before it plays.
            {
                "bag": path,
                "rate": args.rate,
                "loop": True,
                "topics": f"[{robot.camera.topic},{robot.action.topic}]",
                "wait_for_subscribers": 2,
            },
            log=logs / "demo_bag_replay.log",
        )
        log.info(f"demo: replaying {path} for {args.seconds:g} s (rate {args.rate:g}, looped; pid {replay.pid})")
        # The seconds count from the first frame: the replay first waits for DDS discovery.
        if not spin.wait_until(lambda: recorder.camera_frames > 0 or bool(signals) or not replay.alive(), 30.0):
            raise DemoError(f"no camera frame from the replay within 30 s:\n{replay.log_tail()}")
        start = time.monotonic()
        while (left := start + args.seconds - time.monotonic()) > 0 and not signals:
            time.sleep(min(left, args.progress))
            if time.monotonic() < start + args.seconds - 1e-3 and not signals:
                log.info(
                    f"demo:   {time.monotonic() - start:4.0f} s: {recorder.camera_frames} camera frames, "
                    f"{recorder.num_predictions} predictions"
                )
        replay_code, _ = replay.stop()
        time.sleep(STEP_PERIOD + 0.1)  # the tick that was computing publishes
        recorder.close()
        diag = client.fresh_diagnostics(timeout=3.0 * float(values.get("diagnostics_period", 1.0)) + 1.0)
        last = joint_positions(commands[-1], robot.action.names) if commands else None
        rollout = rollout_once(robot, client, last, args.candidates, args.horizon)
        log.info(
            f"demo: /hma/rollout of {args.candidates} candidates x {args.horizon} steps: "
            + (
                f"ok in {rollout['round_trip_s']:.2f} s (model {rollout['inference_time_s']:.2f} s)"
                if rollout["success"]
                else f"FAILED: {rollout['message']}"
            )
        )
        cpu = world.cpu_seconds()
        wall = time.monotonic() - world.started
        world_code, world_exit_s = world.stop()
    finally:
        for proc in (replay, world):
            if proc is not None and proc.alive():
                proc.stop()
        spinner.stop()
        client.destroy()

    ticks = recorder.ticks()
    frames_in = int(diag.get("frames_in", 0))
    stats = {
        "robot": args.robot,
        "recording": str(path),
        "seconds": args.seconds,
        "rate": args.rate,
        "model": {
            "checkpoint": str(checkpoint),
            "model_id": checkpoint.name,
            "backend": args.backend,
            "image_size": list(size),
            "load_s": round(load_s, 3),
        },
        "horizon": args.horizon,
        "predictions": len(ticks),
        "prediction_rate_hz": round(rate_hz(received), 3),
        "camera_rate_hz": _float(diag.get("camera_rate_hz")),
        "latency_ms": {
            "camera_to_prediction": percentiles_ms([t.latency for t in ticks if t.latency is not None]),
            "model_tick_mean": _float(diag.get("latency_mean_ms")),
            "model_tick_max": _float(diag.get("latency_max_ms")),
        },
        "inputs": {
            "camera_messages": recorder.camera_frames,
            "camera_frames_in_model": frames_in,
            "camera_frames_lost": max(0, recorder.camera_frames - frames_in),
            "frames_refused": int(diag.get("frames_refused", 0)),
            "actions_refused": int(diag.get("actions_refused", 0)),
            "steps": int(diag.get("steps", 0)),
            "steps_dropped": int(diag.get("steps_dropped", 0)),
            "steps_without_own_prediction": max(0, int(diag.get("steps", 0)) - len(ticks)),
            "prediction_errors": int(diag.get("prediction_errors", 0)),
        },
        "processes": {
            "world_model": {
                "pid": world.pid,
                "exit_code": world_code,
                "exit_s": round(world_exit_s, 3),
                "cpu_percent": round(100 * cpu / wall, 1) if cpu is not None else None,
                "log": str(world.log_path),
            },
            "bag_replay": {"pid": replay.pid, "exit_code": replay_code, "log": str(replay.log_path)},
        },
        "psnr_db": psnr_per_step(ticks, args.horizon) if ticks else None,
        "rollout": rollout,
        "diagnostics": diag,
    }
    return stats, ticks


def _float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def rollout_once(
    robot: RobotConfig, client: WorldModelClient, last: np.ndarray | None, candidates: int, horizon: int
) -> dict[str, Any]:
    """N candidates: the last commanded action held, plus small random perturbations of it."""
    rng = np.random.default_rng(0)
    base = np.zeros(robot.action_dim, np.float32) if last is None else last
    acts = base + rng.normal(0, 0.05, (candidates, horizon, robot.stride, robot.action_dim)).astype(np.float32)
    acts[0] = base
    request = Rollout.Request(
        num_candidates=candidates, horizon=horizon, action_dim=robot.action_dim, seed=0, return_frames=True
    )
    request.candidate_actions = acts.reshape(-1).tolist()
    result = {"success": False, "message": "", "candidates": candidates, "horizon": horizon}
    if not client.rollout.wait_for_service(timeout_sec=5.0):
        return {**result, "message": "/hma/rollout not available"}
    r, round_trip = client.call(request, timeout=120.0)
    if r is None:
        return {**result, "message": "no answer within 120 s"}
    return {
        **result,
        "success": r.success,
        "message": r.message,
        "frames": len(r.frames),
        "inference_time_s": round(r.inference_time, 4),
        "total_time_s": round(r.total_time, 4),
        "round_trip_s": round(round_trip, 4),
        "frames_per_s": round(candidates * horizon / r.inference_time, 2) if r.success and r.inference_time else None,
    }


def setup_logging() -> None:
    """Progress on stdout, warnings and errors on stderr, plain lines (the streams of this call)."""
    for h in list(log.handlers):
        log.removeHandler(h)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for h in (out, err):
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False


def resolve_checkpoint(robot: str, checkpoint: str) -> Path:
    """The checkpoint folder the demo will load; DemoError if the robot or the model is missing."""
    try:
        config = load_robot_config(robot)
        path = Path(checkpoint).expanduser() if checkpoint else config.checkpoint_path()
    except RobotConfigError as e:
        raise DemoError(str(e)) from e
    if not (path / "config.json").is_file():
        what = "is not a checkpoint (no config.json)" if path.is_dir() else "does not exist"
        hint = "pass --checkpoint DIR" if checkpoint else f"the {robot} model ships as {path}; or pass --checkpoint DIR"
        raise DemoError(f"model folder {path} {what}: {hint}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="franka", help="robot config (config/robots/<robot>.yaml)")
    parser.add_argument("--bag", default=DEFAULT_BAG, help="rosbag2 MCAP (relative: cwd, then share dir)")
    parser.add_argument("--checkpoint", default="", help="model folder; empty: the robot config's model")
    parser.add_argument("--backend", default="torch", help="torch, onnxruntime or tensorrt")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of replay")
    parser.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    parser.add_argument("--horizon", type=int, default=4, help="2 Hz steps predicted per tick")
    parser.add_argument("--candidates", type=int, default=4, help="candidate action sequences in the rollout")
    parser.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument(
        "--out", type=Path, default=Path("out/demo.json"), help="summary JSON; the .mp4 and .png go beside it"
    )
    args = parser.parse_args(argv)
    setup_logging()
    t_start = time.perf_counter()
    try:
        checkpoint = resolve_checkpoint(args.robot, args.checkpoint)
    except DemoError as e:
        log.error(f"demo: error: {e}")
        raise SystemExit(1) from None
    log.info(f"demo: robot {args.robot}, model {checkpoint}")

    with tool_context() as signals:
        try:
            summary, ticks = run(args, checkpoint, signals)
        except DemoError as e:
            log.error(f"demo: error: {e}")
            raise SystemExit(1) from None

    out = args.out
    if ticks:
        summary["outputs"] = write_outputs(ticks, out.with_suffix(".mp4"), out.with_suffix(".png"), fps=1 / STEP_PERIOD)
    summary["outputs"] = {**summary.get("outputs", {}), "json": str(out)}
    summary["wall_s"] = round(time.perf_counter() - t_start, 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")

    lat = summary["latency_ms"]["camera_to_prediction"]
    log.info(
        f"demo: {summary['predictions']} predictions at {summary['prediction_rate_hz']:.2f} Hz; latency camera -> "
        f"prediction: median {lat['median']} ms, p90 {lat['p90']}, p99 {lat['p99']}, max {lat['max']} ms"
    )
    inputs = summary["inputs"]
    log.info(
        f"demo: inputs: {inputs['camera_messages']} camera frames ({inputs['camera_frames_lost']} lost), "
        f"{inputs['steps']} steps ({inputs['steps_dropped']} dropped, {inputs['steps_without_own_prediction']} "
        f"folded into a later tick)"
    )
    if summary["psnr_db"]:
        p = summary["psnr_db"]
        log.info(
            "demo: PSNR per step (dB): "
            + " ".join(f"{v:.1f}" if v is not None else "-" for v in p["model"])
            + "  (copy the last frame: "
            + " ".join(f"{v:.1f}" if v is not None else "-" for v in p["copy_last_frame"])
            + ")"
        )
    o = summary["outputs"]
    if "video" in o:
        log.info(f"demo: wrote {o['video']} ({o['video_frames']} frames at {o['video_fps']:g} fps), {o['strip']}")
    log.info(f"demo: wrote {out} in {summary['wall_s']:.0f} s")
    codes = {name: p["exit_code"] for name, p in summary["processes"].items()}
    log.info(
        f"demo: world_model used {summary['processes']['world_model']['cpu_percent']}% of a core; exit codes {codes}"
    )
    problems = [
        *(["no prediction was published"] if not summary["predictions"] else []),
        *([f"the rollout failed: {summary['rollout']['message']}"] if not summary["rollout"]["success"] else []),
        *[f"{name} exited {code}" for name, code in codes.items() if code != 0],
    ]
    for problem in problems:
        log.error(f"demo: error: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
