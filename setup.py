"""ament_python build for tinygpt_ros (colcon) that also works with plain pip."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "tinygpt_ros"


def tree(src: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file under `src` into share/<pkg>/<src>/..."""
    entries = []
    for root, _dirs, files in os.walk(src, followlinks=True):  # colcon symlinks into build/
        paths = [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        if paths:
            entries.append((os.path.join("share", PACKAGE, root), paths))
    return entries

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        *tree("models"),
        *tree("sample"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="tinygpt_ros maintainers",
    maintainer_email="maintainers@tinygpt-ros.dev",
    description="Adaptive-compute vision-language perception (STTF + ANC) for ROS 2 edge robots",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "tinygpt-ros = tinygpt_ros.cli:main",
            "tinygpt_node = tinygpt_ros.ros.node:main",
            "lifecycle_manager = tinygpt_ros.ros.manager:main",
            "edge_bringup = tinygpt_ros.ros.bringup:main",
        ],
    },
)
