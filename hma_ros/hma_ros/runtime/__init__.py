"""hma_ros.runtime."""
