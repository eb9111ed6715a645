"""The stored example windows: encoding with padding, and decoding into tokens and aligned activations."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from app.services.examples import PAD_TOKEN_ID, decode_example, encode_windows

VOCAB = ["a", " b", " c", "."]


def test_windows_round_trip_with_padding_trimmed_and_the_center_shifted():
    ids = np.array([[-1, -1, 1, 2, 3], [0, 1, 2, -1, -1]], dtype=np.int32)
    acts = np.array([[0, 0, 0.5, 2.0, 0.25], [1.5, 0, 3.0, 0, 0]], dtype=np.float16)
    token_bytes, act_bytes = encode_windows(ids, acts)
    assert token_bytes[0] == np.array([PAD_TOKEN_ID, PAD_TOKEN_ID, 1, 2, 3], dtype="<u2").tobytes()
    assert act_bytes[1] == acts[1].astype("<f2").tobytes()
    first = decode_example(SimpleNamespace(token_ids=token_bytes[0], activations=act_bytes[0], center=3), VOCAB)
    assert first == {"tokens": [" b", " c", "."], "activations": [0.5, 2.0, 0.25], "center": 1}
    second = decode_example(SimpleNamespace(token_ids=token_bytes[1], activations=act_bytes[1], center=2), VOCAB)
    assert second == {"tokens": ["a", " b", " c"], "activations": [1.5, 0.0, 3.0], "center": 2}


def test_an_id_outside_the_vocabulary_is_shown_by_number():
    token_bytes, act_bytes = encode_windows(np.array([[7]]), np.array([[1.0]]))
    decoded = decode_example(SimpleNamespace(token_ids=token_bytes[0], activations=act_bytes[0], center=0), VOCAB)
    assert decoded["tokens"] == ["<7>"]


def test_ids_that_do_not_fit_uint16_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        encode_windows(np.array([[PAD_TOKEN_ID]]), np.array([[1.0]]))


def test_mismatched_byte_strings_are_refused():
    row = SimpleNamespace(token_ids=b"\x01\x00\x02\x00", activations=b"\x00\x3c", center=0)
    with pytest.raises(ValueError, match="2 token ids but 1 activations"):
        decode_example(row, VOCAB)
