"""Model directory: save/load round trip, integrity checks and their error messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tinygpt_ros.model.decoder import TinyGPTDecoder
from tinygpt_ros.model.weights import (
    MANIFEST_FILE,
    MODEL_FILE,
    ModelLoadError,
    add_files,
    load_manifest,
    load_model_files,
    save_model,
    sha256_file,
    verify_files,
)
from tinygpt_ros.spec.config import ModelConfig
from tinygpt_ros.spec.tokenizer import Tokenizer

CLASSES = ["clap", "wave", "other"]


@pytest.fixture()
def saved(tmp_path):
    tok = Tokenizer.build(["a red circle moves", "a blue square is still"])
    cfg = ModelConfig(dim=16, dec_dim=16, dec_layers=1, dec_heads=2, max_caption_len=6,
                      vocab_size=tok.vocab_size, num_gestures=len(CLASSES))
    torch.manual_seed(0)
    dec = TinyGPTDecoder(cfg)
    d = save_model(tmp_path / "model", dec.state_dict(), cfg, tok, gesture_classes=CLASSES,
                   data_seed=7, command="tinygpt-ros train --quick", metrics={"CIDEr": 0.5},
                   extra={"notes": "test"})
    return d, dec, cfg, tok


def test_round_trip(saved):
    d, dec, cfg, tok = saved
    loaded = load_model_files(d)
    assert loaded.config == cfg
    assert loaded.tokenizer == tok
    assert loaded.gesture_classes == CLASSES
    m = loaded.manifest
    assert m["format_version"] == 1 and m["data_seed"] == 7 and m["notes"] == "test"
    assert m["command"] == "tinygpt-ros train --quick" and m["metrics"] == {"CIDEr": 0.5}
    assert m["created_with"]["torch"] == torch.__version__
    assert m["files"][MODEL_FILE] == {
        "sha256": sha256_file(d / MODEL_FILE), "bytes": (d / MODEL_FILE).stat().st_size
    }
    assert m["model_dir_bytes"] == (d / MODEL_FILE).stat().st_size
    fresh = TinyGPTDecoder(loaded.config)
    fresh.load_state_dict(loaded.state_dict)
    for k, v in dec.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert load_manifest(d) == m


def test_add_files_records_hash_and_extra_keys(saved):
    d = saved[0]
    (d / "decoder.onnx").write_bytes(b"onnx bytes")
    m = add_files(d, {"decoder.onnx": {"opset": 17, "precision": "fp32"}})
    entry = m["files"]["decoder.onnx"]
    assert entry["opset"] == 17 and entry["bytes"] == 10
    assert entry["sha256"] == sha256_file(d / "decoder.onnx")
    assert verify_files(d, ["decoder.onnx"])["files"]["decoder.onnx"] == entry
    # the manifest reports the directory's size: every listed file, the new one included
    assert m["model_dir_bytes"] == (d / MODEL_FILE).stat().st_size + 10
    load_model_files(d)  # still loads: every listed file checks out
    (d / "decoder.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(ModelLoadError, match=r"decoder\.onnx: sha256 mismatch"):
        verify_files(d)
    with pytest.raises(ValueError, match="inside"):
        add_files(d, {"../x.onnx": {}})
    with pytest.raises(ModelLoadError, match="no entry"):
        verify_files(d, ["missing.onnx"])


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match=r"does not exist") as e:
        load_model_files(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


def test_missing_manifest(saved):
    d = saved[0]
    (d / MANIFEST_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"manifest\.json: not found"):
        load_model_files(d)


def test_bad_json(saved):
    d = saved[0]
    (d / MANIFEST_FILE).write_text('{"format_version": 1,')
    with pytest.raises(ModelLoadError, match=r"manifest\.json: not valid JSON") as e:
        load_model_files(d)
    assert isinstance(e.value, RuntimeError)


def _edit_manifest(d, fn):
    m = json.loads((d / MANIFEST_FILE).read_text())
    fn(m)
    (d / MANIFEST_FILE).write_text(json.dumps(m))


def test_missing_key_and_bad_version(saved):
    d = saved[0]
    _edit_manifest(d, lambda m: m.pop("tokenizer"))
    with pytest.raises(ModelLoadError, match=r"missing required key\(s\) \['tokenizer'\]"):
        load_model_files(d)
    _edit_manifest(d, lambda m: m.update(tokenizer={"kind": "word", "itos": ["<pad>"]}))
    with pytest.raises(ModelLoadError, match="'tokenizer' is invalid"):
        load_model_files(d)
    _edit_manifest(d, lambda m: m.update(format_version=99))
    with pytest.raises(ModelLoadError, match="format_version=99 is not supported"):
        load_model_files(d)


def test_sha256_mismatch_names_file_and_entry(saved):
    d = saved[0]
    path = d / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    want = load_manifest(d)["files"][MODEL_FILE]["sha256"]
    with pytest.raises(ModelLoadError) as e:
        load_model_files(d)
    msg = str(e.value)
    assert str(path) in msg and "sha256 mismatch" in msg
    assert f"files['model.pt'].sha256={want}" in msg and sha256_file(path) in msg


def test_truncated_model_file(saved):
    d = saved[0]
    path = d / MODEL_FILE
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match=r"model\.pt: size mismatch \(manifest files"):
        load_model_files(d)
    # even when the manifest is made to agree, torch's error is wrapped, never raw
    add_files(d, {MODEL_FILE: {}})
    with pytest.raises(ModelLoadError, match=r"model\.pt: torch\.load\(weights_only=True\) failed"):
        load_model_files(d)


def test_missing_model_file(saved):
    d = saved[0]
    (d / MODEL_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"model\.pt: not found \(manifest files"):
        load_model_files(d)


def test_save_validates(saved, tmp_path):
    _, dec, cfg, tok = saved
    common = dict(data_seed=0, command="x", metrics={})
    with pytest.raises(ValueError, match="num_gestures"):
        save_model(tmp_path / "a", dec.state_dict(), cfg, tok, gesture_classes=["a"], **common)
    with pytest.raises(ValueError, match="vocab_size"):
        save_model(tmp_path / "b", dec.state_dict(), ModelConfig(vocab_size=3), tok,
                   gesture_classes=CLASSES, **common)
    with pytest.raises(ValueError, match="override"):
        save_model(tmp_path / "c", dec.state_dict(), cfg, tok, gesture_classes=CLASSES,
                   extra={"files": {}}, **common)


def test_import_does_not_import_torch():
    code = (
        "import sys, tinygpt_ros.model.weights as w; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert callable(w.verify_files) and callable(w.sha256_file)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
