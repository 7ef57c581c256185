"""onnxruntime execution providers: choice with fallback, per-provider options, TensorRT cache.

- `choose_providers(requested, available)` is a pure function: the requested order filtered to
  what this onnxruntime build offers, CPU always last, and one warning naming what was missing
  and what `onnxruntime.get_available_providers()` reported. CPU `onnxruntime` is the default
  dependency; `onnxruntime-gpu` (CUDA/TensorRT) is an optional extra for GPU machines/Jetsons.
- `provider_options(...)` builds each provider's options; TensorRT gets an engine cache, a
  timing cache, fp16, a workspace limit and explicit (min, opt, max) profile shapes for every
  dynamic input, so it builds one engine per graph up front instead of rebuilding whenever a
  new token count shows up.
- `TrtEngineCache` keeps TensorRT engines from being rebuilt silently or reused wrongly: a JSON
  stamp next to the cache records the TensorRT and onnxruntime versions, the exported graphs'
  (and their shared weights file's) sha256, precision and device, plus the sha256 of every
  cache file after a build. On start, an empty cache logs that a build is about to happen; a
  stamp that does not match (new TensorRT, new model, ...) or a cache file that is
  missing/changed (corrupt) moves the old cache aside (`<dir>.stale-<time>`) with a warning and
  rebuilds. No TensorRT is needed to test this logic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinygpt_ros.deploy.graphs import WEIGHTS_KIND, trt_profile_shapes

log = logging.getLogger(__name__)

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_ORDER = (TRT, CUDA, CPU)
STAMP_FILE = "tinygpt_trt_stamp.json"
TIMING_CACHE_SUBDIR = "timing"


# ---------------------------------------------------------------------------- choice


@dataclass(frozen=True)
class ProviderChoice:
    requested: tuple[str, ...]
    available: tuple[str, ...]
    selected: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def warning(self) -> str | None:
        """The one warning to log when a requested provider is not available."""
        if not self.missing:
            return None
        return (f"onnxruntime execution provider(s) {list(self.missing)} not available in this "
                f"onnxruntime build (onnxruntime.get_available_providers() = "
                f"{list(self.available)}); falling back to {list(self.selected)}. GPU providers "
                "need the onnxruntime-gpu package (JetPack wheels on a Jetson).")


def choose_providers(
    requested: Sequence[str] | None, available: Sequence[str]
) -> ProviderChoice:
    """Requested providers (default: CPU only) that are available, in order, CPU last.

    ValueError (naming `providers`) for names that are not onnxruntime providers.
    """
    if requested is None or isinstance(requested, str):
        requested = [CPU] if requested is None else [requested]
    req = []
    for p in requested:
        if not isinstance(p, str) or not p.endswith("ExecutionProvider"):
            raise ValueError(f"providers: {p!r} is not an onnxruntime execution provider name "
                             f"(e.g. {', '.join(DEFAULT_ORDER)})")
        if p not in req:
            req.append(p)
    avail = tuple(available)
    selected = [p for p in req if p in avail and p != CPU]
    selected.append(CPU)  # every onnxruntime build has it; nodes TensorRT/CUDA refuse land here
    missing = tuple(p for p in req if p not in avail and p != CPU)
    return ProviderChoice(tuple(req), avail, tuple(selected), missing)


# ---------------------------------------------------------------------------- options


def default_trt_cache_dir() -> Path:
    """$TINYGPT_ROS_TRT_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/tinygpt_ros/tensorrt."""
    if os.environ.get("TINYGPT_ROS_TRT_CACHE"):
        return Path(os.environ["TINYGPT_ROS_TRT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinygpt_ros" / "tensorrt"


@dataclass
class TensorRTOptions:
    """TensorRT execution provider settings (see onnxruntime's TensorRT EP documentation)."""

    cache_dir: Path | None = None  # engines + timing cache; None = default_trt_cache_dir()
    fp16: bool = False  # let TensorRT pick fp16 kernels (also for fp32 graphs)
    workspace_bytes: int = 1 << 30
    timing_cache: bool = True
    extra: dict[str, str] = field(default_factory=dict)  # any other trt_* option, verbatim

    def __post_init__(self) -> None:
        if isinstance(self.workspace_bytes, bool) or int(self.workspace_bytes) <= 0:
            raise ValueError(f"workspace_bytes must be > 0, got {self.workspace_bytes}")


def _shape_list(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return ",".join(f"{k}:{'x'.join(str(int(v)) for v in s)}" for k, s in shapes.items())


def provider_options(
    provider: str,
    *,
    cfg: Any = None,
    graph: str | None = None,
    device_id: int = 0,
    tensorrt: TensorRTOptions | None = None,
    cache: TrtEngineCache | None = None,
) -> dict[str, str]:
    """Options dict for one provider of one graph's session."""
    if provider == CUDA:
        return {"device_id": str(device_id)}
    if provider != TRT:
        return {}
    trt = tensorrt or TensorRTOptions()
    cache_dir = cache.path if cache is not None else (trt.cache_dir or default_trt_cache_dir())
    opts = {
        "device_id": str(device_id),
        "trt_fp16_enable": "1" if trt.fp16 else "0",
        "trt_max_workspace_size": str(int(trt.workspace_bytes)),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "1" if trt.timing_cache else "0",
        "trt_timing_cache_path": str(Path(cache_dir) / TIMING_CACHE_SUBDIR),
    }
    if cfg is not None and graph is not None:
        prof = trt_profile_shapes(cfg, graph)
        for i, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes",
                                 "trt_profile_max_shapes")):
            opts[key] = _shape_list({k: v[i] for k, v in prof.items()})
    opts.update({str(k): str(v) for k, v in trt.extra.items()})
    return opts


# ---------------------------------------------------------------------------- TensorRT cache


def tensorrt_version(loaders: Sequence[Callable[[], str | None]] | None = None) -> str:
    """Version of the TensorRT library onnxruntime will use, or "unknown"."""

    def from_module() -> str | None:
        import tensorrt  # type: ignore[import-not-found]

        return str(tensorrt.__version__)

    def from_library() -> str | None:
        import ctypes

        for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            v = int(lib.getInferLibVersion())  # e.g. 100300 (10.3.0) or 8601 (8.6.1)
            if v >= 10000:
                return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
            return f"{v // 1000}.{v // 100 % 10}.{v % 100}"
        return None

    for loader in loaders if loaders is not None else (from_module, from_library):
        try:
            v = loader()
        except Exception:  # not installed / no symbol: try the next way
            continue
        if v:
            return v
    return "unknown"


def device_name() -> str:
    """Jetson model string (device tree) or "unknown": engines are specific to the device."""
    try:
        return Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class TrtEngineCache:
    """A TensorRT engine cache directory guarded by a stamp; see the module docstring.

    `prepare()` before creating sessions -> "build" (empty: engines will be built now),
    "reuse", or "rebuild" (stale or corrupt cache moved aside). `commit()` after the engines
    exist records their sha256. `discard(reason)` moves the cache aside (e.g. when onnxruntime
    could not load it) so the caller can retry with a fresh build.
    """

    def __init__(self, path: str | os.PathLike[str], stamp: Mapping[str, Any],
                 warn: Callable[[str], None] | None = None,
                 info: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.stamp = {k: v for k, v in stamp.items() if k != "files"}
        self.warn = warn or log.warning
        self.info = info or log.info
        self.status: str | None = None

    @classmethod
    def for_model(cls, trt: TensorRTOptions, manifest: Mapping[str, Any], precision: str,
                  ort_version: str, warn: Callable[[str], None] | None = None,
                  ) -> TrtEngineCache:
        """Cache dir `<cache_dir>/<model id>-<precision>` with the stamp for this model."""
        files = manifest.get("files", {})
        # the graphs and the weights file they share: new weights under the same graphs (whose
        # files hold only offsets into it) must not reuse engines built from the old ones
        graphs = sorted(n for n, e in files.items()
                        if e.get("kind") in ("onnx", WEIGHTS_KIND)
                        and e.get("precision") == precision)
        digest = hashlib.sha256("".join(files[n]["sha256"] for n in graphs).encode()).hexdigest()
        stamp = {
            "tensorrt": tensorrt_version(),
            "onnxruntime": ort_version,
            "graphs_sha256": digest,
            "precision": precision,
            "fp16": bool(trt.fp16),
            "workspace_bytes": int(trt.workspace_bytes),
            "device": device_name(),
        }
        root = Path(trt.cache_dir) if trt.cache_dir else default_trt_cache_dir()
        return cls(root / f"{digest[:16]}-{precision}", stamp, warn=warn)

    @property
    def stamp_path(self) -> Path:
        return self.path / STAMP_FILE

    def _cache_files(self) -> list[Path]:
        """Engine files (and their .profile shape files); the timing cache is left out: it only
        speeds up builds, TensorRT checks its header itself, and it may be rewritten."""
        if not self.path.is_dir():
            return []
        timing = self.path / TIMING_CACHE_SUBDIR
        return sorted(p for p in self.path.rglob("*")
                      if p.is_file() and p.name != STAMP_FILE and timing not in p.parents)

    def _mkdirs(self) -> None:
        (self.path / TIMING_CACHE_SUBDIR).mkdir(parents=True, exist_ok=True)

    @property
    def is_empty(self) -> bool:
        return not self._cache_files()

    def _move_aside(self, reason: str) -> None:
        base = f"{self.path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
        aside, n = self.path.with_name(base), 1
        while aside.exists():
            aside, n = self.path.with_name(f"{base}-{n}"), n + 1
        shutil.move(str(self.path), str(aside))
        self.warn(f"TensorRT engine cache {self.path}: {reason}; moved it to {aside} and will "
                  "rebuild the engines now (this can take minutes)")

    def prepare(self) -> str:
        if self.is_empty:
            self._mkdirs()
            self.warn(f"TensorRT engine cache {self.path} is empty: building the engines now "
                      f"(TensorRT {self.stamp.get('tensorrt')}, can take minutes)")
            self.status = "build"
            return self.status
        problem = self._check()
        if problem:
            self._move_aside(problem)
            self._mkdirs()
            self.status = "rebuild"
            return self.status
        self.info(f"TensorRT engine cache {self.path}: reusing engines built with TensorRT "
                  f"{self.stamp.get('tensorrt')}")
        self.status = "reuse"
        return self.status

    def _check(self) -> str | None:
        """Why the cache cannot be reused, or None."""
        try:
            old = json.loads(self.stamp_path.read_text())
            if not isinstance(old, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            return f"no stamp {STAMP_FILE} (cache of unknown origin)"
        except (OSError, ValueError) as exc:
            return f"stamp {STAMP_FILE} is unreadable ({exc})"
        diff = {k: (old.get(k), v) for k, v in self.stamp.items() if old.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            return f"built for something else ({what})"
        recorded = old.get("files")
        if not isinstance(recorded, dict) or not recorded:
            return "stamp lists no engine files (build did not finish)"
        for name, digest in recorded.items():
            fp = self.path / name
            if not fp.is_file():
                return f"engine file {name} is missing (corrupt cache)"
            if _sha256(fp) != digest:
                return f"engine file {name} changed since it was built (corrupt cache)"
        return None

    def commit(self) -> None:
        """Record the cache files' sha256 in the stamp (atomically)."""
        files = {str(p.relative_to(self.path)): _sha256(p) for p in self._cache_files()}
        data = json.dumps({**self.stamp, "files": files}, indent=2) + "\n"
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.stamp_path.with_name(f".{STAMP_FILE}.tmp")
        tmp.write_text(data)
        os.replace(tmp, self.stamp_path)

    def discard(self, reason: str) -> None:
        if self.path.exists():
            self._move_aside(reason)
        self._mkdirs()
        self.status = "rebuild"
