"""hma_ros.train."""
