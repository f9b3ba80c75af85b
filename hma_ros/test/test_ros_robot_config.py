"""Robot configs: the shipped ones load, and broken ones are refused naming the field."""

import copy

import pytest
import yaml

from hma_ros.paths import robot_config_path
from hma_ros.runtime.robot_config import RobotConfigError, load_robot_config, parse_robot_config

ROBOTS = {"franka": (20.0, 8), "ur5e": (10.0, 7), "iiwa": (20.0, 8), "kinova3": (40.0, 8), "pusht": (10.0, 2)}


@pytest.mark.parametrize("robot", sorted(ROBOTS))
def test_shipped_configs_load(robot):
    cfg = load_robot_config(robot)
    hz, dim = ROBOTS[robot]
    assert (cfg.robot, cfg.control_hz, cfg.action_dim) == (robot, hz, dim)
    assert cfg.stride == int(hz / 2)
    assert cfg.path == robot_config_path(robot)


def test_franka_matches_the_recording_topics():
    cfg = load_robot_config("franka")
    assert cfg.camera.topic == "/camera/image_raw"
    assert (cfg.camera.encoding, cfg.camera.width, cfg.camera.height) == ("rgb8", 128, 128)
    assert (cfg.action.source, cfg.action.topic) == ("command", "/joint_command")
    assert cfg.action.names[:7] == tuple(f"panda_joint{i}" for i in range(1, 8))


@pytest.fixture
def franka_dict():
    return yaml.safe_load(robot_config_path("franka").read_text())


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("control_hz"), "control_hz: missing"),
        (lambda d: d.update(control_hz=15), "control_hz: 15.0 must be a multiple"),
        (lambda d: d["camera"].update(encoding="yuv422"), "camera.encoding: 'yuv422'"),
        (lambda d: d["camera"].update(width=0), "camera.width: must be positive"),
        (lambda d: d["camera"].update(topic="camera"), "camera.topic: 'camera' is not an absolute"),
        (lambda d: d["action"].update(source="imu"), "action.source: 'imu'"),
        (lambda d: d["action"].update(names=[]), "action.names"),
        (lambda d: d["action"].update(names=["a", "a"]), "action.names: duplicate"),
        (lambda d: d["model"].update(checkpoint=""), "model.checkpoint: expected a folder or null"),
        (lambda d: d["model"].update(checkpoint=3), "model.checkpoint: expected a folder or null"),
        (lambda d: d.update(cammera={}), "unknown fields \\['cammera'\\]"),
        (lambda d: d.update(embodiment="my-robot"), "embodiment: 'my-robot'"),
    ],
)
def test_bad_fields_are_named(franka_dict, edit, field):
    d = copy.deepcopy(franka_dict)
    edit(d)
    with pytest.raises(RobotConfigError, match=f"x.yaml: {field}"):
        parse_robot_config(d, "x.yaml")


def test_missing_robot_lists_the_available_ones():
    with pytest.raises(RobotConfigError, match=r"robots available: .*franka"):
        load_robot_config("no_such_robot")


def test_load_by_path(tmp_path, franka_dict):
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump({**franka_dict, "robot": "mine"}))
    assert load_robot_config(p).robot == "mine"
    p.write_text("robot: [unclosed")
    with pytest.raises(RobotConfigError, match="not valid YAML"):
        load_robot_config(p)


@pytest.mark.parametrize("robot", sorted(ROBOTS))
def test_configs_agree_with_the_simulated_embodiments(robot):
    """Training data comes from hma_ros.sim: the robot config must describe the same actions."""
    sim = pytest.importorskip("hma_ros.sim.embodiments")
    emb = sim.get_embodiment(robot)
    cfg = load_robot_config(robot)
    assert cfg.embodiment == emb.name
    assert cfg.control_hz == emb.control_hz
    assert cfg.action.names == emb.action_names


@pytest.mark.parametrize("robot", sorted(ROBOTS))
def test_every_shipped_config_names_a_model_that_knows_it_or_none(robot):
    """`robot:=X` must configure with X's default model, or say there is none and how to get one
    (kinova3 used to name hma_franka, which does not know kinova3: configure failed)."""
    cfg = load_robot_config(robot)
    if not cfg.checkpoint:
        with pytest.raises(RobotConfigError, match=f"robot {robot} names no default model.*post-train"):
            cfg.checkpoint_path()
        return
    from hma_ros.model.checkpoint import load_model

    spec = load_model(cfg.checkpoint_path()).config.embodiment(cfg.embodiment)  # KeyError if unknown
    assert (spec.action_dim, spec.stride) == (cfg.action_dim, cfg.stride)
