"""The model directory: `model.pt` (a torch state_dict) + `manifest.json` describing it.

The manifest makes a model self-describing and tamper-evident: architecture (`config`),
vocabulary (`tokenizer`), gesture class names, sha256 + byte size of every file, the data seed,
training command and metrics, and the versions that wrote it. Export steps add their files
(ONNX graphs, with extra keys such as opset or precision) through `add_files`.

Loading fails with `ModelLoadError` (a RuntimeError) naming the file, the manifest entry that
was expected and what was found, so a ROS node can refuse to configure with a useful log line.
Everything except `save_model`/`load_model_files` works without torch (the onnxruntime engine
must not import it): torch is imported inside those two functions only.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinygpt_ros import __version__
from tinygpt_ros.spec.config import ModelConfig
from tinygpt_ros.spec.tokenizer import Tokenizer

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MODEL_FILE = "model.pt"
MANIFEST_FILE = "manifest.json"
REQUIRED_KEYS = (
    "format_version", "config", "tokenizer", "gesture_classes", "files", "data_seed", "command",
    "metrics", "created_with",
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelLoadError(RuntimeError):
    """A model directory is missing, incomplete, corrupt or from an unsupported version."""


@dataclass
class LoadedModel:
    state_dict: dict[str, Any]  # name -> torch.Tensor
    config: ModelConfig
    tokenizer: Tokenizer
    gesture_classes: list[str]
    manifest: dict[str, Any]
    model_dir: Path | None = None


# --------------------------------------------------------------------------------- hashing


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _check_name(name: object) -> str:
    """File names in the manifest are plain relative paths inside the model directory."""
    if not isinstance(name, str) or not name or name.startswith(("/", "\\")):
        raise ValueError(f"file name {name!r} must be a non-empty relative path")
    parts = Path(name).parts
    if ".." in parts or Path(name).is_absolute() or name == MANIFEST_FILE:
        raise ValueError(f"file name {name!r} must stay inside the model directory")
    return name


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file + rename, so readers never see a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump_manifest(model_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest with `model_dir_bytes`, the size of the model directory: every file
    listed under `files` (all but the manifest itself), so a change of size is visible in review."""
    manifest["model_dir_bytes"] = sum(int(e["bytes"]) for e in manifest["files"].values())
    try:
        text = json.dumps(manifest, indent=2) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"manifest is not JSON-serialisable: {exc}") from exc
    _write_atomic(model_dir / MANIFEST_FILE, text.encode())


# --------------------------------------------------------------------------------- reading


def load_manifest(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and structurally check `<model_dir>/manifest.json` (files are not hashed here)."""
    d = Path(model_dir)
    if not d.exists():
        raise ModelLoadError(
            f"model directory {d}: does not exist (expected a directory holding {MANIFEST_FILE} "
            f"and {MODEL_FILE}, as written by `tinygpt-ros train`)"
        )
    if not d.is_dir():
        raise ModelLoadError(f"model directory {d}: is not a directory")
    path = d / MANIFEST_FILE
    if not path.is_file():
        present = sorted(p.name for p in d.iterdir())[:10]
        raise ModelLoadError(
            f"model manifest {path}: not found (expected {MANIFEST_FILE} next to {MODEL_FILE}; "
            f"directory holds {present})"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"model manifest {path}: not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}): file is corrupt"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"model manifest {path}: cannot be read ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ModelLoadError(
            f"model manifest {path}: expected a JSON object, found {type(manifest).__name__}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelLoadError(
            f"model manifest {path}: missing required key(s) {missing} "
            f"(expected all of {list(REQUIRED_KEYS)}, found {sorted(manifest)})"
        )
    version = manifest["format_version"]
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelLoadError(
            f"model manifest {path}: format_version={version!r} is not supported (supported: "
            f"{list(SUPPORTED_FORMAT_VERSIONS)}): written by another version of tinygpt_ros"
        )
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise ModelLoadError(
            f"model manifest {path}: 'files' must be a non-empty object, found {files!r}"
        )
    for name, entry in files.items():
        try:
            _check_name(name)
        except ValueError as exc:
            raise ModelLoadError(f"model manifest {path}: files[{name!r}]: {exc}") from exc
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.match(entry["sha256"])
            and isinstance(entry.get("bytes"), int)
            and not isinstance(entry.get("bytes"), bool)
            and entry["bytes"] >= 0
        )
        if not ok:
            raise ModelLoadError(
                f"model manifest {path}: files[{name!r}] must hold 'sha256' (64 hex digits) and "
                f"'bytes' (int >= 0), found {entry!r}"
            )
    return manifest


def verify_files(
    model_dir: str | os.PathLike[str],
    names: Iterable[str] | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check that the listed files (all when `names` is None) exist with the manifest's size and
    sha256; returns the manifest. Raises ModelLoadError naming the file and the entry."""
    d = Path(model_dir)
    manifest = dict(manifest) if manifest is not None else load_manifest(d)
    files = manifest["files"]
    for name in files if names is None else list(names):
        entry = files.get(name)
        if entry is None:
            raise ModelLoadError(
                f"model manifest {d / MANIFEST_FILE}: no entry files[{name!r}] "
                f"(listed: {sorted(files)})"
            )
        fp = d / name
        if not fp.is_file():
            raise ModelLoadError(
                f"model file {fp}: not found (manifest files[{name!r}] = {entry})"
            )
        size = fp.stat().st_size
        if size != entry["bytes"]:
            raise ModelLoadError(
                f"model file {fp}: size mismatch (manifest files[{name!r}].bytes="
                f"{entry['bytes']}, found {size}): file is truncated, corrupt or from another "
                f"version"
            )
        digest = sha256_file(fp)
        if digest != entry["sha256"]:
            raise ModelLoadError(
                f"model file {fp}: sha256 mismatch (manifest files[{name!r}].sha256="
                f"{entry['sha256']}, found {digest}): file is corrupt or from another version"
            )
    return manifest


def parse_manifest(d: Path, manifest: dict[str, Any]) -> tuple[ModelConfig, Tokenizer, list[str]]:
    """Config, tokenizer and gesture classes of a loaded manifest (both engines' loaders);
    ModelLoadError names the manifest and the entry that is wrong."""
    path = d / MANIFEST_FILE
    try:
        if not isinstance(manifest["config"], dict):
            raise ValueError(f"expected an object, found {type(manifest['config']).__name__}")
        config = ModelConfig.from_dict(manifest["config"])
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"model manifest {path}: 'config' is invalid ({exc}); found {manifest['config']!r}"
        ) from exc
    try:
        tokenizer = Tokenizer.from_dict(manifest["tokenizer"])
    except ValueError as exc:
        raise ModelLoadError(f"model manifest {path}: 'tokenizer' is invalid ({exc})") from exc
    classes = manifest["gesture_classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ModelLoadError(
            f"model manifest {path}: 'gesture_classes' must be a list of str, found {classes!r}"
        )
    if config.vocab_size != tokenizer.vocab_size:
        raise ModelLoadError(
            f"model manifest {path}: config.vocab_size={config.vocab_size} but the tokenizer "
            f"has {tokenizer.vocab_size} words"
        )
    if len(classes) != config.num_gestures:
        raise ModelLoadError(
            f"model manifest {path}: config.num_gestures={config.num_gestures} but "
            f"gesture_classes lists {len(classes)}"
        )
    return config, tokenizer, list(classes)


def load_model_files(
    model_dir: str | os.PathLike[str], map_location: str = "cpu"
) -> LoadedModel:
    """Manifest + verified files + the state_dict (torch.load with weights_only=True)."""
    import torch

    d = Path(model_dir)
    manifest = load_manifest(d)
    if MODEL_FILE not in manifest["files"]:
        raise ModelLoadError(
            f"model manifest {d / MANIFEST_FILE}: no entry files[{MODEL_FILE!r}] "
            f"(listed: {sorted(manifest['files'])})"
        )
    verify_files(d, manifest=manifest)
    config, tokenizer, classes = parse_manifest(d, manifest)
    fp = d / MODEL_FILE
    try:
        state = torch.load(fp, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, disallowed globals, ...
        raise ModelLoadError(
            f"model file {fp}: torch.load(weights_only=True) failed ({type(exc).__name__}: "
            f"{exc}) although it matches manifest files[{MODEL_FILE!r}] = "
            f"{manifest['files'][MODEL_FILE]}: file was not written by save_model"
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelLoadError(
            f"model file {fp}: expected a state_dict (str -> Tensor), found "
            f"{type(state).__name__}"
        )
    return LoadedModel(dict(state), config, tokenizer, classes, manifest, d)


# --------------------------------------------------------------------------------- writing


def save_model(
    model_dir: str | os.PathLike[str],
    state_dict: Mapping[str, Any],
    config: ModelConfig,
    tokenizer: Tokenizer,
    *,
    gesture_classes: list[str],
    data_seed: int,
    command: str,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model.pt` and `manifest.json` into `model_dir` (created); returns the directory.

    `extra` keys are merged into the manifest's top level (they may not replace required keys).
    """
    import torch

    d = Path(model_dir)
    if config.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"config.vocab_size={config.vocab_size} does not match the tokenizer "
            f"({tokenizer.vocab_size} words)"
        )
    if not isinstance(gesture_classes, list | tuple) or not all(
        isinstance(c, str) for c in gesture_classes
    ):
        raise ValueError("gesture_classes must be a list of str")
    if len(gesture_classes) != config.num_gestures:
        raise ValueError(
            f"gesture_classes has {len(gesture_classes)} names, config.num_gestures="
            f"{config.num_gestures}"
        )
    if isinstance(data_seed, bool) or not isinstance(data_seed, int):
        raise ValueError(f"data_seed must be an int, got {data_seed!r}")
    if not isinstance(command, str):
        raise ValueError(f"command must be a str, got {type(command).__name__}")
    if not isinstance(metrics, dict):
        raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(REQUIRED_KEYS))
    if clash:
        raise ValueError(f"extra may not override required manifest keys {clash}")
    bad = [k for k, v in state_dict.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"state_dict must map str -> Tensor; bad entries: {bad[:5]}")

    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    model_path = d / MODEL_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{MODEL_FILE}.", dir=d)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, model_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "gesture_classes": list(gesture_classes),
        "files": {MODEL_FILE: _file_entry(model_path)},
        "data_seed": data_seed,
        "command": command,
        "metrics": metrics,
        "created_with": {
            "tinygpt_ros": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        **extra,
    }
    _dump_manifest(d, manifest)
    return d


def add_files(
    model_dir: str | os.PathLike[str], files: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Hash files already placed in `model_dir` and record them under the manifest's `files`.

    `files` maps a relative name to extra keys stored with its entry (e.g. `{"opset": 17,
    "precision": "fp16"}`); `sha256` and `bytes` are always computed here. Returns the manifest.
    """
    d = Path(model_dir)
    manifest = load_manifest(d)
    for name, keys in files.items():
        _check_name(name)
        fp = d / name
        if not fp.is_file():
            raise ValueError(f"file {fp} (files[{name!r}]) does not exist")
        if not isinstance(keys, Mapping):
            raise ValueError(f"files[{name!r}] must be a mapping of extra keys, got {keys!r}")
        manifest["files"][name] = {**keys, **_file_entry(fp)}
    _dump_manifest(d, manifest)
    return manifest


def add_metrics(model_dir: str | os.PathLike[str], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Merge measured figures into the manifest's `metrics` (weights untouched). Returns it."""
    d = Path(model_dir)
    manifest = load_manifest(d)
    manifest.setdefault("metrics", {}).update(metrics)
    _dump_manifest(d, manifest)
    return manifest
