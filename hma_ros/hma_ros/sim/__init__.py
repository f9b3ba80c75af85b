"""Ground-truth simulators (robosuite arms, gym-pusht) and scripted policies for data and evaluation.

Rendering is headless: MuJoCo uses ``MUJOCO_GL=egl`` (Mesa's llvmpipe on a CPU-only machine)
unless the caller already chose a backend. Set it before ``mujoco`` is imported; importing
this package does that. Images are rendered at 128x128 and stored through
:func:`hma_ros.runtime.image.fit_image`, the same path the ROS node uses for live frames.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (gym-pusht) without a display
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
