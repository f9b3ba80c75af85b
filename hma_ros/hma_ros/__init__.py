"""hma_ros: an HMA action-video world model (arXiv 2502.04296) on ROS 2.

The ROS-free core lives in ``model``, ``tokenizers``, ``data``, ``sim``, ``train``, ``eval``
and ``runtime``; only ``nodes`` imports rclpy.
"""

__version__ = "0.1.0"
