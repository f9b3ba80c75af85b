"""Start the HMA world model for one robot.

    ros2 launch hma_ros world_model.launch.py robot:=franka
    ros2 launch hma_ros world_model.launch.py robot:=ur5e checkpoint:=/path/to/ckpt backend:=onnxruntime
    ros2 launch hma_ros world_model.launch.py robot:=franka device:=cuda

The node is a lifecycle node; with autostart:=true (default) it configures and activates
itself, otherwise drive it with `ros2 lifecycle set /world_model configure|activate`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument(
            "robot", default_value="franka", description="robot config: config/robots/<robot>.yaml, or a YAML path"
        ),
        DeclareLaunchArgument(
            "checkpoint", default_value="", description="checkpoint folder; empty = the robot config's default model"
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("hma_ros"), "config", "world_model.yaml"]),
            description="YAML with the node's other parameters (horizon, limits, outputs)",
        ),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (e.g. from a bag)"),
        DeclareLaunchArgument(
            "backend", default_value="torch", description="inference backend: torch, onnxruntime or tensorrt"
        ),
        DeclareLaunchArgument("device", default_value="cpu", description="where the model runs: cpu, cuda or cuda:N"),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="configure and activate the lifecycle node at start"
        ),
    ]
    node = Node(
        package="hma_ros",
        executable="world_model",
        name="world_model",
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "robot": LaunchConfiguration("robot"),
                "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                "backend": LaunchConfiguration("backend"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
    )
    return LaunchDescription([*args, node])
