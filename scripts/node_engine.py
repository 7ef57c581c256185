"""What the measuring scripts here share: the engine the node runs, set up as the node sets it
up (onnxruntime, the node's default BLAS and intra-op thread limits, shipped knobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_MODEL = str(Path(__file__).resolve().parents[1] / "models" / "tinygpt")


def node_engine(model_dir: str) -> Any:
    """Apply the node's thread limits to this process, then load the onnxruntime engine."""
    from tinygpt_ros.deploy.factory import load_engine
    from tinygpt_ros.runtime.threads import (
        DEFAULT_BLAS_THREADS,
        DEFAULT_INTRA_OP_THREADS,
        apply_thread_limits,
    )

    apply_thread_limits(DEFAULT_BLAS_THREADS, DEFAULT_INTRA_OP_THREADS)
    return load_engine(model_dir, "onnxruntime", threads=DEFAULT_INTRA_OP_THREADS)
