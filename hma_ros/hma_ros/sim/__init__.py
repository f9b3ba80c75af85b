"""hma_ros.sim."""
