"""`tinygpt-ros bench-hf`: per-frame latency of a pretrained-scale captioner through the
streaming engine, STTF(+ANC) against dense, on still / slow / busy / panning streams.

Timing does not depend on the weights, so by default the model is GIT-base's architecture
(CLIP ViT-B/16 at 224, 12 layers; 6-layer 768-wide text decoder, 30522 words) with random
weights, built in memory from its config; `--family llava` builds the smallest public LLaVA's
(llava-interleave-qwen-0.5b: SigLIP-so400m/14 tower, 26 layers 1152 wide; Qwen2-0.5B decoder,
24 layers 896 wide, 151936 words) with the tower at 196 px, the engine's 14 x 14 grid (the
checkpoint itself runs 384 px, 27 x 27 = 729 tokens, which this engine does not stream). With
`--model DIR` a real local checkpoint (either family) is used instead. Quality needs the real
weights (see `tinygpt-ros eval-coco`); a random decoder rarely emits EOS, so every decode
here runs to `max_caption_len` tokens, the worst case.

Streams are 640x480 camera-sized frames on a rendered scene (`data.scenes.render_clip`): still
(nothing moves), slow (one textured square moving 4 px per frame), busy (six moving 24 px per
frame), panning (a 640-wide window sliding `pan_px` pixels per frame across a 1280-wide scene).
Dense and STTF engines alternate frame by frame so background load hits both alike. Reported
per stream: mean and p50 wall ms per frame, the ratio dense / STTF, tokens recomputed, captions
reused, and the decoder passes a decoded STTF caption took (`caption_draft`: recent captions
are checked as drafts; dense decodes one token per pass, as the family's generate() does).
The streams run with ANC off (no router means anything on random weights); a last table times
one dense tower pass of each ANC branch (`branch_costs`: the half-resolution 7 x 7 grid, three
quarters of the layers, the full tower) against its FLOPs.

`--backend onnxruntime` (GIT only: LLaVA has no export) times the graphs `tinygpt-ros export`
writes, loaded the way the node loads them (`HfEngine.from_dir`). The random GIT-base is then
saved to a temporary checkpoint and exported first (about half a minute); a `--model` checkpoint
without a current export is exported in place, as `tinygpt-ros export` would.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinygpt_ros.data.scenes import render_clip

STREAMS = ("still", "slow", "busy", "panning")
BACKENDS = ("torch", "onnxruntime")
log = logging.getLogger(__name__)
GIT_BASE = {
    "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
               "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
    "text": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 6,
             "num_attention_heads": 12, "intermediate_size": 3072,
             "max_position_embeddings": 1024, "bos_token_id": 101, "eos_token_id": 102,
             "pad_token_id": 0},
}


# llava-interleave-qwen-0.5b's dimensions (config.json of llava-hf/llava-interleave-qwen-0.5b-hf)
LLAVA_SMALL = {
    "vision": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 26,
               "num_attention_heads": 16, "image_size": 196, "patch_size": 14},
    "text": {"vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
             "max_position_embeddings": 32768, "rope_theta": 1000000.0,
             "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151645},
    "image_token_id": 151646,
}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
          "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
          "{% endfor %}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _moving_squares(base: np.ndarray, n: int, squares: int, size: int, step: int,
                    seed: int) -> list[np.ndarray]:
    """`squares` textured squares of `size` px crossing `base`, each `step` px per frame in its
    own direction (bouncing at the borders)."""
    rng = np.random.default_rng([seed, 7])
    h, w = base.shape[:2]
    pos = rng.uniform([0, 0], [h - size, w - size], (squares, 2))
    angle = rng.uniform(0, 2 * np.pi, squares)
    vel = step * np.stack([np.sin(angle), np.cos(angle)], 1)
    tex = rng.integers(0, 256, (squares, size, size, 3)).astype(np.uint8)
    frames = []
    for _ in range(n):
        f = base.copy()
        for i in range(squares):
            y, x = (round(float(v)) for v in pos[i])
            f[y:y + size, x:x + size] = tex[i]
        frames.append(f)
        pos += vel
        for i in range(squares):
            for a, lim in ((0, h - size), (1, w - size)):
                if not 0 <= pos[i, a] <= lim:
                    vel[i, a] = -vel[i, a]
                    pos[i, a] = min(max(pos[i, a], 0), lim)
    return frames


def stream_frames(kind: str, n: int, seed: int = 0, pan_px: int = 8) -> list[np.ndarray]:
    """n camera-sized (480x640) RGB frames of one stream kind, on a rendered scene:
    still (nothing moves), slow (one 96 px square, 4 px per frame), busy (six 96 px squares,
    24 px per frame), panning (a 640 px window sliding `pan_px` per frame over a 1280 px
    scene: every patch changes)."""
    if kind == "panning":
        wide = render_clip(seed, "still", 1, size=(480, 1280)).frames[0]
        return [np.ascontiguousarray(wide[:, i * pan_px: i * pan_px + 640]) for i in range(n)]
    base = render_clip(seed, "still", 1, size=(480, 640)).frames[0]
    if kind == "still":
        return [base.copy() for _ in range(n)]
    if kind == "slow":
        return _moving_squares(base, n, 1, 96, 4, seed)
    if kind == "busy":
        return _moving_squares(base, n, 6, 96, 24, seed)
    raise ValueError(f"stream must be one of {STREAMS}, got {kind!r}")


def random_git_base(seed: int = 0):
    """GIT-base's architecture with random weights, and a placeholder word vocabulary."""
    import torch
    from transformers import BertTokenizer, GitConfig, GitForCausalLM

    torch.manual_seed(seed)
    cfg = GitConfig(vision_config=GIT_BASE["vision"], **GIT_BASE["text"])
    model = GitForCausalLM(cfg).eval()
    vocab = {f"w{i}": i for i in range(cfg.vocab_size)}
    vocab.update({"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103})
    tok = BertTokenizer(vocab=dict(sorted(vocab.items(), key=lambda kv: kv[1])))
    pp = {"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}
    return model, tok, pp


def random_llava_small(seed: int = 0):
    """llava-interleave-qwen-0.5b's architecture (tower at 196 px) with random weights, a
    placeholder word vocabulary and a ChatML-style prompt; (model, processor, preprocessor)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
        Qwen2Config,
        SiglipImageProcessor,
        SiglipVisionConfig,
    )

    spec = LLAVA_SMALL
    text = Qwen2Config(**spec["text"])
    specials = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                "<image>": spec["image_token_id"]}
    vocab = {f"w{i}": i for i in range(text.vocab_size) if i not in specials.values()}
    vocab.update(specials)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="w0",
                                  additional_special_tokens=list(specials),
                                  extra_special_tokens={"image_token": "<image>"})
    size = spec["vision"]["image_size"]
    pp = {"size": {"height": size, "width": size}, "do_center_crop": False,
          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessor(size={"height": size, "width": size}),
        tokenizer=tok, patch_size=spec["vision"]["patch_size"],
        vision_feature_select_strategy="full", chat_template=CHATML)
    torch.manual_seed(seed)
    cfg = LlavaConfig(vision_config=SiglipVisionConfig(**spec["vision"]), text_config=text,
                      image_token_id=spec["image_token_id"], vision_feature_layer=-1,
                      vision_feature_select_strategy="full")
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = spec["text"]["eos_token_id"]
    return model, processor, pp


def clip_preprocessor_config(size: int) -> dict[str, Any]:
    """The `preprocessor_config.json` of a GIT checkpoint: CLIP's image processor at `size`."""
    return {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True,
        "size": {"shortest_edge": size}, "do_center_crop": True,
        "crop_size": {"height": size, "width": size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3}


def save_random_git_base(path: Path, seed: int = 0) -> Path:
    """`random_git_base` as a local checkpoint (weights, tokenizer, CLIP preprocessor config)
    that the real loading code reads, as a downloaded one would be."""
    model, tok, _ = random_git_base(seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    size = model.config.vision_config.image_size
    (path / "preprocessor_config.json").write_text(json.dumps(clip_preprocessor_config(size)))
    return path


def _exported(model_dir: Path) -> Path:
    """`model_dir` with a current ONNX export (made now when missing or stale)."""
    from tinygpt_ros.hf.git_onnx import read_export
    from tinygpt_ros.model.weights import ModelLoadError

    try:
        read_export(model_dir)
    except ModelLoadError:
        from tinygpt_ros.hf.git_export import export_git

        log.info("exporting %s to ONNX (tinygpt-ros export)", model_dir)
        export_git(model_dir)
    return model_dir


def _parameters(model_dir: Path) -> int:
    """Parameter count from the checkpoint's weights file: the safetensors header (which
    holds tied weights once), else the tensors of pytorch_model.bin, memory-mapped, each
    storage counted once (tied weights share one; no model built)."""
    if (model_dir / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(model_dir / "model.safetensors"), "np") as f:
            return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    import torch

    state = torch.load(model_dir / "pytorch_model.bin", map_location="cpu", mmap=True,
                       weights_only=True)
    storages = {t.untyped_storage().data_ptr(): int(t.numel()) for t in state.values()}
    return sum(storages.values())


def build_engines(model_dir: str | None, device: str = "cpu", seed: int = 0,
                  family: str = "git", backend: str = "torch", scratch: Path | None = None,
                  threads: int = 0):
    """(dense engine, STTF engine, parameter count) sharing one model. onnxruntime: the
    checkpoint (the random one saved under `scratch`) is exported if needed and both engines
    load its graphs. `threads` > 0: intra-op threads (torch's process-wide, onnxruntime's per
    session, as the node's `intra_op_threads` sets them); 0: the libraries' defaults."""
    from tinygpt_ros.hf.checkpoint import check_checkpoint
    from tinygpt_ros.hf.common import HfTokenizer
    from tinygpt_ros.hf.engine import HfEngine, load_git, load_llava
    from tinygpt_ros.hf.git import GitKernels
    from tinygpt_ros.hf.llava import LlavaKernels, feature_depth
    from tinygpt_ros.hf.vision import tower_branches

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if model_dir:
        family = check_checkpoint(model_dir).family
    if backend == "onnxruntime":
        if family != "git":
            raise ValueError("LLaVA has no ONNX export: use --backend torch")
        if model_dir:
            path = Path(model_dir)
        elif scratch is not None:
            path = save_random_git_base(scratch / "git-base-random", seed)
        else:
            raise ValueError("random GIT-base on onnxruntime needs a scratch directory")
        _exported(path)
        engines = [HfEngine.from_dir(path, backend="onnxruntime", threads=threads or None)
                   for _ in range(2)]
        params = _parameters(path)
    else:
        if family == "llava":
            model, processor, pp = load_llava(model_dir) if model_dir else random_llava_small(seed)
            tok = processor.tokenizer
            grids, depths = tower_branches(feature_depth(
                model.config.vision_config.num_hidden_layers, model.config.vision_feature_layer))

            def kernels():
                return LlavaKernels(model, processor, pp, depths, None, device=device,
                                    grids=grids)
        else:
            model, tok, pp = load_git(model_dir) if model_dir else random_git_base(seed)
            grids, depths = tower_branches(model.config.vision_config.num_hidden_layers)

            def kernels():
                return GitKernels(model, pp, depths, None, device=device, grids=grids)
        engines = []
        for _ in range(2):
            k = kernels()
            engines.append(HfEngine(k, HfTokenizer(tok, k.bos_id, min(k.eos_ids))))
        params = sum(p.numel() for p in model.parameters())
    for sttf, e in zip((False, True), engines, strict=True):
        e.set_knob("sttf_enabled", sttf)
        e.set_knob("anc_enabled", False)  # no trained router for random weights
    return engines[0], engines[1], int(params)


def _stats(ms: list[float]) -> dict[str, float]:
    return {"ms_mean": float(np.mean(ms)), "ms_p50": float(np.percentile(ms, 50))}


def run(model_dir: str | None = None, frames: int = 12, pan_px: int = 8, seed: int = 0,
        streams: tuple[str, ...] = STREAMS, log: Any = print, family: str = "git",
        motion_compensation: str = "off", backend: str = "torch",
        threads: int = 0) -> dict[str, Any]:
    if threads and backend == "torch":
        import torch

        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench_hf_") as scratch:
        dense, sttf, params = build_engines(model_dir, seed=seed, family=family,
                                            backend=backend, scratch=Path(scratch),
                                            threads=threads)
        try:
            rep = _run(dense, sttf, params, model_dir, frames, pan_px, seed, streams, log,
                       motion_compensation, backend)
            rep["machine"]["session_threads"] = getattr(sttf, "intra_op_threads", None)
            return rep
        finally:
            for e in (dense, sttf):
                close = getattr(e.kernels, "close", None)
                if callable(close):
                    close()


def _run(dense: Any, sttf: Any, params: int, model_dir: str | None, frames: int, pan_px: int,
         seed: int, streams: tuple[str, ...], log: Any, motion_compensation: str,
         backend: str) -> dict[str, Any]:
    sttf.set_knob("motion_compensation", motion_compensation)
    sttf.set_knob("exposure_compensation", motion_compensation != "off")
    family = sttf.kernels.family
    rows: dict[str, Any] = {}
    for kind in streams:
        clip = stream_frames(kind, frames, seed, pan_px)
        dense.reset()
        sttf.reset()
        ms: dict[str, list[float]] = {"dense": [], "sttf": []}
        recomputed, reused, fused, enc_ms, dec_ms = [], [], [], [], []
        passes: list[int] = []  # per decoded (not reused) STTF caption
        for frame in clip:
            for name, engine in (("dense", dense), ("sttf", sttf)):
                t0 = time.perf_counter()
                r = engine.process_frame(frame)
                ms[name].append((time.perf_counter() - t0) * 1e3)
                if name == "sttf":
                    recomputed.append(r.record.tokens_recomputed)
                    reused.append(r.record.caption_reused)
                    fused.append(r.record.tokens_fused)
                    enc_ms.append(r.record.latency_ms.get("encoder", 0.0))
                    dec_ms.append(r.record.latency_ms.get("decoder", 0.0))
                    if not r.record.caption_reused:
                        passes.append(r.record.decoder_passes)
        # the first frame is a full pass for both: report the stream after it too
        steady = {n: v[1:] for n, v in ms.items()}
        row = {
            "frames": len(clip),
            "dense": _stats(ms["dense"]), "sttf": _stats(ms["sttf"]),
            "speedup_mean": float(np.mean(ms["dense"]) / np.mean(ms["sttf"])),
            "speedup_after_first": float(np.mean(steady["dense"]) / np.mean(steady["sttf"])),
            "tokens_recomputed_pct": 100.0 * float(np.mean(recomputed)) / 196,
            "tokens_recomputed_after_first_pct": 100.0 * float(np.mean(recomputed[1:])) / 196,
            "captions_reused_pct": 100.0 * float(np.mean(reused)),
            "tokens_fused_mean": float(np.mean(fused)),
            "sttf_encoder_ms_mean": float(np.mean(enc_ms)),
            "sttf_decoder_ms_mean": float(np.mean(dec_ms)),
            # a decoded caption's sequential decoder passes (drafts from recent captions)
            "sttf_decoder_passes_mean": float(np.mean(passes)) if passes else 0.0,
        }
        rows[kind] = row
        log(f"{kind:8s} dense {row['dense']['ms_mean']:7.0f} ms  sttf {row['sttf']['ms_mean']:7.0f}"
            f" ms  x{row['speedup_mean']:.1f} (after frame 1: x{row['speedup_after_first']:.1f})"
            f"  recomputed {row['tokens_recomputed_pct']:.0f}%  reused "
            f"{row['captions_reused_pct']:.0f}%")
    branches = branch_costs(sttf, stream_frames("busy", 1, seed, pan_px)[0])
    for b in branches:
        log(f"branch {b['name']:6s} ({b['grid']}x{b['grid']} grid, {b['depth']} layers) "
            f"dense tower pass {b['ms_p50']:.0f} ms = {b['ms_vs_large']:.2f} of large, FLOPs "
            f"{b['flops_vs_large']:.2f}")
    return {
        "model": model_dir or ("random weights, GIT-base architecture" if family == "git"
                               else "random weights, llava-interleave-qwen-0.5b architecture "
                               "(SigLIP-so400m tower at 196 px / 14 x 14 tokens + Qwen2-0.5B)"),
        "family": family,
        "backend": backend,
        "motion_compensation": motion_compensation,
        "parameters": int(params),
        "knobs": sttf.knobs(),
        "frames_per_stream": frames, "pan_px_per_frame": pan_px,
        "machine": _machine(backend),
        "streams": rows,
        "branches": branches,
    }


def branch_costs(engine: Any, frame: np.ndarray, repeats: int = 3) -> list[dict[str, Any]]:
    """Each ANC branch's dense tower pass on `frame` (the kernels' own `run_encoder` on a
    fresh cache, as after a refresh): p50 ms of `repeats`, and against the full branch."""
    from tinygpt_ros.spec import flops as F
    from tinygpt_ros.spec.config import BRANCH_NAMES

    k, cfg = engine.kernels, engine.cfg
    x = k.frame_input(frame)
    emb = k.embed_frame(x)
    out = []
    for b in range(len(cfg.branch_depths)):
        ms = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            k.run_encoder(k.new_encoder_state(), emb, None, b, pixels=x)
            ms.append((time.perf_counter() - t0) * 1e3)
        out.append({"name": BRANCH_NAMES[b + 1], "grid": cfg.branch_grid(b),
                    "depth": cfg.branch_depths[b], "ms_p50": float(np.median(ms)),
                    "flops": F.encoder_flops(cfg, b)})
    for row in out:
        row["ms_vs_large"] = row["ms_p50"] / out[-1]["ms_p50"]
        row["flops_vs_large"] = row["flops"] / out[-1]["flops"]
    return out


def markdown(rep: dict[str, Any], command: str) -> str:
    lines = [
        f"Model: {rep['model']} ({rep['parameters'] / 1e6:.0f} M parameters), "
        f"{_backend_line(rep)}, "
        f"{rep['frames_per_stream']} frames of 640x480 per stream; one run: ratios are the "
        "result, absolute times depend on the machine and its load.",
        "",
        f"Command: `{command}`",
        "",
        "| stream | dense ms/frame | STTF ms/frame | speed-up | after frame 1 | tokens "
        "recomputed | captions reused | decoder passes per decoded caption | fused tokens |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, r in rep["streams"].items():
        lines.append(
            f"| {kind} | {r['dense']['ms_mean']:.0f} | {r['sttf']['ms_mean']:.0f} | "
            f"{r['speedup_mean']:.1f}x | {r['speedup_after_first']:.1f}x | "
            f"{r['tokens_recomputed_pct']:.0f}% | {r['captions_reused_pct']:.0f}% | "
            f"{r.get('sttf_decoder_passes_mean', 0.0):.1f} | {r['tokens_fused_mean']:.0f} |")
    k = rep["knobs"]
    lines += ["", f"Knobs: fusion_threshold {k['fusion_threshold']}, max_fused_tokens "
              f"{k['max_fused_tokens']}, caption_reuse_threshold {k['caption_reuse_threshold']}, "
              f"caption_draft {k.get('caption_draft', False)}, "
              f"refresh_interval {k['refresh_interval']}, motion_compensation "
              f"{rep.get('motion_compensation', 'off')}, ANC off (no router trained for random "
              "weights).", ""]
    if rep.get("branches"):
        lines += ["ANC branches, one dense tower pass each on a busy frame (p50 of 3; the "
                  "stream rows above run the large one):", "",
                  "| branch | token grid | layers | ms | vs large | FLOPs vs large |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {b['name']} | {b['grid']}x{b['grid']} | {b['depth']} | "
                  f"{b['ms_p50']:.0f} | {b['ms_vs_large']:.2f} | {b['flops_vs_large']:.2f} |"
                  for b in rep["branches"]]
        lines.append("")
    return "\n".join(lines)


def _machine(backend: str) -> dict[str, Any]:
    import torch

    machine: dict[str, Any] = {"platform": platform.platform(), "torch": torch.__version__,
                               "threads": torch.get_num_threads()}
    if backend == "onnxruntime":
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    return machine


def _backend_line(rep: dict[str, Any]) -> str:
    if rep.get("backend", "torch") == "onnxruntime":
        n = rep["machine"].get("session_threads")
        threads = f"{n} intra-op threads per session" if n else "default session threads"
        return (f"onnxruntime {rep['machine'].get('onnxruntime', '?')} (the graphs of "
                f"`tinygpt-ros export`; {threads})")
    return f"torch {rep['machine']['torch']}, {rep['machine']['threads']} threads"


def main(args: Any) -> int:
    import shlex
    import sys

    from tinygpt_ros.evaluation.bench import write_markdown_section

    rep = run(args.model, args.frames, args.pan_px, args.seed, tuple(args.streams),
              family=args.family, motion_compensation=args.motion_compensation,
              backend=args.backend, threads=getattr(args, "threads", 0))
    command = "tinygpt-ros " + shlex.join(sys.argv[1:])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rep, indent=2) + "\n")
    if args.markdown:
        section = "bench-hf" if rep["family"] == "git" else f"bench-hf-{rep['family']}"
        if rep["backend"] != "torch":
            section += f"-{rep['backend']}"
        write_markdown_section(args.markdown, markdown(rep, command), section)
    return 0
