"""Robot configs (``config/robots/<robot>.yaml``): what the world model node needs to know
about a robot — its topics, joints, native rate, camera and default checkpoint.

ROS-free: the node reads these, and so can data importers and tests. The schema is pinned in
docs/architecture.md ("Robot configs"); every error names the file and the bad field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hma_ros.paths import robot_config_path, share_dir

#: The model's clock (hma_ros.model.config.MODEL_HZ; repeated here to keep this module light).
MODEL_HZ = 2.0
#: Camera encodings the nodes convert (hma_ros.nodes.convert.ENCODINGS).
CAMERA_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
#: Where the raw actions come from: the positions of a JointState command topic (what the
#: controller was told), or of /joint_states (what the robot did).
ACTION_SOURCES = ("command", "joint_states")


class RobotConfigError(ValueError):
    """A robot config that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class CameraSpec:
    """The camera topic the model watches. width/height: what the camera publishes (the node
    fits any size to the model's resolution with ``fit_image``, these document the robot)."""

    topic: str
    encoding: str
    width: int
    height: int
    frame_id: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """Raw actions at the native rate: JointState positions of ``names`` (in the model's order)."""

    source: str
    topic: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class RobotConfig:
    robot: str
    embodiment: str
    control_hz: float
    camera: CameraSpec
    action: ActionSpec
    checkpoint: str  # relative to the share dir, or absolute; "" = no default model
    path: Path | None = None

    @property
    def action_dim(self) -> int:
        return len(self.action.names)

    @property
    def stride(self) -> int:
        """Native actions per 2 Hz model step."""
        return int(round(self.control_hz / MODEL_HZ))

    def checkpoint_path(self) -> Path:
        """The default model's folder; RobotConfigError (saying how to get one) if it names none."""
        if not self.checkpoint:
            raise RobotConfigError(
                f"robot {self.robot} names no default model ({self.path or 'its config'}: model.checkpoint is null): "
                f"no shipped model knows embodiment {self.embodiment!r}. Pass a checkpoint (checkpoint:=DIR), or "
                f"post-train one on the shipped trunk as the README's 'Post-train a new robot' shows"
            )
        p = Path(self.checkpoint).expanduser()
        return p if p.is_absolute() else share_dir() / p


def _get(d: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(d, dict):
        raise RobotConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    if key not in d:
        raise RobotConfigError(f"{where}{key}: missing")
    value = d[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RobotConfigError(f"{where}{key}: expected {names}, got {value!r}")
    return value


def _topic(value: str, field: str) -> str:
    if not value.startswith("/") or " " in value or value.endswith("/"):
        raise RobotConfigError(f"{field}: {value!r} is not an absolute ROS topic name")
    return value


def parse_robot_config(data: Any, source: str = "<robot config>") -> RobotConfig:
    """Validate a parsed YAML document; ``source`` prefixes every error message."""
    w = f"{source}: "
    if not isinstance(data, dict):
        raise RobotConfigError(f"{w}expected a mapping at the top level, got {type(data).__name__}")
    known = {"robot", "embodiment", "control_hz", "camera", "action", "model"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RobotConfigError(f"{w}unknown fields {unknown} (known: {sorted(known)})")
    robot = _get(data, "robot", w, str)
    embodiment = _get(data, "embodiment", w, str)
    if not embodiment.isidentifier():
        raise RobotConfigError(f"{w}embodiment: {embodiment!r} must be a Python identifier")
    hz = float(_get(data, "control_hz", w, (int, float)))
    ratio = hz / MODEL_HZ
    if not math.isfinite(hz) or hz < MODEL_HZ or abs(ratio - round(ratio)) > 1e-6:
        raise RobotConfigError(f"{w}control_hz: {hz} must be a multiple of the {MODEL_HZ} Hz model clock")

    cam = _get(data, "camera", w, dict)
    wc = f"{w}camera."
    encoding = _get(cam, "encoding", wc, str)
    if encoding not in CAMERA_ENCODINGS:
        raise RobotConfigError(f"{wc}encoding: {encoding!r} is not one of {list(CAMERA_ENCODINGS)}")
    width, height = _get(cam, "width", wc, int), _get(cam, "height", wc, int)
    for name, v in (("width", width), ("height", height)):
        if v < 1:
            raise RobotConfigError(f"{wc}{name}: must be positive, got {v}")
    camera = CameraSpec(
        topic=_topic(_get(cam, "topic", wc, str), f"{wc}topic"),
        encoding=encoding,
        width=width,
        height=height,
        frame_id=str(cam.get("frame_id", "")),
    )

    act = _get(data, "action", w, dict)
    wa = f"{w}action."
    src = _get(act, "source", wa, str)
    if src not in ACTION_SOURCES:
        raise RobotConfigError(f"{wa}source: {src!r} is not one of {list(ACTION_SOURCES)}")
    names = _get(act, "names", wa, list)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise RobotConfigError(f"{wa}names: expected a non-empty list of joint names, got {names!r}")
    if len(set(names)) != len(names):
        raise RobotConfigError(f"{wa}names: duplicate names in {names!r}")
    action = ActionSpec(source=src, topic=_topic(_get(act, "topic", wa, str), f"{wa}topic"), names=tuple(names))

    model = _get(data, "model", w, dict)
    checkpoint = model.get("checkpoint")
    if checkpoint is not None and (not isinstance(checkpoint, str) or not checkpoint):
        raise RobotConfigError(f"{w}model.checkpoint: expected a folder or null (no default model), got {checkpoint!r}")
    return RobotConfig(robot, embodiment, hz, camera, action, checkpoint or "")


def load_robot_config(robot_or_path: str | Path) -> RobotConfig:
    """Load ``config/robots/<robot>.yaml`` by robot name, or a YAML file by path."""
    s = str(robot_or_path)
    path = Path(s) if s.endswith((".yaml", ".yml")) or "/" in s else robot_config_path(s)
    if not path.is_file():
        available = sorted(p.stem for p in robot_config_path("x").parent.glob("*.yaml"))
        raise RobotConfigError(f"robot config {path} not found (robots available: {available})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RobotConfigError(f"{path}: not valid YAML: {e}") from e
    cfg = parse_robot_config(data, str(path))
    return RobotConfig(**{**cfg.__dict__, "path": path})
