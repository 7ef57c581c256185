"""onnxruntime provider choice and TensorRT cache stamp logic (no GPU, no TensorRT needed)."""

from __future__ import annotations

import json

import pytest

from tinygpt_ros.deploy.providers import (
    CPU,
    CUDA,
    DEFAULT_ORDER,
    STAMP_FILE,
    TRT,
    TensorRTOptions,
    TrtEngineCache,
    choose_providers,
    provider_options,
    tensorrt_version,
)
from tinygpt_ros.spec.config import ModelConfig


def test_all_available_keeps_order():
    c = choose_providers(DEFAULT_ORDER, [TRT, CUDA, CPU, "AzureExecutionProvider"])
    assert c.selected == (TRT, CUDA, CPU) and c.missing == () and c.warning is None


def test_missing_gpu_falls_back_with_one_warning_naming_what_was_found():
    avail = ["AzureExecutionProvider", CPU]
    c = choose_providers([TRT, CUDA, CPU], avail)
    assert c.selected == (CPU,)
    assert c.missing == (TRT, CUDA)
    w = c.warning
    assert w is not None and TRT in w and CUDA in w
    assert "get_available_providers() = ['AzureExecutionProvider', 'CPUExecutionProvider']" in w


def test_partial_availability_and_cpu_always_last():
    c = choose_providers([CUDA, TRT], [CUDA, CPU])
    assert c.selected == (CUDA, CPU) and c.missing == (TRT,)
    c = choose_providers([CPU, CUDA], [CUDA, CPU])  # CPU is the fallback: always last
    assert c.selected == (CUDA, CPU)
    assert choose_providers(None, [CPU]).selected == (CPU,)
    assert choose_providers(CUDA, [CPU]).missing == (CUDA,)  # a single name is fine
    assert choose_providers([CUDA, CUDA], [CUDA, CPU]).selected == (CUDA, CPU)


@pytest.mark.parametrize("bad", [["CUDA"], [3], ["tensorrt"]])
def test_bad_provider_names_raise(bad):
    with pytest.raises(ValueError, match="providers"):
        choose_providers(bad, [CPU])


def test_tensorrt_options_cache_fp16_workspace_and_profiles(tmp_path):
    cfg = ModelConfig(dim=32, heads=2, branch_depths=(1, 2, 3), temporal_window=3,
                      vocab_size=50)
    trt = TensorRTOptions(cache_dir=tmp_path, fp16=True, workspace_bytes=1 << 28)
    o = provider_options(TRT, cfg=cfg, graph="encoder_b1", device_id=1, tensorrt=trt)
    assert o["trt_engine_cache_enable"] == "1" and o["trt_engine_cache_path"] == str(tmp_path)
    assert o["trt_timing_cache_enable"] == "1" and o["trt_timing_cache_path"].startswith(
        str(tmp_path))
    assert o["trt_fp16_enable"] == "1" and o["trt_max_workspace_size"] == str(1 << 28)
    assert o["device_id"] == "1"
    # every dynamic input gets a fixed range: idx from 1 to all 196 tokens, depth 2 caches
    assert "idx:1" in o["trt_profile_min_shapes"] and "idx:196" in o["trt_profile_max_shapes"]
    assert "cache_k:2x2x196x16" in o["trt_profile_max_shapes"]
    dec = provider_options(TRT, cfg=cfg, graph="decoder_prefill", tensorrt=trt)
    assert "vis:8x588x32" in dec["trt_profile_max_shapes"]  # 3 frames x 196 tokens, 8 beams
    assert provider_options(CUDA, device_id=2) == {"device_id": "2"}
    assert provider_options(CPU) == {}
    with pytest.raises(ValueError, match="workspace"):
        TensorRTOptions(workspace_bytes=0)


def test_tensorrt_version_from_injected_loaders():
    def boom():
        raise ImportError("no tensorrt")

    assert tensorrt_version([boom, lambda: "10.3.0"]) == "10.3.0"
    assert tensorrt_version([boom, lambda: None]) == "unknown"
    assert tensorrt_version([]) == "unknown"


def _stamp(**kw):
    s = {"tensorrt": "10.3.0", "onnxruntime": "1.31.1", "graphs_sha256": "ab" * 32,
         "precision": "fp16", "fp16": True, "device": "Jetson Orin Nano"}
    s.update(kw)
    return s


def _fake_build(cache: TrtEngineCache) -> None:
    """What onnxruntime's TensorRT EP leaves in the cache after a build."""
    (cache.path / "TensorrtExecutionProvider_TRTKernel_graph_0_0.engine").write_bytes(b"E" * 64)
    (cache.path / "timing").mkdir(exist_ok=True)
    (cache.path / "timing" / "TensorrtExecutionProvider_cache.timing").write_bytes(b"T" * 8)


def test_cache_build_then_reuse_never_silently(tmp_path):
    warnings, infos = [], []
    c = TrtEngineCache(tmp_path / "c", _stamp(), warn=warnings.append, info=infos.append)
    assert c.prepare() == "build"
    assert len(warnings) == 1 and "building the engines now" in warnings[0]  # logged first
    _fake_build(c)
    c.commit()
    stamp = json.loads((tmp_path / "c" / STAMP_FILE).read_text())
    assert stamp["tensorrt"] == "10.3.0" and list(stamp["files"]) == [
        "TensorrtExecutionProvider_TRTKernel_graph_0_0.engine"]  # timing cache not hashed
    (tmp_path / "c" / "timing" / "TensorrtExecutionProvider_cache.timing").write_bytes(b"U")

    warnings.clear()
    again = TrtEngineCache(tmp_path / "c", _stamp(), warn=warnings.append, info=infos.append)
    assert again.prepare() == "reuse" and warnings == []
    assert "reusing" in infos[-1]


@pytest.mark.parametrize("change", [{"tensorrt": "10.4.0"}, {"onnxruntime": "1.32.0"},
                                    {"graphs_sha256": "cd" * 32}, {"fp16": False}])
def test_cache_rebuilt_when_versions_or_model_change(tmp_path, change):
    c = TrtEngineCache(tmp_path / "c", _stamp(), warn=lambda m: None)
    c.prepare()
    _fake_build(c)
    c.commit()
    warnings = []
    new = TrtEngineCache(tmp_path / "c", _stamp(**change), warn=warnings.append)
    assert new.prepare() == "rebuild"
    assert len(warnings) == 1 and "moved it to" in warnings[0]
    key = next(iter(change))
    assert key in warnings[0]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("c.stale-")]
    assert len(aside) == 1 and (aside[0] / STAMP_FILE).is_file()  # old cache kept, not lost
    assert (tmp_path / "c").is_dir() and new.is_empty


def test_corrupt_engine_or_stamp_is_discarded(tmp_path):
    c = TrtEngineCache(tmp_path / "c", _stamp(), warn=lambda m: None)
    c.prepare()
    _fake_build(c)
    c.commit()
    engine = next((tmp_path / "c").glob("*.engine"))
    engine.write_bytes(b"E" * 10)  # truncated
    warnings = []
    assert TrtEngineCache(tmp_path / "c", _stamp(), warn=warnings.append).prepare() == "rebuild"
    assert "changed since it was built" in warnings[0]

    # unreadable stamp, and a cache with engines but no stamp at all
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.engine").write_bytes(b"1")
    (d / STAMP_FILE).write_text("{not json")
    warnings.clear()
    assert TrtEngineCache(d, _stamp(), warn=warnings.append).prepare() == "rebuild"
    assert "unreadable" in warnings[0]
    (d / "y.engine").write_bytes(b"1")
    warnings.clear()
    assert TrtEngineCache(d, _stamp(), warn=warnings.append).prepare() == "rebuild"
    assert "no stamp" in warnings[0]


def test_discard_moves_cache_aside(tmp_path):
    warnings = []
    c = TrtEngineCache(tmp_path / "c", _stamp(), warn=warnings.append)
    c.prepare()
    _fake_build(c)
    c.discard("onnxruntime failed to load it")
    assert c.is_empty and "failed to load" in warnings[-1]
    assert any(p.name.startswith("c.stale-") for p in tmp_path.iterdir())


def test_for_model_dir_and_stamp(tmp_path):
    manifest = {"files": {
        "onnx/fp16/a.onnx": {"kind": "onnx", "precision": "fp16", "sha256": "1" * 64},
        "onnx/fp32/a.onnx": {"kind": "onnx", "precision": "fp32", "sha256": "2" * 64},
        "model.pt": {"sha256": "3" * 64},
    }}
    trt = TensorRTOptions(cache_dir=tmp_path, fp16=True)
    a = TrtEngineCache.for_model(trt, manifest, "fp16", "1.31.1")
    b = TrtEngineCache.for_model(trt, manifest, "fp32", "1.31.1")
    assert a.path.parent == tmp_path and a.path != b.path
    assert a.stamp["precision"] == "fp16" and a.stamp["onnxruntime"] == "1.31.1"
    assert a.stamp["graphs_sha256"] != b.stamp["graphs_sha256"]
    # new weights under unchanged graph files (they hold only offsets) make a new cache
    manifest["files"]["onnx/fp16/weights.bin"] = {"kind": "onnx_weights", "precision": "fp16",
                                                  "sha256": "4" * 64}
    c = TrtEngineCache.for_model(trt, manifest, "fp16", "1.31.1")
    assert c.stamp["graphs_sha256"] != a.stamp["graphs_sha256"] and c.path != a.path
