"""Launch files and the parameter file, read (every knob is a described argument, the
executables are installed where launch_ros looks) and built with launch_ros (from
../shared/ros_tools; `ros2 launch` itself is driven in test_ros_cli.py)."""

import ast
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml

from hma_ros.paths import share_dir

LAUNCH = share_dir() / "launch"
PACKAGE = share_dir()
EXPECTED = {
    "world_model.launch.py": {"robot", "checkpoint", "params_file", "use_sim_time", "backend", "device", "autostart"},
    "demo.launch.py": {"robot", "bag", "rate", "loop", "checkpoint", "backend"},
}


def declared_arguments(path: Path) -> dict[str, str]:
    """``{name: description}`` of the DeclareLaunchArgument calls in a launch file."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            name = node.args[0].value
            kw = {k.arg: k.value for k in node.keywords}
            out[name] = kw["description"].value if "description" in kw else ""
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_argument_is_declared_and_described(name):
    args = declared_arguments(LAUNCH / name)
    assert set(args) == EXPECTED[name]
    assert all(len(desc) > 10 for desc in args.values()), args


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_files_use_installed_executables(name):
    tree = ast.parse((LAUNCH / name).read_text())
    executables = {n.value.value for n in ast.walk(tree) if isinstance(n, ast.keyword) and n.arg == "executable"}
    assert executables
    for exe in executables:  # `ros2 run`/launch_ros look in <prefix>/lib/<package>
        wrapper = Path(sys.prefix) / "lib" / "hma_ros" / exe
        assert wrapper.is_file(), wrapper
        assert os.access(wrapper, os.X_OK), wrapper
        assert f"-m hma_ros.nodes.{exe}" in wrapper.read_text()
        assert importlib.util.find_spec(f"hma_ros.nodes.{exe}") is not None


def test_parameter_file_matches_the_node():
    """Every key in config/world_model.yaml is a declared parameter of that type, and loads."""
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("hma_ros_interfaces.msg")
    from hma_ros.nodes.world_model import WorldModelNode

    path = PACKAGE / "config" / "world_model.yaml"
    params = yaml.safe_load(path.read_text())["world_model"]["ros__parameters"]
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(path), "-p", "horizon:=7"])
    try:
        node = WorldModelNode(context=ctx)
        for key, value in params.items():
            assert node.has_parameter(key), key
            expected = 7 if key == "horizon" else value
            assert node.get_parameter(key).value == expected, key
        described = node.describe_parameters(list(params))
        assert all(d.description for d in described)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launch_description_builds(name):
    pytest.importorskip("launch_ros")
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert {a.name for a in description.get_launch_arguments()} >= EXPECTED[name]
