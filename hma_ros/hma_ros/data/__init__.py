"""hma_ros.data: the on-disk dataset format, 2 Hz windows and mixtures, recordings and importers.

- :mod:`hma_ros.data.format`: ``EmbodimentDataset`` (one embodiment's folder: metadata.json
  + memory-mapped frames/actions/episode ids, validated, appendable), ``DatasetError``.
- :mod:`hma_ros.data.windows`: ``WindowDataset``, ``MixtureDataset``, ``MixtureSampler``
  (n^(1/3) temperature weighting), ``MixtureCollate``.
- :mod:`hma_ros.data.rosbag`: rosbag2 MCAP reading (``iter_messages``, ``iter_raw``) and writing.
- :mod:`hma_ros.data.importers`: MCAP (by robot config), LeRobot v3, robomimic HDF5.

No module here imports rclpy (docs/architecture.md).
"""
