"""`streaming.Kernels` for GIT on onnxruntime: the graphs of `git_export`, the gated cache in
numpy (`ops.StackedEncoderCache`), and the same numpy fusion, router and preprocessing as the
torch kernels (`git_common`, `router`). No torch here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros import ops
from tinygpt_ros.hf.git_common import (
    DEFAULT_MAX_CAPTION_LEN,
    DEFAULT_TEMPORAL_WINDOW,
    GitKernelsCommon,
    Preprocessor,
    git_model_config,
)
from tinygpt_ros.hf.router import RouterParams
from tinygpt_ros.model.weights import ModelLoadError
from tinygpt_ros.spec.config import GRID

EXPORT_DIR = "tinygpt_onnx"  # the same names as git_export (which needs torch)
EXPORT_FILE = "export.json"
# 2: git_prefill runs the first text rows with the image, git_step takes k tokens (drafts);
# 3: the cheap branch is a 7 x 7 grid (git_embed_g7, a 50-row git_vision_b0). An older export
# is refused with the command that redoes it
EXPORT_FORMAT = 3
CLS_FILE = "cls_input.npy"  # the CLS row's constant layer-0 input (row 0 of every vision step)


def weights_size(path: Path) -> int:
    return sum((path / n).stat().st_size for n in ("model.safetensors", "pytorch_model.bin")
               if (path / n).is_file())


def read_export(model_dir: str | Path) -> dict[str, Any]:
    """The checkpoint's `export.json`; ModelLoadError when there is no export or it was made
    from other weights (a replaced checkpoint)."""
    d = Path(model_dir) / EXPORT_DIR
    try:
        info = json.loads((d / EXPORT_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"checkpoint {model_dir}: no ONNX export ({d / EXPORT_FILE}: {exc}); run "
            f"`tinygpt-ros export --model {model_dir}` or use backend torch") from exc
    if info.get("format") != EXPORT_FORMAT:
        raise ModelLoadError(f"checkpoint {model_dir}: the ONNX export has format "
                             f"{info.get('format')}, this version reads {EXPORT_FORMAT}; rerun "
                             f"`tinygpt-ros export --model {model_dir}`")
    if info.get("weights_bytes") != weights_size(Path(model_dir)):
        raise ModelLoadError(f"checkpoint {model_dir}: the ONNX export was made from other "
                             "weights; rerun `tinygpt-ros export`")
    return info


class GitOnnxKernels(GitKernelsCommon):
    """GIT behind the `Kernels` protocol on onnxruntime sessions."""

    family = "git"

    def __init__(self, model_dir: str | Path, config: dict[str, Any], preprocessor: dict,
                 router: RouterParams | None = None, providers: list[str] | None = None,
                 max_caption_len: int = DEFAULT_MAX_CAPTION_LEN,
                 temporal_window: int = DEFAULT_TEMPORAL_WINDOW,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        d = Path(model_dir) / EXPORT_DIR
        info = read_export(model_dir)
        self.depths = tuple(int(x) for x in info["branch_depths"])
        self.cfg = git_model_config(config, self.depths, max_caption_len, temporal_window,
                                    tuple(int(x) for x in info["branch_grids"]))
        vconf = config["vision_config"]
        self.image_size = int(vconf.get("image_size", 224))
        self.heads = int(vconf["num_attention_heads"])
        self.pre = Preprocessor(preprocessor, self.image_size)
        self.router = router
        self.bos_id = int(config.get("bos_token_id", 101))
        eos = config.get("eos_token_id", 102)
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Each session has its own intra-op pool, whose threads by default spin for a while
        # after every run; with five sessions called in turn per frame, the idle ones' spinning
        # took the cores from the one running (GIT-base on this 2-core CPU: a gated tower step
        # of 10-17 rows took 75-100 ms instead of 28-56, a dense tower pass 525 ms instead of
        # 274)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:  # the node's intra_op_threads; None or 0: onnxruntime's default
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        have = set(ort.get_available_providers())
        prov = [p for p in (providers or []) if p in have] or ["CPUExecutionProvider"]
        names = ["git_embed", "git_prefill", "git_step"] + [
            f"git_vision_b{i}" for i in range(len(self.depths))] + [
            f"git_embed_g{g}" for g in sorted(set(self.grids) - {GRID})]
        try:
            self.sessions = {n: ort.InferenceSession(str(d / f"{n}.onnx"), opts, providers=prov)
                             for n in names}
        except Exception as exc:  # onnxruntime raises its own types for missing/corrupt files
            raise ModelLoadError(f"checkpoint {model_dir}: ONNX graphs unreadable ({exc}); "
                                 "rerun `tinygpt-ros export`") from exc
        self._cls = np.load(d / CLS_FILE).astype(np.float32).reshape(1, -1)
        self.change_scale = self.measure_change_scale()

    def _run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, feeds)

    def close(self) -> None:
        self.sessions.clear()

    def embed_frame(self, x: np.ndarray) -> np.ndarray:
        return self._run("git_embed", pixels=np.ascontiguousarray(x[None], np.float32))[0]

    def embed_grid(self, pooled: np.ndarray, grid: int) -> np.ndarray:
        return self._run(f"git_embed_g{grid}",
                         pixels=np.ascontiguousarray(pooled[None], np.float32))[0]

    def new_encoder_state(self) -> ops.StackedEncoderCache:
        return ops.StackedEncoderCache()

    def run_encoder(self, state: ops.StackedEncoderCache, tokens: np.ndarray,
                    selected: np.ndarray | None, branch: int,
                    pixels: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        rows, sel_rows, grid = self.branch_input(tokens, selected, branch, pixels)
        x = np.concatenate([self._cls, np.asarray(rows, np.float32)])
        sel = None if sel_rows is None else np.concatenate([[True], sel_rows])
        name = f"git_vision_b{branch}"

        def step(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
            t, i, k, v, y = arrays
            return tuple(self._run(name, tokens=t, idx=i, cache_k=k, cache_v=v, cache_y=y))

        out = state.run(step, x, sel, self.depths[branch], self.heads)
        n = len(rows) if state.last_dense else state.n_recomputed - 1
        return self.branch_output(out, grid, n)

    def first_pass(self, vis: np.ndarray, log_size: np.ndarray, ids: np.ndarray,
                   position: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self._run("git_prefill", vis=vis, log_size=log_size, ids=ids,
                               position=position))

    def next_pass(self, ids: np.ndarray, position: np.ndarray, past_k: np.ndarray,
                  past_v: np.ndarray, key_bias: np.ndarray) -> tuple[np.ndarray, ...]:
        c = np.ascontiguousarray  # a rewound cache is a slice
        return tuple(self._run("git_step", ids=ids, position=position, past_k=c(past_k),
                               past_v=c(past_v), key_bias=c(key_bias)))
