"""Soak test: the world model node under sustained load for minutes, watching rate, memory and life.

The node runs in its own process (as ``ros2 launch`` starts it). This process feeds it the
bundled recording at a 30 Hz camera and 200 Hz joint commands on the robot's action topic
(stamped with the wall clock, the recorded timeline looped), and runs ``--clients`` rollout
clients that each call /hma/rollout (N=8, H=4) as soon as the previous answer came. Every
``--sample`` seconds it reads the node's RSS and CPU from /proc and counts predictions and
answers. At the end it stops the node with SIGINT.

Bars (issue #13): no crash, live predictions >= 1.9 Hz after warm-up, RSS growth <= 50 MB
after warm-up (median of the first fifth against the last: RSS swings with each rollout batch),
every rollout after warm-up answered (no timeout, no failure), the node exits 0. Prints a table, writes
JSON, and exits 1 when a bar is missed.

    python -m hma_ros.nodes.soak --minutes 10 --out out/soak.json
    python -m hma_ros.nodes.soak --minutes 1 --warmup 20       # what CI runs
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hma_ros.nodes.bag_replay import DEFAULT_BAG
from hma_ros.nodes.client import WorldModelClient
from hma_ros.nodes.demo import rate_hz, resolve_checkpoint, setup_logging
from hma_ros.nodes.feed import Recording, RolloutLoad, Session, rollout_request, ros_tool
from hma_ros.nodes.processes import NodeProcess
from hma_ros.runtime.robot_config import load_robot_config

log = logging.getLogger("hma_ros.demo")  # the demo's stdout/stderr handlers

BARS = {"rate_hz_min": 1.9, "rss_growth_mb_max": 50.0}


def soak(args: argparse.Namespace, checkpoint: Path, signals: Any) -> dict[str, Any]:
    robot = load_robot_config(args.robot)
    recording = Recording.load(args.bag, robot)
    base = recording.mean_command()
    params = {"robot": args.robot, "checkpoint": checkpoint, "autostart": True, "rollout_queue_size": 64}
    session = Session(
        "hma_soak",
        recording,
        params,
        args.out.with_suffix(".world_model.log"),
        signals,
        camera_hz=args.camera_hz,
        command_hz=args.joints_hz,
    )
    samples: list[dict[str, Any]] = []
    with session:
        client, world = session.client, session.world
        load = RolloutLoad(client, args.clients, lambda rng: rollout_request(robot, base, 8, 4, rng))
        load.start()
        t0 = time.monotonic()
        log.info(
            f"soak: {args.minutes:g} min: camera {args.camera_hz:g} Hz, {robot.action.topic} {args.joints_hz:g} Hz, "
            f"{args.clients} rollout clients (N=8, H=4); node pid {world.pid}"
        )
        next_report = t0
        try:
            while (elapsed := time.monotonic() - t0) < args.minutes * 60 and not signals and world.alive():
                samples.append(
                    {
                        "t": round(elapsed, 1),
                        "wall": time.time(),
                        "rss_mb": world.rss_mb(),
                        "cpu_s": world.cpu_seconds(),
                        "predictions": len(client.predictions),
                        "answers": len(load.answers),
                    }
                )
                if time.monotonic() >= next_report:
                    s = samples[-1]
                    log.info(
                        f"soak: {elapsed:5.0f} s: RSS {s['rss_mb']:.0f} MB, {s['predictions']} predictions, "
                        f"{s['answers']} rollout answers"
                    )
                    next_report += args.report
                time.sleep(args.sample)
        finally:
            load.stop()
        alive = world.alive()
        session.feeder.stop()
        diag = client.fresh_diagnostics()
        code, exit_s = session.stop_node()
    return summarize(args, samples, client, load, diag, alive, code, exit_s, world)


def summarize(
    args: argparse.Namespace,
    samples: list[dict[str, Any]],
    client: WorldModelClient,
    load: RolloutLoad,
    diag: dict[str, str],
    alive: bool,
    code: int,
    exit_s: float,
    world: NodeProcess,
) -> dict[str, Any]:
    after = [s for s in samples if s["t"] >= args.warmup and s["rss_mb"] is not None]
    # RSS swings by ~100 MB within seconds as rollout batches come and go (freed tensors go back
    # to the OS), so growth compares the median of the first and the last fifth after warm-up.
    fifth = max(1, len(after) // 5)
    rss = np.array([s["rss_mb"] for s in after]) if after else np.zeros(1)
    start_wall = after[0]["wall"] if after else float("inf")
    times = [arrival for arrival, _ in client.predictions if arrival >= start_wall]
    result = {
        "minutes": args.minutes,
        "warmup_s": args.warmup,
        "inputs": {"camera_hz": args.camera_hz, "joints_hz": args.joints_hz, "rollout_clients": args.clients},
        "node_alive_at_end": alive,
        "node_exit": {"code": code, "seconds": round(exit_s, 3), "log": str(world.log_path)},
        "rss_mb": {
            "after_warmup": round(float(np.median(rss[:fifth])), 1),
            "end": round(float(np.median(rss[-fifth:])), 1),
            "min": round(float(rss.min()), 1),
            "max": round(float(rss.max()), 1),
            "growth": round(float(np.median(rss[-fifth:]) - np.median(rss[:fifth])), 1),
        },
        "prediction_rate_hz": round(rate_hz(times), 3),
        "predictions_after_warmup": len(times),
        "node_cpu_percent": round(
            100 * (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / max(samples[-1]["t"] - samples[0]["t"], 1e-9), 1
        )
        if len(samples) > 1
        else None,
        "rollouts": load.summary(after[0]["answers"] if after else len(load.answers)),
        "rollouts_total": load.summary(),
        "diagnostics": {
            k: diag.get(k)
            for k in ("predictions", "prediction_errors", "predictions_invalid", "steps_dropped", "rollouts_failed")
        },
        "samples": samples,
        "bars": BARS,
    }
    judged = result["rollouts"]  # before warm-up, "not enough live context yet" is a right answer
    result["met"] = {
        "no_crash": bool(alive and code == 0),
        "rate": result["prediction_rate_hz"] >= BARS["rate_hz_min"],
        "rss_growth": bool(after) and result["rss_mb"]["growth"] <= BARS["rss_growth_mb_max"],
        "all_answered": judged["answers"] > 0 and judged["timeouts"] == 0 and judged["failures"] == 0,
    }
    return result


def print_table(r: dict[str, Any]) -> None:
    met = {k: "ok" if v else "MISSED" for k, v in r["met"].items()}
    rss, roll = r["rss_mb"], r["rollouts"]
    for line in (
        f"soak: {r['minutes']:g} min ({r['warmup_s']:g} s warm-up), node alive {r['node_alive_at_end']}, "
        f"exit {r['node_exit']['code']} in {r['node_exit']['seconds']} s ({met['no_crash']})",
        f"  live predictions {r['prediction_rate_hz']:.2f} Hz after warm-up ({met['rate']}); node CPU "
        f"{r['node_cpu_percent']}%",
        f"  RSS (median) {rss['after_warmup']:.0f} MB after warm-up -> {rss['end']:.0f} MB at the end: growth "
        f"{rss['growth']} MB ({met['rss_growth']}); range {rss['min']:.0f}-{rss['max']:.0f} MB",
        f"  rollouts after warm-up: {roll['answers']} answered, {roll['failures']} failed, {roll['timeouts']} timed "
        f"out; answer s median {roll['answer_s']['median']}, p99 {roll['answer_s']['p99']}, max "
        f"{roll['answer_s']['max']} ({met['all_answered']})",
    ):
        log.info(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="franka")
    parser.add_argument("--checkpoint", default="", help="model folder; empty: the robot config's model")
    parser.add_argument("--bag", default=DEFAULT_BAG, help="recording whose camera/command messages are streamed")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS and rate are judged")
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--joints-hz", type=float, default=200.0, help="JointState rate on the robot's action topic")
    parser.add_argument("--clients", type=int, default=5, help="rollout clients, each looping N=8, H=4")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--report", type=float, default=30.0, help="seconds between progress lines")
    parser.add_argument("--out", type=Path, default=Path("out/soak.json"))
    args = parser.parse_args(argv)
    setup_logging()
    if args.warmup >= args.minutes * 60:
        log.error(f"soak: error: --warmup {args.warmup:g} s leaves nothing of --minutes {args.minutes:g} to judge")
        return 1

    def body(signals: Any) -> int:
        result = soak(args, resolve_checkpoint(args.robot, args.checkpoint), signals)
        print_table(result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
        log.info(f"soak: wrote {args.out}")
        return 0 if all(result["met"].values()) else 1

    return ros_tool("soak", body)


if __name__ == "__main__":
    raise SystemExit(main())
