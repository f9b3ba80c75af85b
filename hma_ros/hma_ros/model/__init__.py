"""hma_ros.model."""
