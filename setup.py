"""ament_python build for tinygpt_ros (colcon) that also works with plain pip."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "tinygpt_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/models", [p for p in glob("models/*") if not p.endswith("/")]),
        (f"share/{PACKAGE}/sample", glob("sample/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="tinygpt_ros maintainers",
    maintainer_email="maintainers@tinygpt-ros.dev",
    description="Adaptive-compute vision-language perception (STTF + ANC) for ROS 2 edge robots",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "tinygpt-ros = tinygpt_ros.cli:main",
            "tinygpt_node = tinygpt_ros.ros.node:main",
            "lifecycle_manager = tinygpt_ros.ros.manager:main",
            "edge_bringup = tinygpt_ros.ros.bringup:main",
        ],
    },
)
