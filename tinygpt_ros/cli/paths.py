"""Where the CLI finds the shipped model and the sample bag."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_model_dir() -> Path:
    """The shipped model: installed share dir when the package is installed, else the repo's."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("tinygpt_ros")) / "models" / "tinygpt"
        if share.exists():
            return share
    except Exception:  # no ament index (plain checkout): fall back to the source tree
        pass
    return REPO_ROOT / "models" / "tinygpt"


def default_sample_bag() -> Path:
    return REPO_ROOT / "sample" / "sample_bag"


def command_line() -> str:
    """The command as the user typed it, for reports and manifests."""
    import shlex
    import sys

    return "tinygpt-ros " + shlex.join(sys.argv[1:])
