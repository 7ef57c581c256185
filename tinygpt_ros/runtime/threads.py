"""Thread limits owned by the process, not by its environment.

A node started by `ros2 launch` has no OMP_NUM_THREADS: numpy's BLAS (OpenBLAS), OpenMP (torch)
and onnxruntime's own pool each start one busy thread per core, and on a small edge CPU they
spin against each other (measured: the numpy fusion stage 12x slower, STTF frames slower than
dense ones). `apply_thread_limits` sets all of them from parameters:

- `blas_threads` caps every BLAS / OpenMP pool loaded in the process, through threadpoolctl
  (OpenBLAS's limit is process-wide; an OpenMP limit is per calling thread, so call this from
  the thread that computes as well), and OpenCV's pool (image resizing) when cv2 is loaded.
- `intra_op_threads` is torch's intra-op pool (`torch.set_num_threads`, only when torch is
  already loaded: the onnxruntime path never imports it); onnxruntime takes the same number
  through its session options (`onnx_engine.OnnxEngine.from_dir(threads=...)`).

0 leaves a pool at its library default. The defaults were picked by measuring the node on 2
cores (docs/benchmarks.md, "node"): one thread each, because the per-frame matrices are small
and the node's worker thread, the ROS executor and the camera driver share the same cores.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

DEFAULT_BLAS_THREADS = 1
DEFAULT_INTRA_OP_THREADS = 1


@dataclass(frozen=True)
class ThreadReport:
    """What the limits look like after applying them (the libraries' own answers)."""

    blas_threads: int  # requested (0 = library default)
    intra_op_threads: int  # requested (0 = library default)
    pools: tuple[dict[str, Any], ...]  # threadpoolctl.threadpool_info(): api, library, threads
    torch_threads: int | None  # torch.get_num_threads() when torch is loaded
    opencv_threads: int | None  # cv2.getNumThreads() when OpenCV is loaded

    def pool_threads(self, user_api: str) -> list[int]:
        """num_threads of every loaded pool of one kind ("blas" or "openmp")."""
        return [int(p["num_threads"]) for p in self.pools if p.get("user_api") == user_api]

    def summary(self) -> str:
        """One line for logs and diagnostics, e.g. `blas_threads=1 intra_op_threads=1; blas
        openblas:1 openmp - opencv 1 torch -`."""
        def pools(api: str) -> str:
            found = [f"{p.get('internal_api')}:{p.get('num_threads')}" for p in self.pools
                     if p.get("user_api") == api]
            return ",".join(found) or "-"

        def num(v: int | None) -> str:
            return "-" if v is None else str(v)

        return (f"blas_threads={self.blas_threads} intra_op_threads={self.intra_op_threads}; "
                f"blas {pools('blas')} openmp {pools('openmp')} "
                f"opencv {num(self.opencv_threads)} torch {num(self.torch_threads)}")


def _check(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (0 = library default), got {value!r}")
    return value


def apply_thread_limits(blas_threads: int = DEFAULT_BLAS_THREADS,
                        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS) -> ThreadReport:
    """Cap the BLAS/OpenMP pools loaded so far and torch's intra-op pool; report the result.

    Call it after the libraries are loaded (after the engine is built): threadpoolctl only sees
    what is loaded. Safe to call again (from another thread, with other values)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    blas_threads = _check("blas_threads", blas_threads)
    intra_op_threads = _check("intra_op_threads", intra_op_threads)
    if blas_threads > 0:
        # Not a context manager: the limit stays for the life of the process.
        threadpool_limits(limits=blas_threads)
    cv2 = sys.modules.get("cv2")
    opencv_threads = None
    if cv2 is not None and hasattr(cv2, "setNumThreads"):
        if blas_threads > 0:
            cv2.setNumThreads(blas_threads)
        opencv_threads = int(cv2.getNumThreads())
    torch = sys.modules.get("torch")
    torch_threads = None
    if torch is not None and hasattr(torch, "set_num_threads"):
        if intra_op_threads > 0:
            torch.set_num_threads(intra_op_threads)
        torch_threads = int(torch.get_num_threads())
    pools = tuple(
        {k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "filepath")}
        for p in threadpool_info()
    )
    return ThreadReport(blas_threads, intra_op_threads, pools, torch_threads, opencv_threads)
