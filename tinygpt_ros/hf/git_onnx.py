"""`streaming.Kernels` for GIT on onnxruntime: the graphs of `git_export`, the gated cache in
numpy (`ops.StackedEncoderCache`), and the same numpy fusion, router and preprocessing as the
torch kernels (`git_common`, `router`). No torch here."""

from __future__ import annotations

import json
from collections.abc import Sequence
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
from tinygpt_ros.spec.config import NUM_TOKENS

EXPORT_DIR = "tinygpt_onnx"  # the same names as git_export (which needs torch)
EXPORT_FILE = "export.json"
# 2: git_prefill runs the first text rows with the image, git_step takes k tokens (drafts);
# a format-1 export (one token per step) is refused with the command that redoes it
EXPORT_FORMAT = 2
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
        self.cfg = git_model_config(config, self.depths, max_caption_len, temporal_window)
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
            f"git_vision_b{i}" for i in range(len(self.depths))]
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

    def new_encoder_state(self) -> ops.StackedEncoderCache:
        return ops.StackedEncoderCache()

    def run_encoder(self, state: ops.StackedEncoderCache, tokens: np.ndarray,
                    selected: np.ndarray | None, branch: int) -> tuple[np.ndarray, int]:
        x = np.concatenate([self._cls, np.asarray(tokens, np.float32)])
        sel = None if selected is None else np.concatenate([[True], selected])
        name = f"git_vision_b{branch}"

        def step(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
            t, i, k, v, y = arrays
            return tuple(self._run(name, tokens=t, idx=i, cache_k=k, cache_v=v, cache_y=y))

        out = state.run(step, x, sel, self.depths[branch], self.heads)
        n = NUM_TOKENS if state.last_dense else state.n_recomputed - 1
        return out, n

    def generate(self, tokens: np.ndarray, sizes: np.ndarray) -> list[int]:
        return self.decode(tokens, sizes).ids

    def decode(self, tokens: np.ndarray, sizes: np.ndarray,
               drafts: Sequence[Sequence[int]] = ()) -> ops.Decoded:
        """`ops.greedy_decode` on the prefill and step graphs (see `git.GitKernels.decode`)."""
        log_size = np.log(np.maximum(np.asarray(sizes, np.float32), 1e-6)).astype(np.float32)
        n_vis = len(log_size)
        cache: dict[str, np.ndarray] = {}

        def run(ids: list[int], start: int) -> list[int]:
            feeds = {"ids": np.array(ids, np.int64),
                     "position": np.arange(start, start + len(ids), dtype=np.int64)}
            if start == 0:  # the image rows run with the first text rows
                out = self._run("git_prefill", vis=np.ascontiguousarray(tokens, np.float32),
                                log_size=log_size, **feeds)
            else:
                out = self._run("git_step", past_k=cache["k"], past_v=cache["v"],
                                key_bias=cache["bias"], **feeds)
            logits, cache["k"], cache["v"], cache["bias"] = out
            return logits.argmax(axis=-1).tolist()

        def rewind(n_text: int) -> None:
            keep = n_vis + n_text
            cache["k"] = np.ascontiguousarray(cache["k"][:, :, :keep])
            cache["v"] = np.ascontiguousarray(cache["v"][:, :, :keep])
            cache["bias"] = np.ascontiguousarray(cache["bias"][:keep])

        return ops.greedy_decode(run, rewind, self.bos_id, self.eos_ids,
                                 self.cfg.max_caption_len, drafts)
