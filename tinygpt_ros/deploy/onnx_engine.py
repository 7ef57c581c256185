"""Streaming TinyGPT on onnxruntime (the deployment backend: CPU, CUDA, TensorRT on a Jetson).

The streaming control flow is `streaming.StreamingEngine`, the same as the torch engine's; the
networks are the ONNX graphs written by `tinygpt-ros export` (see `export.py` for each graph's
inputs and outputs). STTF caches, references, token selection, the router's hysteresis and the
temporal fusion (data-dependent ToMe loop) run in numpy (`ops/`). Importing this module does
not import torch.

Loading checks every file it uses against the manifest (sha256 and size: the graphs, the
weights file they share and the fusion embedding), that the export was made from the
manifest's `model.pt`, and each graph's input/output names; any mismatch, or no export at all,
raises `weights.ModelLoadError` naming the file and the manifest entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros import ops
from tinygpt_ros.deploy.graphs import (
    FUSION_FILE,
    PRECISIONS,
    graph_file,
    graph_names,
    graph_spec,
)
from tinygpt_ros.deploy.providers import (
    CPU,
    TRT,
    ProviderChoice,
    TensorRTOptions,
    TrtEngineCache,
    choose_providers,
    provider_options,
)
from tinygpt_ros.model.weights import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelLoadError,
    load_manifest,
    parse_manifest,
    verify_files,
)
from tinygpt_ros.ops.beam import best_finished, expand_beams
from tinygpt_ros.runtime.gpu_share import GPU_PROVIDERS, choose_gpu_timing, probe_nvml
from tinygpt_ros.runtime.streaming import StreamingEngine
from tinygpt_ros.spec.config import Knobs, ModelConfig
from tinygpt_ros.spec.tokenizer import Tokenizer
from tinygpt_ros.spec.types import EVENT_DTYPE

log = logging.getLogger(__name__)

class OnnxKernels:
    """`streaming.Kernels` on onnxruntime sessions (one per graph)."""

    def __init__(self, sessions: dict[str, Any], cfg: ModelConfig, tokenizer: Tokenizer,
                 time_embed: np.ndarray, beam_size: int = 1) -> None:
        self.sessions = sessions
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.time_embed = np.asarray(time_embed, np.float32)
        if self.time_embed.shape != (cfg.temporal_window, cfg.dim):
            raise ValueError(f"time_embed must be ({cfg.temporal_window}, {cfg.dim}), got "
                             f"{self.time_embed.shape}")
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be an int >= 1, got {beam_size!r}")
        self.beam_size = beam_size
        self._inputs = {n: [i.name for i in s.get_inputs()] for n, s in sessions.items()}

    def _run(self, name: str, *arrays: np.ndarray) -> list[np.ndarray]:
        return self.sessions[name].run(None, dict(zip(self._inputs[name], arrays, strict=True)))

    def close(self) -> None:
        self.sessions.clear()

    # -------------------------------------------------------------- encoder

    def embed_frame(self, x: np.ndarray) -> np.ndarray:
        return self._run("embed_frames", x[None].astype(np.float32, copy=False))[0][0]

    def embed_events(self, hist: np.ndarray) -> np.ndarray:
        return self._run("embed_events", hist[None].astype(np.float32, copy=False))[0][0]

    def new_encoder_state(self) -> ops.StackedEncoderCache:
        return ops.StackedEncoderCache()

    def run_encoder(self, state: ops.StackedEncoderCache, tokens: np.ndarray,
                    selected: np.ndarray | None, branch: int) -> tuple[np.ndarray, int]:
        if isinstance(branch, bool) or not 0 <= int(branch) < len(self.cfg.branch_depths):
            raise ValueError(f"branch must be in [0, {len(self.cfg.branch_depths) - 1}], got "
                             f"{branch}")
        name = f"encoder_b{int(branch)}"

        def step(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
            return tuple(self._run(name, *arrays))  # type: ignore[return-value]

        out = state.run(step, tokens, selected, self.cfg.branch_depths[int(branch)],
                        self.cfg.heads)
        return out, state.n_recomputed

    def router_logits(self, features: np.ndarray) -> np.ndarray:
        return self._run("router", np.asarray(features, np.float32)[None])[0][0]

    def fuse(self, window: np.ndarray, max_tokens: int | None,
             static_threshold: float) -> ops.Fused:
        return ops.temporal_fusion(window, self.time_embed, max_tokens, static_threshold,
                                   self.cfg.fusion_pos_weight)

    def gesture_logits(self, tokens: np.ndarray, sizes: np.ndarray,
                       positions: np.ndarray) -> np.ndarray:
        return self._run("gesture_head", tokens[None].astype(np.float32),
                         sizes[None].astype(np.float32),
                         positions[None].astype(np.float32))[0][0]

    # -------------------------------------------------------------- decoder

    def _prefill(self, tokens: np.ndarray, sizes: np.ndarray,
                 positions: np.ndarray | None) -> list[np.ndarray]:
        ids = np.full((1, 1), self.tokenizer.bos_id, np.int64)
        pos = ()
        if self.cfg.decoder_geometry:
            if positions is None or np.shape(positions) != (len(tokens), 3):
                raise ValueError(f"positions must be ({len(tokens)}, 3): this decoder reads the "
                                 f"tokens' (x, y, t) centroids; got "
                                 f"{None if positions is None else np.shape(positions)}")
            pos = (np.asarray(positions, np.float32)[None],)
        return self._run("decoder_prefill", tokens[None].astype(np.float32),
                         sizes[None].astype(np.float32), *pos, ids)

    def _step(self, feed: np.ndarray, position: int, past: Sequence[np.ndarray]):
        return self._run("decoder_step", feed.astype(np.int64), np.array([position], np.int64),
                         *past)

    def generate(self, tokens: np.ndarray, sizes: np.ndarray,
                 positions: np.ndarray | None = None) -> list[int]:
        """Greedy or beam decoding with the KV cache: the same rules as `TinyGPTDecoder`."""
        if self.beam_size > 1:
            return self._beam(tokens, sizes, positions)
        return self._greedy(tokens, sizes, positions).finish()

    def start_decode(self, tokens: np.ndarray, sizes: np.ndarray,
                     positions: np.ndarray | None = None) -> ops.StepwiseGreedy | None:
        """A greedy decode the engine advances one decoder pass at a time (`ops.stepwise`);
        None with beam search, which decodes in one call."""
        return None if self.beam_size > 1 else self._greedy(tokens, sizes, positions)

    def _greedy(self, tokens: np.ndarray, sizes: np.ndarray,
                positions: np.ndarray | None) -> ops.StepwiseGreedy:
        def prefill() -> tuple[np.ndarray, list[np.ndarray]]:
            logits, *past = self._prefill(tokens, sizes, positions)
            return logits[0], past

        def step(token: int, position: int, past: list[np.ndarray]
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
            logits, *past = self._step(np.array([token]), position, past)
            return logits[0], past

        tok = self.tokenizer
        return ops.StepwiseGreedy(prefill, step, tok.bos_id, tok.eos_id, self.cfg.max_caption_len)

    def _beam(self, tokens: np.ndarray, sizes: np.ndarray, positions: np.ndarray | None,
              alpha: float = 1.0) -> list[int]:
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        max_len, width = self.cfg.max_caption_len, self.beam_size
        logits, *past = self._prefill(tokens, sizes, positions)
        seqs: list[list[int]] = [[]]
        scores = np.zeros(1, np.float32)
        finished: list[tuple[float, list[int]]] = []
        v = logits.shape[-1]
        position = 1
        for t in range(max_len):
            z = logits.astype(np.float32)
            logp = z - z.max(-1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
            logp[:, bos] = -np.inf
            cand = (scores[:, None] + logp).reshape(-1)
            top = np.argsort(-cand, kind="stable")[: min(2 * width, cand.size)]
            ranked = ((float(cand[i]), i) for i in top.tolist())
            beams, done = expand_beams(ranked, seqs, v, eos, width, t, max_len, alpha, finished)
            if done:
                break
            seqs, parents, next_tok = beams.seqs, beams.parents, beams.tokens
            scores = np.array(beams.scores, np.float32)
            sel = np.array(parents, np.int64)
            past = [past[0][:, sel], past[1][:, sel], past[2][sel]]
            logits, *past = self._step(np.array(next_tok), position, past)
            position += 1
        return best_finished(finished)


# ---------------------------------------------------------------------------- loading


def _stale_or_missing(d: Path, manifest: dict[str, Any], names: Sequence[str],
                      precision: str) -> None:
    files = manifest["files"]
    missing = [n for n in names if n not in files]
    if missing:
        raise ModelLoadError(
            f"model directory {d}: no ONNX export for precision {precision} (manifest "
            f"{d / MANIFEST_FILE} has no files[{missing[0]!r}]"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + f"); run `tinygpt-ros export --model {d} --precision {precision}` first"
        )
    source = files.get(MODEL_FILE, {}).get("sha256")
    for n in names:
        made_from = files[n].get("source_sha256")
        if source and made_from and made_from != source:
            raise ModelLoadError(
                f"model file {d / n}: exported from another model.pt (manifest files[{n!r}]"
                f".source_sha256={made_from}, files[{MODEL_FILE!r}].sha256={source}); run "
                f"`tinygpt-ros export --model {d}` again"
            )


def _external_data_files(d: Path, manifest: dict[str, Any], graphs: Sequence[str]) -> list[str]:
    """The weights files the graphs keep their initializers in (`shared_weights.py`), as their
    manifest entries name them, so they are verified like the graphs before onnxruntime reads
    them. An export from before shared weights names none (its graphs hold their weights)."""
    shared: list[str] = []
    for rel in graphs:
        name = manifest["files"][rel].get("external_data")
        if name is None:
            continue
        if not isinstance(name, str) or not name:
            raise ModelLoadError(f"model manifest {d / MANIFEST_FILE}: files[{rel!r}]"
                                 f".external_data must be a file name, found {name!r}")
        if name not in shared:
            shared.append(name)
    return shared


def _check_io(path: Path, entry_name: str, sess: Any, name: str, cfg: ModelConfig) -> None:
    spec = graph_spec(name, cfg)
    got_in = [i.name for i in sess.get_inputs()]
    got_out = [o.name for o in sess.get_outputs()]
    if got_in != list(spec["inputs"]) or got_out != list(spec["outputs"]):
        raise ModelLoadError(
            f"model file {path}: graph I/O {got_in} -> {got_out} does not match what this "
            f"version expects, {list(spec['inputs'])} -> {list(spec['outputs'])} (manifest "
            f"files[{entry_name!r}]); run `tinygpt-ros export` with this version"
        )


class OnnxEngine(StreamingEngine):
    """Engine on onnxruntime; implements `types.Engine` with the torch engine's records."""

    backend = "onnxruntime"

    def __init__(self, kernels: OnnxKernels, tokenizer: Tokenizer, gesture_classes: list[str],
                 knobs: Knobs | None = None, precision: str = "fp32",
                 provider_choice: ProviderChoice | None = None) -> None:
        super().__init__(kernels, tokenizer, gesture_classes, knobs)
        self.precision = precision
        self.provider_choice = provider_choice
        on_gpu = any(p in GPU_PROVIDERS for p in self.providers[:1])
        self.use_gpu_timing(choose_gpu_timing("onnxruntime", providers=self.providers,
                                              nvml=on_gpu and probe_nvml()))

    @property
    def providers(self) -> list[str]:
        """Execution providers the sessions run on, in order of preference."""
        return list(self.provider_choice.selected) if self.provider_choice else [CPU]

    @property
    def intra_op_threads(self) -> int:
        """The sessions' intra_op_num_threads as onnxruntime holds it (0 = its default)."""
        sessions = list(self.kernels.sessions.values())  # type: ignore[attr-defined]
        return int(sessions[0].get_session_options().intra_op_num_threads) if sessions else 0

    @classmethod
    def from_dir(
        cls,
        model_dir: str | os.PathLike[str],
        precision: str = "fp32",
        providers: Sequence[str] | None = None,
        knobs: Knobs | None = None,
        beam_size: int = 1,
        threads: int | None = None,
        device: str | None = None,
        tensorrt: TensorRTOptions | None = None,
        available_providers: Sequence[str] | None = None,
        logger: Callable[[str], None] | None = None,
    ) -> OnnxEngine:
        """Load `<model_dir>/onnx/<precision>/*.onnx` and their weights.bin (`tinygpt-ros export`).

        providers: order of preference, e.g. [TensorrtExecutionProvider, CUDAExecutionProvider,
        CPUExecutionProvider] (default: CPU only); unavailable ones are dropped with one warning.
        threads: onnxruntime intra-op threads (None = its default). device: "cuda:N" picks the
        GPU for CUDA/TensorRT. tensorrt: engine/timing cache, fp16 and workspace options.
        """
        import onnxruntime as ort

        warn = logger or log.warning
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        d = Path(model_dir)
        manifest = load_manifest(d)
        cfg, tokenizer, classes = parse_manifest(d, manifest)
        names = graph_names(cfg)
        graphs = [graph_file(n, precision) for n in names]
        _stale_or_missing(d, manifest, [*graphs, FUSION_FILE], precision)
        files = [*graphs, *_external_data_files(d, manifest, graphs), FUSION_FILE]
        _stale_or_missing(d, manifest, files, precision)
        try:
            verify_files(d, files, manifest)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc}; run `tinygpt-ros export --model {d} --precision "
                                 f"{precision}` to write the ONNX files again") from exc
        try:
            with open(d / FUSION_FILE, "rb") as f:
                time_embed = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"model file {d / FUSION_FILE}: cannot be read as .npy ({exc}) "
                                 f"although it matches manifest files[{FUSION_FILE!r}]") from exc
        if time_embed.shape != (cfg.temporal_window, cfg.dim):
            raise ModelLoadError(
                f"model file {d / FUSION_FILE}: shape {time_embed.shape}, the manifest's config "
                f"needs ({cfg.temporal_window}, {cfg.dim}) (files[{FUSION_FILE!r}])"
            )

        available = (list(available_providers) if available_providers is not None
                     else ort.get_available_providers())
        choice = choose_providers(providers, available)
        if choice.warning:
            warn(choice.warning)
        device_id = 0
        if device not in (None, "cpu", "cuda"):
            tail = str(device).removeprefix("cuda:")
            if not (str(device).startswith("cuda:") and tail.isdigit()):
                raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
            device_id = int(tail)
        trt = tensorrt or TensorRTOptions(fp16=precision == "fp16")
        cache = None
        if TRT in choice.selected:
            cache = TrtEngineCache.for_model(trt, manifest, precision, ort.__version__, warn=warn)
            cache.prepare()

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Every session has its own intra-op pool, whose threads spin for a while after each run
        # by default; with several sessions called in turn per frame the idle pools' spinning
        # took the cores from the running one (the shipped model at 2 threads, a 640x480 slow
        # clip: p50 11-12 ms per frame spinning, 2.6-3.2 ms not). At 1 thread there is no pool.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1

        def build() -> dict[str, Any]:
            sessions: dict[str, Any] = {}
            for name in names:
                rel = graph_file(name, precision)
                prov_opts = [provider_options(p, cfg=cfg, graph=name, device_id=device_id,
                                              tensorrt=trt, cache=cache)
                             for p in choice.selected]
                try:
                    sess = ort.InferenceSession(str(d / rel), opts, providers=list(choice.selected),
                                                provider_options=prov_opts)
                except Exception as exc:  # onnxruntime raises its own exception types
                    raise ModelLoadError(
                        f"model file {d / rel}: onnxruntime cannot load it ({type(exc).__name__}: "
                        f"{exc}) although it matches manifest files[{rel!r}]"
                    ) from exc
                _check_io(d / rel, rel, sess, name, cfg)
                sessions[name] = sess
            return sessions

        try:
            sessions = build()
        except ModelLoadError:
            if cache is None or cache.is_empty:
                raise
            cache.discard("onnxruntime failed to load it (corrupt or incompatible engines)")
            sessions = build()
        kernels = OnnxKernels(sessions, cfg, tokenizer, time_embed, beam_size=beam_size)
        engine = cls(kernels, tokenizer, classes, knobs, precision=precision,
                     provider_choice=choice)
        if cache is not None:
            engine._warm_up()
            cache.commit()
        return engine

    def _warm_up(self) -> None:
        """One frame and one event window, so TensorRT builds every engine before `commit`."""
        self.process_frame(np.zeros((32, 32, 3), np.uint8))
        self.process_events(np.zeros(0, EVENT_DTYPE))
        self.reset()
