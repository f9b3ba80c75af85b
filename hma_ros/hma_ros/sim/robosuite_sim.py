"""robosuite arms in joint-position or end-effector (OSC) control, rendered headless at 128x128.

:class:`RobosuiteSim` hides robosuite behind a small interface the generator and the
evaluation code share: ``reset(seed)``, ``step(action)``, ``render()``, ``state()`` and
``success()``. In joint control the action is the absolute joint-position target plus a
gripper command in [-1 (open), 1 (closed)], the same numbers a ROS ``/joint_command``
``JointState`` carries.
"""

from __future__ import annotations

import logging
from typing import Any

import mujoco
import numpy as np

import hma_ros.sim  # noqa: F401  (sets MUJOCO_GL before mujoco loads)
from hma_ros.sim.embodiments import SimEmbodiment

log = logging.getLogger(__name__)

RENDER_SIZE = 128
# A free camera, front-left of the table, framing the workspace and the arm. robosuite's
# "agentview" puts the cube at 3 pixels of a 64x64 frame; this one gives it ~6 and keeps
# the gripper in view for every arm.
CAMERA = {"lookat": (0.0, 0.0, 0.92), "distance": 0.85, "elevation": -30.0, "azimuth": 150.0}


def _quiet_robosuite() -> None:
    for name in ("robosuite", "robosuite_logs"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _controller_config(emb: SimEmbodiment) -> dict[str, Any]:
    """A BASIC composite controller whose arm part is joint position (absolute) or OSC pose."""
    if emb.control == "joint":
        arm = {
            "type": "JOINT_POSITION",
            "input_type": "absolute",  # the action *is* the joint target, like a ROS command
            "input_max": 1,
            "input_min": -1,
            "output_max": 0.05,
            "output_min": -0.05,
            "kp": 150,
            "damping_ratio": 1,
            "impedance_mode": "fixed",
            "kp_limits": [0, 300],
            "damping_ratio_limits": [0, 10],
            "qpos_limits": None,
            "interpolation": None,
            "ramp_ratio": 0.2,
        }
    elif emb.control == "osc":
        arm = {
            "type": "OSC_POSE",
            "input_max": 1,
            "input_min": -1,
            "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
            "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
            "kp": 150,
            "damping_ratio": 1,
            "impedance_mode": "fixed",
            "kp_limits": [0, 300],
            "damping_ratio_limits": [0, 10],
            "position_limits": None,
            "orientation_limits": None,
            "uncouple_pos_ori": True,
            "input_type": "delta",
            "input_ref_frame": "base",
            "interpolation": None,
            "ramp_ratio": 0.2,
        }
    else:
        raise ValueError(f"{emb.name}: robosuite control must be 'joint' or 'osc', got {emb.control!r}")
    arm["gripper"] = {"type": "GRIP"}
    return {"type": "BASIC", "body_parts": {"right": arm}}


class RobosuiteSim:
    """One robosuite environment for one embodiment and task; reused across episodes."""

    def __init__(self, emb: SimEmbodiment, task: str = "Lift", render_size: int = RENDER_SIZE):
        import robosuite

        _quiet_robosuite()
        if emb.backend != "robosuite":
            raise ValueError(f"{emb.name} is not a robosuite embodiment")
        self.emb = emb
        self.task = task
        np.random.seed(0)  # robosuite draws object sizes from the global RNG when it builds the model
        self.env = robosuite.make(
            task,
            robots=emb.robot,
            controller_configs=_controller_config(emb),
            has_renderer=False,
            has_offscreen_renderer=False,  # we render with our own mujoco.Renderer, shadows off
            use_camera_obs=False,
            use_object_obs=True,
            control_freq=int(emb.control_hz),
            horizon=10**9,
            ignore_done=True,
            hard_reset=False,  # keep the compiled model between episodes (resets are 10x faster)
            reward_shaping=True,
        )
        robot = self.env.robots[0]
        self.arm_dof = len(robot._ref_joint_pos_indexes)
        if emb.control == "joint" and emb.action_dim != self.arm_dof + 1:
            raise ValueError(f"{emb.name}: {emb.action_dim} action names for {self.arm_dof} joints + gripper")
        self._qpos_idx = np.asarray(robot._ref_joint_pos_indexes)
        self._dof_idx = np.asarray(robot._ref_joint_vel_indexes)
        self._model = self.env.sim.model._model
        self._data = self.env.sim.data._data
        self._model.light_castshadow[:] = 0
        self._renderer = mujoco.Renderer(self._model, render_size, render_size)
        self._scene_opt = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._camera.lookat[:] = CAMERA["lookat"]
        self._camera.distance = CAMERA["distance"]
        self._camera.elevation = CAMERA["elevation"]
        self._camera.azimuth = CAMERA["azimuth"]
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._grip_site: int | None = None
        self._obs: dict[str, np.ndarray] = {}
        low, high = self.env.action_spec
        self._osc_low, self._osc_high = low, high

    # ------------------------------------------------------------ episode
    def reset(self, seed: int) -> None:
        # robosuite draws object placement and joint noise from the global numpy RNG.
        np.random.seed(seed % 2**32)
        # A soft reset keeps solver warm-starts and controller state from the last episode;
        # clear them so an episode depends on its seed alone. What remains is float noise
        # (~1e-9 in joint targets) between an episode run first and one run after another.
        mujoco.mj_resetData(self._model, self._data)
        self._obs = self.env.reset()
        self._data.qacc_warmstart[:] = 0.0
        for robot in self.env.robots:
            robot.composite_controller.reset()
        gripper = self.env.robots[0].gripper["right"]
        self._grip_site = self._model.site(gripper.important_sites["grip_site"]).id

    def step(self, action: np.ndarray) -> None:
        action = np.asarray(action, np.float64)
        if action.shape != (self.emb.action_dim,):
            raise ValueError(f"{self.emb.name}: action must have shape ({self.emb.action_dim},), got {action.shape}")
        self._obs, _, _, _ = self.env.step(action)

    def render(self) -> np.ndarray:
        """(128, 128, 3) uint8 RGB from :data:`CAMERA`."""
        self._renderer.update_scene(self._data, camera=self._camera, scene_option=self._scene_opt)
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()
        self.env.close()

    # ------------------------------------------------------------ state for policies
    def success(self) -> bool:
        return bool(self.env._check_success())

    def joint_pos(self) -> np.ndarray:
        return self._data.qpos[self._qpos_idx].copy()

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Grip site position (3,) and rotation matrix (3, 3) in the world frame."""
        return self._data.site_xpos[self._grip_site].copy(), self._data.site_xmat[self._grip_site].reshape(3, 3).copy()

    def objects(self) -> dict[str, np.ndarray]:
        """World positions of the task's objects: ``pick`` (what to grasp), ``place`` (where to)."""
        o = self._obs
        if self.task == "Lift":
            pick = o["cube_pos"]
            return {"pick": pick.copy(), "place": pick + np.array([0.0, 0.0, 0.15])}
        if self.task == "Stack":
            return {"pick": o["cubeA_pos"].copy(), "place": o["cubeB_pos"] + np.array([0.0, 0.0, 0.05])}
        raise ValueError(f"no scripted objects for task {self.task!r}")

    def ik_step(self, target_pos: np.ndarray, target_rot: np.ndarray, max_dq: float = 0.08) -> np.ndarray:
        """Joint target that moves the grip site toward a pose: one damped least-squares step."""
        pos, rot = self.eef_pose()
        jacp = np.zeros((3, self._model.nv))
        jacr = np.zeros((3, self._model.nv))
        mujoco.mj_jacSite(self._model, self._data, jacp, jacr, self._grip_site)
        J = np.vstack([jacp[:, self._dof_idx], jacr[:, self._dof_idx]])  # (6, dof)
        err_p = target_pos - pos
        err_r = 0.5 * sum(np.cross(rot[:, i], target_rot[:, i]) for i in range(3))
        err = np.concatenate([np.clip(err_p, -0.05, 0.05), 0.5 * err_r])
        lam = 0.05
        dq = J.T @ np.linalg.solve(J @ J.T + lam**2 * np.eye(6), err)
        dq = np.clip(dq, -max_dq, max_dq)
        q = self.joint_pos() + dq
        lo, hi = self._model.jnt_range[self.env.robots[0]._ref_joint_indexes].T
        limited = self._model.jnt_limited[self.env.robots[0]._ref_joint_indexes].astype(bool)
        return np.where(limited, np.clip(q, lo, hi), q)

    def osc_action(self, target_pos: np.ndarray, gripper: float) -> np.ndarray:
        """OSC delta action toward ``target_pos`` (orientation held), in [-1, 1]."""
        pos, _ = self.eef_pose()
        dpos = np.clip((target_pos - pos) / 0.05, -1.0, 1.0)
        return np.concatenate([dpos, np.zeros(3), [gripper]])
