"""Which model and which machine produced a report's figures.

Why: a figure without its weights' sha256 and the machine it ran on cannot be reproduced or
compared; every report and benchmark records both.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def model_identity(model_dir: str | Path, backend: str) -> dict[str, Any]:
    """Model directory, sha256 of its weights (from the manifest) and architecture."""
    from tinygpt_ros.model.weights import MODEL_FILE, load_manifest

    info: dict[str, Any] = {"dir": str(model_dir), "backend": backend}
    try:
        manifest = load_manifest(model_dir)
    except Exception as exc:  # the engine load reports it properly; keep the report going
        info["error"] = str(exc)
        return info
    info["sha256"] = manifest.get("files", {}).get(MODEL_FILE, {}).get("sha256")
    info["config"] = manifest.get("config")
    info["command"] = manifest.get("command")
    training = manifest.get("training")
    info["preset"] = training.get("preset") if isinstance(training, dict) else None
    return info


def machine_info() -> dict[str, Any]:
    """CPU model, core count, python, platform, and the versions of the inference libraries that
    this process loaded (torch only when the run used it: the onnxruntime path never imports it)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    torch = sys.modules.get("torch")
    ort = sys.modules.get("onnxruntime")
    return {"cpu": cpu, "cores": os.cpu_count(),
            "torch": getattr(torch, "__version__", None),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "onnxruntime": getattr(ort, "__version__", None),
            "python": platform.python_version(), "platform": platform.platform()}
