"""hma_ros.eval."""
