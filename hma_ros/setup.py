"""ament_python package setup for hma_ros (see ../shared/ROS_FROM_PYPI.md for the pip path)."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "hma_ros"
HERE = Path(__file__).resolve().parent


def tree(folder: str, dest_root: str) -> list[tuple[str, list[str]]]:
    """data_files entries mirroring ``folder`` (recursively) under ``dest_root``."""
    out: dict[str, list[str]] = {}
    for path in sorted((HERE / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(HERE)
            out.setdefault(str(Path(dest_root) / rel.parent), []).append(str(rel))
    return sorted(out.items())


# Node executables. pip ignores setup.cfg's install_scripts, so besides the console
# scripts we ship tiny sh wrappers into lib/hma_ros where `ros2 run`/launch_ros look.
NODES = ["world_model", "bag_replay"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"lib/{PACKAGE}", [f"scripts/{n}" for n in NODES]),
        *tree("launch", f"share/{PACKAGE}"),
        *tree("config", f"share/{PACKAGE}"),
        *tree("models", f"share/{PACKAGE}"),
        *tree("data", f"share/{PACKAGE}"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="hma_ros developers",
    maintainer_email="hma-ros@example.com",
    description="HMA action-video world model for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES],
    },
)
