"""The demo: replay the bundled franka recording into the world model.

    ros2 launch hma_ros demo.launch.py
    ros2 launch hma_ros demo.launch.py bag:=/path/to/recording.mcap robot:=ur5e rate:=0.5

Watch /hma/preview (rqt_image_view, Foxglove) and /diagnostics; call /hma/rollout.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("hma_ros")
    args = [
        DeclareLaunchArgument("robot", default_value="franka", description="robot config the recording belongs to"),
        DeclareLaunchArgument(
            "bag",
            default_value=PathJoinSubstitution([share, "data", "franka_demo.mcap"]),
            description="rosbag2 MCAP recording to replay",
        ),
        DeclareLaunchArgument("rate", default_value="1.0", description="replay speed factor"),
        DeclareLaunchArgument("loop", default_value="true", description="replay the recording in a loop"),
        DeclareLaunchArgument(
            "checkpoint", default_value="", description="checkpoint folder; empty = the robot config's default model"
        ),
        DeclareLaunchArgument("backend", default_value="torch", description="torch, onnxruntime or tensorrt"),
    ]
    world_model = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "world_model.launch.py"])),
        launch_arguments={
            "robot": LaunchConfiguration("robot"),
            "checkpoint": LaunchConfiguration("checkpoint"),
            "backend": LaunchConfiguration("backend"),
        }.items(),
    )
    replay = Node(
        package="hma_ros",
        executable="bag_replay",
        name="bag_replay",
        output="screen",
        parameters=[
            {
                "bag": LaunchConfiguration("bag"),
                "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float),
                "loop": ParameterValue(LaunchConfiguration("loop"), value_type=bool),
            }
        ],
    )
    return LaunchDescription([*args, world_model, replay])
