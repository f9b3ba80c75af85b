"""Record a simulated franka episode as a rosbag2 MCAP, as a ROS user would record a robot.

    python -m hma_ros.sim.record_demo --out hma_ros/data/franka_demo.mcap

Topics (stamps in ``header.stamp`` and as log time, starting at ``--start-s``):

- ``/camera/image_raw`` ``sensor_msgs/Image`` rgb8 128x128 at 10 Hz (the raw render, not
  fitted: fitting is the consumer's job, via ``fit_image``);
- ``/joint_command`` ``sensor_msgs/JointState`` at 20 Hz: positions of ``panda_joint1..7``
  (absolute targets) and ``gripper`` (-1 open .. 1 closed), the franka embodiment's action;
- ``/joint_states`` ``sensor_msgs/JointState`` at 20 Hz: measured positions/velocities of
  the same joints (``gripper``: mean finger opening in metres).

The episode is the scripted Lift policy with its usual noise; seeds are tried from
``--seed`` until one lifts the cube, so the demo shows a success.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from hma_ros.sim.embodiments import get_embodiment
from hma_ros.sim.policies import ArmPolicy

log = logging.getLogger(__name__)

CAMERA_TOPIC = "/camera/image_raw"
COMMAND_TOPIC = "/joint_command"
STATE_TOPIC = "/joint_states"


def record(out: str | Path, seconds: float = 12.0, seed: int = 0, start_s: int = 1_700_000_000, tries: int = 10):
    from hma_ros.data.rosbag import McapWriter, image_msg, joint_state_msg
    from hma_ros.sim.robosuite_sim import RobosuiteSim

    emb = get_embodiment("franka")
    sim = RobosuiteSim(emb, "Lift")
    names = list(emb.action_names)
    hz = emb.control_hz
    camera_every = int(hz // 10)  # 10 Hz camera
    steps = int(seconds * hz)
    try:
        for s in range(seed, seed + tries):
            sim.reset(s)
            policy = ArmPolicy(sim, np.random.default_rng(s), "scripted")
            records = []
            for k in range(steps):
                image = sim.render() if k % camera_every == 0 else None
                q, dq = sim.joint_pos(), sim._data.qvel[sim._dof_idx].copy()
                gq = sim._data.qpos[sim.env.robots[0]._ref_gripper_joint_pos_indexes["right"]]
                action = policy.act()
                sim.step(action)
                records.append((image, action, q, dq, float(np.abs(gq).mean())))
            if sim.success():
                break
            log.info("seed %d did not lift the cube; trying the next", s)
        else:
            raise RuntimeError(f"no successful scripted episode in seeds {seed}..{seed + tries - 1}")
    finally:
        sim.close()
    t0 = start_s * 1_000_000_000
    dt = int(round(1e9 / hz))
    with McapWriter(out, compression="zstd") as w:
        for k, (image, action, q, dq, grip) in enumerate(records):
            t = t0 + k * dt
            w.write(STATE_TOPIC, "sensor_msgs/msg/JointState", joint_state_msg(names, [*q, grip], t, [*dq, 0.0]), t)
            if image is not None:
                w.write(CAMERA_TOPIC, "sensor_msgs/msg/Image", image_msg(image, t, "camera"), t)
            w.write(COMMAND_TOPIC, "sensor_msgs/msg/JointState", joint_state_msg(names, action, t), t)
    log.info("wrote %s: %d control steps (seed %d), %d bytes", out, steps, s, Path(out).stat().st_size)
    return s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hma_ros.sim.record_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    record(args.out, args.seconds, args.seed)


if __name__ == "__main__":
    main()
