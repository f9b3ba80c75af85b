"""hma_ros.tokenizers."""
