"""hma_ros.data."""
