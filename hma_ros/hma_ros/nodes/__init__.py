"""hma_ros.nodes: the only package that imports rclpy (the ROS shell around hma_ros.runtime).

Process-wide setting for the node processes, made here because it must precede torch's import:
libgomp (torch's OpenMP runtime) reads ``GOMP_SPINCOUNT`` when torch loads it. Its default
(300,000 spins) makes an idle OpenMP thread burn its time slice waiting for the next op; beside
other busy processes a 2-thread rollout step then took 1.8 s instead of 0.06 s, and the worker's
cost model refused every rollout (docs/executors.md). 10,000 spins keep the quiet-machine speed
and let the waiting thread sleep when the core is contended. An explicit setting wins.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")
