"""hma_ros.nodes."""
