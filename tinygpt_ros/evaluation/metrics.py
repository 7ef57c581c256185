"""Caption metrics (pycocoevalcap BLEU-4, METEOR, ROUGE-L, CIDEr; no SPICE) and accuracy.

Tokenisation is the COCO standard: Stanford PTBTokenizer (the jar shipped in
`pycocoevalcap/tokenizer`, run with `-preserveLines -lowerCase`) followed by removal of
pycocoevalcap's punctuation tokens. We run that jar ourselves with the temporary file in the
system temp directory, because `PTBTokenizer.tokenize` writes its temporary file into the
installed package (fails on a read-only install, races between concurrent evaluations).

CIDEr is pycocoevalcap's CIDEr-D, whose document frequencies come from the references of the set
being scored: a single item scores 0 and small sets are unstable. Score a few hundred segments
at once, and compare configurations on the same reference set (`caption_scores_many`).

METEOR and the tokenizer start Java subprocesses (METEOR: about 5 s to load its paraphrase
table, once per call however many configurations); the METEOR process is always terminated
before returning.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

METRIC_KEYS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_JAVA_TIMEOUT_S = 600.0


def _validate(refs: Mapping[Hashable, Sequence[str]], hyps: Mapping[Hashable, str], what: str):
    if not isinstance(refs, Mapping) or not refs:
        raise ValueError("refs must be a non-empty dict id -> list of reference captions")
    if not isinstance(hyps, Mapping):
        raise ValueError(f"{what} must be a dict id -> hypothesis caption")
    missing = [k for k in refs if k not in hyps]
    if missing:
        raise ValueError(f"{what} has no hypothesis for id(s) {missing[:5]!r} present in refs")
    extra = [k for k in hyps if k not in refs]
    if extra:
        raise ValueError(f"{what} has id(s) {extra[:5]!r} that refs does not have")
    for k, r in refs.items():
        if isinstance(r, str) or not isinstance(r, Sequence) or len(r) == 0:
            raise ValueError(f"refs[{k!r}] must be a non-empty list of str, got {r!r}")
        if not all(isinstance(s, str) for s in r):
            raise ValueError(f"refs[{k!r}] must contain only str")
    for k, h in hyps.items():
        if not isinstance(h, str):
            raise ValueError(f"{what}[{k!r}] must be a str, got {type(h).__name__}")


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """COCO tokenisation of each text: lowercase PTB tokens, punctuation removed, space-joined."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    if not texts:
        return []
    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    punct = set(ptbtokenizer.PUNCTUATIONS)
    lines = [" ".join(t.replace("\r", " ").replace("\n", " ").split()) for t in texts]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        name = f.name
    try:
        cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-encoding", "utf-8", name]
        proc = subprocess.run(cmd, capture_output=True, timeout=_JAVA_TIMEOUT_S, check=False)
    finally:
        os.unlink(name)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")[-500:]
        raise RuntimeError(f"PTBTokenizer failed (exit {proc.returncode}): {err}")
    out = proc.stdout.decode("utf-8").split("\n")
    if len(out) < len(lines):
        raise RuntimeError(f"PTBTokenizer returned {len(out)} lines for {len(lines)} captions")
    return [" ".join(w for w in line.split() if w not in punct) for line in out[: len(lines)]]


def _meteor_scores(gts: dict, results: Sequence[dict]) -> list[float]:
    """METEOR of each hypothesis set via one pycocoevalcap jar process (its start-up, about
    5 s loading the paraphrase table, dominates); the process is killed whatever happens."""
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    proc = scorer.meteor_p
    watchdog = threading.Timer(_JAVA_TIMEOUT_S, proc.kill)  # a hung jar ends readline with EOF
    watchdog.daemon = True
    watchdog.start()
    try:
        return [float(scorer.compute_score(gts, res)[0]) for res in results]
    finally:
        watchdog.cancel()
        try:
            proc.stdin.close()
        except OSError:
            pass
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        # Meteor.__del__ would take its lock (held forever if compute_score raised) and close
        # the process again: disarm it.
        scorer.lock = _NoLock()


class _NoLock:
    def acquire(self, *args: Any) -> bool:
        return True

    def release(self) -> None:
        pass


def _score_tokenized(gts: dict, results: Sequence[dict]) -> list[dict[str, float]]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    meteor = _meteor_scores(gts, results)
    out = []
    for res, met in zip(results, meteor, strict=True):
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out.append({
            "BLEU-4": float(bleu[3]),
            "METEOR": met,
            "ROUGE-L": float(Rouge().compute_score(gts, res)[0]),
            "CIDEr": float(Cider().compute_score(gts, res)[0]),
        })
    return out


def _tokenize_all(
    configs: Mapping[str, Mapping[Hashable, str]], refs: Mapping[Hashable, Sequence[str]]
) -> tuple[list[list[str]], dict[str, list[str]]]:
    """One Java call for everything: tokenised references per id and each config's tokenised
    hypotheses, both in `refs` order."""
    ids = list(refs)
    texts: list[str] = [r for k in ids for r in refs[k]]
    for hyps in configs.values():
        texts.extend(hyps[k] for k in ids)
    tok = iter(ptb_tokenize(texts))
    gts = [[next(tok) for _ in refs[k]] for k in ids]
    return gts, {name: [next(tok) for _ in ids] for name in configs}


def caption_scores_many(
    configs: Mapping[str, Mapping[Hashable, str]],
    refs: Mapping[Hashable, Sequence[str]],
) -> dict[str, dict[str, float]]:
    """Score several configurations' hypotheses against the same references.

    Returns `{config name: {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}}`. All texts are tokenised in
    one Java call. Because every configuration is scored on the same reference set, CIDEr-D's
    document frequencies (taken from the references) are identical across configurations and
    the numbers are comparable; note they still depend on the set (1 item -> CIDEr 0).
    """
    if not isinstance(configs, Mapping) or not configs:
        raise ValueError("configs must be a non-empty dict name -> {id: hypothesis}")
    _validate(refs, {k: "" for k in refs}, "refs")
    for name, hyps in configs.items():
        _validate(refs, hyps, f"configs[{name!r}]")
    gts, res = _tokenize_all(configs, refs)
    results = [{i: [h] for i, h in enumerate(hyps)} for hyps in res.values()]
    return dict(zip(configs, _score_tokenized(dict(enumerate(gts)), results), strict=True))


def cider_ratio_intervals(
    configs: Mapping[str, Mapping[Hashable, str]],
    refs: Mapping[Hashable, Sequence[str]],
    groups: Mapping[Hashable, Hashable],
    baseline: str,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Paired bootstrap interval of CIDEr(config) / CIDEr(baseline) for every config.

    Resamples whole groups (clips: their segments are correlated) with replacement, scores
    every configuration on the same resample (CIDEr-D's document frequencies come from the
    resampled references) and returns the central `level` interval of the ratio (NaN when the
    baseline scored 0 on some resample). The tokenisation runs once; each resample costs one
    CIDEr pass per configuration.
    """
    from pycocoevalcap.cider.cider import Cider

    if baseline not in configs:
        raise ValueError(f"baseline {baseline!r} is not among the configs {list(configs)}")
    if n_boot < 10 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 10 and 0 < level < 1, got {n_boot}, {level}")
    for name, hyps in configs.items():
        _validate(refs, hyps, f"configs[{name!r}]")
    ids = list(refs)
    missing = [k for k in ids if k not in groups]
    if missing:
        raise ValueError(f"groups has no entry for id(s) {missing[:5]!r}")
    gts, res = _tokenize_all(configs, refs)
    members: dict[Hashable, list[int]] = {}
    for i, k in enumerate(ids):
        members.setdefault(groups[k], []).append(i)
    group_list = list(members.values())
    rng = np.random.default_rng(seed)
    ratios: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(n_boot):
        picked = [i for g in rng.integers(len(group_list), size=len(group_list))
                  for i in group_list[g]]
        sample_gts = {j: gts[i] for j, i in enumerate(picked)}
        scores = {name: float(Cider().compute_score(
            sample_gts, {j: [r[i]] for j, i in enumerate(picked)})[0])
            for name, r in res.items()}
        for name in configs:
            base = scores[baseline]
            ratios[name].append(scores[name] / base if base > 0 else float("nan"))
    tail = 100 * (1 - level) / 2
    return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail)))
            for name, v in ratios.items()}


def caption_scores(
    refs: Mapping[Hashable, Sequence[str]], hyps: Mapping[Hashable, str]
) -> dict[str, float]:
    """BLEU-4, METEOR, ROUGE-L, CIDEr (corpus level) of `hyps[id]` against `refs[id]`.

    Raises ValueError when the ids differ or a reference list is empty (naming the id).
    CIDEr-D takes document frequencies from the scored set itself: one item scores 0 and small
    sets are unstable, so score a few hundred items at once.
    """
    _validate(refs, hyps, "hyps")
    return caption_scores_many({"_": hyps}, refs)["_"]


def accuracy(pred: Any, labels: Any) -> float:
    """Fraction of positions where `pred == labels` (lists, numpy arrays or CPU tensors)."""
    p = np.asarray(pred)
    y = np.asarray(labels)
    if p.shape != y.shape:
        raise ValueError(f"pred shape {p.shape} does not match labels shape {y.shape}")
    if p.size == 0:
        raise ValueError("pred and labels are empty")
    return float(np.mean(p == y))
