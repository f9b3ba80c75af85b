"""Scripted policies with noise and failures, and random exploration.

A world model used as a learned simulator must have seen what goes wrong, not only what a
perfect script does, so every episode draws a mode:

- ``scripted``: reach above the object, descend, close, lift (Lift) or carry and release
  (Stack); per-episode speed and grasp-offset noise, per-step action noise.
- ``scripted_fail``: the same script with one injected fault: a grasp offset of 3-6 cm
  (a miss), a gripper that never closes, or a release mid-lift (a drop).
- ``random``: smooth random end-effector waypoints around the object with random gripper
  toggles; it pushes and knocks objects as often as it avoids them.

All randomness comes from the ``rng`` passed in, so a seed reproduces an episode.
"""

from __future__ import annotations

import numpy as np

MODES = ("scripted", "scripted_fail", "random")
MODE_PROBS = (0.6, 0.2, 0.2)


def draw_mode(rng: np.random.Generator) -> str:
    return str(rng.choice(MODES, p=MODE_PROBS))


class ArmPolicy:
    """Pick policy for a :class:`~hma_ros.sim.robosuite_sim.RobosuiteSim` (joint or OSC control)."""

    def __init__(self, sim, rng: np.random.Generator, mode: str):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.sim, self.rng, self.mode = sim, rng, mode
        self.hz = sim.emb.control_hz
        self.joint = sim.emb.control == "joint"
        self.phase, self.t = "approach", 0
        _, self.rot0 = sim.eef_pose()  # hold the initial (downward) gripper orientation
        self.speed = rng.uniform(0.5, 1.2)
        self.action_noise = rng.uniform(0.0, 0.015)
        self.offset = np.append(rng.normal(0.0, 0.006, 2), 0.0)
        self.fault = None
        if mode == "scripted_fail":
            self.fault = str(rng.choice(["miss", "no_close", "drop"]))
            if self.fault == "miss":
                ang = rng.uniform(0, 2 * np.pi)
                self.offset = np.array([np.cos(ang), np.sin(ang), 0.0]) * rng.uniform(0.03, 0.06)
        self.grasp_pos: np.ndarray | None = None
        self.waypoint: np.ndarray | None = None
        self.grip = -1.0

    def _secs(self) -> float:
        return self.t / self.hz

    def _goto(self, phase: str) -> None:
        self.phase, self.t = phase, 0

    def _target(self) -> tuple[np.ndarray, float]:
        eef, _ = self.sim.eef_pose()
        obj = self.sim.objects()
        if self.mode == "random":
            if self.waypoint is None or np.linalg.norm(eef - self.waypoint) < 0.02 or self._secs() > 1.5:
                lo = obj["pick"] + np.array([-0.15, -0.15, -0.01])
                hi = obj["pick"] + np.array([0.15, 0.15, 0.2])
                self.waypoint = self.rng.uniform(lo, hi)
                self.t = 0
                if self.rng.random() < 0.4:
                    self.grip = -self.grip
            return self.waypoint, self.grip
        pick = obj["pick"] + self.offset
        if self.phase == "approach":
            target, grip = pick + np.array([0.0, 0.0, 0.08]), -1.0
            if np.linalg.norm(eef - target) < 0.015 or self._secs() > 3.0:
                self._goto("descend")
        elif self.phase == "descend":
            target, grip = pick + np.array([0.0, 0.0, -0.005]), -1.0
            if np.linalg.norm(eef - target) < 0.01 or self._secs() > 2.0:
                self._goto("close")
                self.grasp_pos = target
        elif self.phase == "close":
            target, grip = self.grasp_pos, (-1.0 if self.fault == "no_close" else 1.0)
            if self._secs() > 0.6:
                self._goto("lift")
        elif self.phase == "lift":
            grip = -1.0 if self.fault == "no_close" else 1.0
            if self.fault == "drop" and self._secs() > 0.6:
                grip = -1.0
            if self.sim.task == "Stack":
                above = obj["place"] + np.array([0.0, 0.0, 0.06])
                lift = self.grasp_pos + np.array([0.0, 0.0, 0.1])
                target = lift if self._secs() < 1.0 else above
                if self._secs() > 1.0 and np.linalg.norm(eef[:2] - above[:2]) < 0.01:
                    self._goto("release")
            else:
                target = self.grasp_pos + np.array([0.0, 0.0, 0.15])
        else:  # release (Stack): open over the target cube, then back off upward
            target = obj["place"] + np.array([0.0, 0.0, 0.06 + 0.1 * min(self._secs(), 1.0)])
            grip = -1.0
        return target, grip

    def act(self) -> np.ndarray:
        target, grip = self._target()
        self.t += 1
        if self.joint:
            q = self.sim.ik_step(target, self.rot0, max_dq=0.06 * self.speed * 20.0 / self.hz)
            q = q + self.rng.normal(0.0, self.action_noise, q.shape)
            return np.append(q, grip)
        a = self.sim.osc_action(target, grip)
        a[:3] = np.clip(a[:3] * self.speed + self.rng.normal(0.0, 3 * self.action_noise, 3), -1, 1)
        a[3:6] = self.rng.normal(0.0, 2 * self.action_noise, 3)
        return a


class PushTPolicy:
    """Push the T toward the goal: get behind it, push through it; noise, faults, random walks."""

    def __init__(self, sim, rng: np.random.Generator, mode: str):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.sim, self.rng, self.mode = sim, rng, mode
        self.noise = rng.uniform(2.0, 8.0) if mode == "scripted" else rng.uniform(15.0, 40.0)
        self.max_step = rng.uniform(15.0, 40.0)
        self.random_target = sim.agent_pos()

    def act(self) -> np.ndarray:
        agent = self.sim.agent_pos()
        if self.mode == "random":
            if self.rng.random() < 0.1 or np.linalg.norm(agent - self.random_target) < 10:
                self.random_target = self.rng.uniform(40, 472, 2)
            target = self.random_target
        else:
            block, goal = self.sim.block_pose()[:2], self.sim.goal_pose()[:2]
            d = goal - block
            d = d / max(np.linalg.norm(d), 1e-6)
            behind = block - 95.0 * d
            if np.linalg.norm(agent - behind) <= 35.0:
                target = block + 40.0 * d  # in place: push through the block toward the goal
            elif self._crosses_block(agent, behind, block):
                # Go around the block, on the agent's side, instead of shoving it off course.
                perp = np.array([-d[1], d[0]])
                side = np.sign(perp @ (agent - block)) or 1.0
                target = block + side * 120.0 * perp
            else:
                target = behind
        target = target + self.rng.normal(0.0, self.noise, 2)
        step = target - agent
        step *= min(1.0, self.max_step / max(np.linalg.norm(step), 1e-6))
        return np.clip(agent + step, 0.0, 512.0)

    @staticmethod
    def _crosses_block(a: np.ndarray, b: np.ndarray, center: np.ndarray, radius: float = 50.0) -> bool:
        """Does the segment a->b pass within ``radius`` px of the block's centre?"""
        ab = b - a
        t = np.clip((center - a) @ ab / max(ab @ ab, 1e-6), 0.0, 1.0)
        return bool(np.linalg.norm(a + t * ab - center) < radius)
