"""The simulated embodiments: which simulator, robot, controller and native rate each one is.

Rates differ on purpose so the 2 Hz strides differ (franka 10, ur5e 5, pusht 5, ...). Names
and action names match ``config/robots/<robot>.yaml`` where a robot config exists.
"""

from __future__ import annotations

from dataclasses import dataclass

_PANDA = tuple(f"panda_joint{i}" for i in range(1, 8))
_UR5E = (
    "shoulder_pan_joint",
    "shoulder_lift_joint",
    "elbow_joint",
    "wrist_1_joint",
    "wrist_2_joint",
    "wrist_3_joint",
)
_IIWA = tuple(f"iiwa_joint_{i}" for i in range(1, 8))
_KINOVA3 = tuple(f"kinova_joint_{i}" for i in range(1, 8))
_OSC = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


@dataclass(frozen=True)
class SimEmbodiment:
    """One simulated robot as the model sees it.

    Attributes:
        name: embodiment name (a Python identifier), the dataset folder's name.
        backend: ``"robosuite"`` or ``"pusht"``.
        robot: robosuite robot class name (``"Panda"``, ``"UR5e"``, ...); unused for pusht.
        control: ``"joint"`` (absolute joint-position targets + gripper, what a ROS
            ``/joint_command`` carries) or ``"osc"`` (robosuite's end-effector delta pose
            controller, 6 numbers in [-1, 1] + gripper), or ``"pusher"`` (pusht target x, y).
        control_hz: native control (and action recording) rate.
        action_names: one name per action dimension, in order.
        tasks: robosuite environments this embodiment is generated in (first = default).
    """

    name: str
    backend: str
    robot: str
    control: str
    control_hz: float
    action_names: tuple[str, ...]
    tasks: tuple[str, ...] = ("Lift",)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)


EMBODIMENTS: dict[str, SimEmbodiment] = {
    e.name: e
    for e in (
        SimEmbodiment("franka", "robosuite", "Panda", "joint", 20.0, (*_PANDA, "gripper"), ("Lift", "Stack")),
        SimEmbodiment("ur5e", "robosuite", "UR5e", "joint", 10.0, (*_UR5E, "gripper"), ("Lift", "Stack")),
        SimEmbodiment("iiwa", "robosuite", "IIWA", "joint", 20.0, (*_IIWA, "gripper"), ("Lift", "Stack")),
        SimEmbodiment("kinova3", "robosuite", "Kinova3", "joint", 40.0, (*_KINOVA3, "gripper"), ("Lift",)),
        SimEmbodiment("franka_osc", "robosuite", "Panda", "osc", 20.0, _OSC, ("Lift", "Stack")),
        SimEmbodiment("pusht", "pusht", "", "pusher", 10.0, ("target_x", "target_y"), ("PushT",)),
    )
}


def get_embodiment(name: str) -> SimEmbodiment:
    try:
        return EMBODIMENTS[name]
    except KeyError:
        raise KeyError(f"unknown simulated embodiment {name!r}; known: {sorted(EMBODIMENTS)}") from None
