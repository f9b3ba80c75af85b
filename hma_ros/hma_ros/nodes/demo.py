"""The demo without ROS tooling: replay a recording into the world model in one process.

Runs the same nodes as ``launch/demo.launch.py`` (bag_replay + world_model) on one
MultiThreadedExecutor for ``--seconds``, then asks /hma/rollout for a few candidate action
sequences around the last commanded action, prints a summary and writes it as JSON.

    python -m hma_ros.nodes.demo --robot franka --seconds 20 --out out/demo.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from hma_ros.nodes.bag_replay import DEFAULT_BAG, BagReplay
from hma_ros.nodes.convert import joint_positions
from hma_ros.nodes.world_model import WorldModelNode
from hma_ros.runtime.robot_config import RobotConfig
from hma_ros_interfaces.msg import PredictedFrames
from hma_ros_interfaces.srv import Rollout

log = logging.getLogger("hma_ros.demo")


def run(args: argparse.Namespace) -> dict:
    world = WorldModelNode(
        parameter_overrides=[
            Parameter("robot", value=args.robot),
            Parameter("checkpoint", value=args.checkpoint),
            Parameter("backend", value=args.backend),
        ]
    )
    if world.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        world.destroy_node()
        raise SystemExit(1)  # the node logged why
    world.trigger_activate()
    replay = BagReplay(
        parameter_overrides=[
            Parameter("bag", value=args.bag),
            Parameter("rate", value=args.rate),
            Parameter("loop", value=True),
        ]
    )
    client_node = rclpy.create_node("demo_client")
    predictions: list[PredictedFrames] = []
    client_node.create_subscription(PredictedFrames, "/hma/predicted_frames", predictions.append, 10)
    commands: list[JointState] = []
    client_node.create_subscription(JointState, world.robot.action.topic, commands.append, 10)
    client = client_node.create_client(Rollout, "/hma/rollout")
    executor = MultiThreadedExecutor(num_threads=4)
    for node in (world, replay, client_node):
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        time.sleep(args.seconds)
        summary = {"robot": args.robot, "seconds": args.seconds, "predictions": len(predictions)}
        summary["diagnostics"] = {kv.key: kv.value for kv in world.diagnostics().values}
        last = joint_positions(commands[-1], world.robot.action.names) if commands else None
        summary["rollout"] = rollout_once(world.robot, client, last, args.candidates)
    finally:
        executor.shutdown(timeout_sec=5.0)
        for node in (replay, client_node, world):
            node.destroy_node()
    return summary


def rollout_once(robot: RobotConfig, client, last: np.ndarray | None, candidates: int) -> dict:
    """N candidates: the last commanded action held, plus small random perturbations of it."""
    horizon = 4
    rng = np.random.default_rng(0)
    base = np.zeros(robot.action_dim, np.float32) if last is None else last
    acts = base + rng.normal(0, 0.05, (candidates, horizon, robot.stride, robot.action_dim)).astype(np.float32)
    acts[0] = base
    request = Rollout.Request(
        num_candidates=candidates, horizon=horizon, action_dim=robot.action_dim, seed=0, return_frames=True
    )
    request.candidate_actions = acts.reshape(-1).tolist()
    if not client.wait_for_service(timeout_sec=5.0):
        return {"success": False, "message": "/hma/rollout not available"}
    for _attempt in range(10):  # a looped recording restarts the live context: retry meanwhile
        future = client.call_async(request)
        deadline = time.monotonic() + 60.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            return {"success": False, "message": "no answer within 60 s"}
        r = future.result()
        if r.success or "live context" not in r.message:
            break
        time.sleep(0.5)
    return {
        "success": r.success,
        "message": r.message,
        "frames": len(r.frames),
        "inference_time_s": round(r.inference_time, 4),
        "total_time_s": round(r.total_time, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="franka")
    parser.add_argument("--bag", default=DEFAULT_BAG, help="rosbag2 MCAP (relative: cwd, then share dir)")
    parser.add_argument("--checkpoint", default="", help="empty: the robot config's model")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # read by rclpy.init
    rclpy.init()
    try:
        summary = run(args)
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    log.info(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    ok = summary["predictions"] > 0 and summary["rollout"]["success"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
