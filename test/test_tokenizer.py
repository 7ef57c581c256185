"""Word tokenizer: deterministic vocabulary, round trip, unknown words, teacher-forcing tensors."""

from __future__ import annotations

import json

import pytest

from tinygpt_ros.spec.tokenizer import Tokenizer, normalize

CAPTIONS = [
    "A red circle moves left.",
    "the red circle is still",
    "A blue square, moving right!",
    "the robot's arm waves",
]


def test_normalize_lowercases_and_strips_punctuation():
    assert normalize("  A Red-Circle, moves LEFT!! ") == "a red circle moves left"
    assert normalize("the robot's arm") == "the robots arm"
    assert normalize("...") == ""


def test_build_is_deterministic_and_ordered():
    tok = Tokenizer.build(CAPTIONS)
    assert tok.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    # counts: a 2, red 2, circle 2, the 2, then singletons alphabetically
    assert tok.itos[4:8] == ["a", "circle", "red", "the"]
    assert tok.itos[8:] == sorted(tok.itos[8:])
    assert Tokenizer.build(reversed(CAPTIONS)).itos == tok.itos
    assert tok.vocab_size == len(tok.itos) == len(set(tok.itos))
    assert Tokenizer.build(CAPTIONS, min_count=2).itos[4:] == ["a", "circle", "red", "the"]


def test_round_trip_and_unknown_words():
    tok = Tokenizer.build(CAPTIONS)
    ids = tok.encode("A red circle moves left.")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "a red circle moves left"
    assert tok.encode("red", add_bos=False, add_eos=False) == [tok.stoi["red"]]
    unk = tok.encode("a purple circle", add_bos=False, add_eos=False)
    assert unk == [tok.stoi["a"], tok.unk_id, tok.stoi["circle"]]
    assert tok.decode(unk) == "a circle"  # specials are skipped
    # decoding stops at eos and skips pad / bos
    assert tok.decode([tok.bos_id, tok.stoi["red"], tok.pad_id, tok.eos_id, tok.stoi["a"]]) == "red"
    with pytest.raises(ValueError, match="ids"):
        tok.decode([tok.vocab_size])


def test_dict_round_trip_is_json_serialisable():
    tok = Tokenizer.build(CAPTIONS)
    again = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again == tok and again.itos == tok.itos
    with pytest.raises(ValueError, match="itos"):
        Tokenizer.from_dict({"kind": "word", "itos": ["a", "b"]})
    with pytest.raises(ValueError, match="kind"):
        Tokenizer.from_dict({"kind": "bpe", "itos": tok.itos})


def test_batch_encode_teacher_forcing():
    tok = Tokenizer.build(CAPTIONS)
    inputs, targets = tok.batch_encode(["red circle", "a red circle moves left"], max_len=3)
    assert inputs.shape == targets.shape == (2, 4)
    r, c, a = tok.stoi["red"], tok.stoi["circle"], tok.stoi["a"]
    assert inputs[0].tolist() == [tok.bos_id, r, c, tok.pad_id]
    assert targets[0].tolist() == [r, c, tok.eos_id, tok.pad_id]
    assert inputs[1].tolist() == [tok.bos_id, a, r, c]  # cut to max_len words, eos kept
    assert targets[1].tolist() == [a, r, c, tok.eos_id]
    fixed, _ = tok.batch_encode(["red"], max_len=5, fixed_length=True)
    assert fixed.shape == (1, 6)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="min_count"):
        Tokenizer.build(CAPTIONS, min_count=0)
    with pytest.raises(ValueError, match="captions"):
        Tokenizer.build("a single string")
    with pytest.raises(ValueError, match="max_len"):
        Tokenizer.build(CAPTIONS).batch_encode(["a"], max_len=0)
