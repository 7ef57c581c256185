"""`tinygpt-ros eval-coco` on a tiny generated COCO-format set (images written to a folder,
captions JSON in COCO's layout), with a tiny GIT checkpoint and with the shipped TinyGPT."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from tinygpt_ros.data.scenes import render_clip
from tinygpt_ros.evaluation.coco_eval import load_coco


def _tiny_coco(root, n: int = 4):
    images, anns = [], []
    folder = root / "val"
    folder.mkdir()
    for i in range(n):
        clip = render_clip(100 + i, "still", 1, size=(240, 320))
        name = f"{i:012d}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(clip.frames[0], cv2.COLOR_RGB2BGR))
        images.append({"id": 10 + i, "file_name": name, "height": 240, "width": 320})
        for cap in clip.segments[0].captions:
            anns.append({"id": len(anns) + 1, "image_id": 10 + i, "caption": cap})
    path = root / "captions_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path, folder


def test_load_coco_names_missing_images(tmp_path):
    captions, folder = _tiny_coco(tmp_path, 2)
    refs, paths = load_coco(captions, folder)
    assert sorted(refs) == [10, 11] and all(p.is_file() for p in paths.values())
    (folder / "000000000001.jpg").unlink()
    with pytest.raises(ValueError, match="1 image"):
        load_coco(captions, folder)


def test_eval_coco_scores_dense_and_sttf_on_a_tiny_git(tmp_path, capsys):
    pytest.importorskip("transformers")
    from hf_fixtures import save_tiny_git

    from tinygpt_ros.cli import main

    captions, folder = _tiny_coco(tmp_path)
    model = save_tiny_git(tmp_path / "git")
    out = tmp_path / "report.json"
    rc = main(["eval-coco", "--model", str(model), "--captions", str(captions), "--images",
               str(folder), "--frames-per-image", "2", "--out", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["num_images"] == 4 and set(rep["configs"]) == {"dense", "sttf+anc"}
    # timed as the node runs: one intra-op thread, one OpenCV thread
    assert "intra_op_threads=1" in rep["threads"] and "opencv 1" in rep["threads"]
    dense, sttf = rep["configs"]["dense"], rep["configs"]["sttf+anc"]
    assert dense["tokens_recomputed_mean"] == 196
    assert sttf["tokens_recomputed_mean"] == 98  # frame 2 of a still image reuses every token
    assert set(dense["scores"]) == {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    assert all(len(h) == 4 for h in rep["hypotheses"].values())
    assert "| dense |" in capsys.readouterr().out
    assert np.isfinite(dense["scores"]["CIDEr"])
