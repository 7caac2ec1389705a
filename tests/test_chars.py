"""Character ids (reference §1)."""

import numpy as np

from spacy_elmo.chars import batch_to_ids, encode_tokens, index_batch, token_key


def test_plain_token_is_bow_bytes_eow_padding_plus_one():
    ids = encode_tokens(["th"])[0]
    assert ids[:6].tolist() == [259, 117, 105, 260, 261, 261]
    assert ids.shape == (50,) and (ids[4:] == 261).all()


def test_boundary_tokens_are_not_spelled_out():
    bos, eos = encode_tokens(["<S>", "</S>"])
    assert bos[:4].tolist() == [259, 257, 260, 261]
    assert eos[:4].tolist() == [259, 258, 260, 261]


def test_utf8_bytes_and_truncation_to_48_bytes():
    assert encode_tokens(["é"])[0][:4].tolist() == [259, 0xC3 + 1, 0xA9 + 1, 260]
    long = "ü" * 30  # 60 bytes: cut at 48 bytes
    ids = encode_tokens([long])[0]
    assert ids[49] == 260 and ids[48] == 0xBC + 1
    assert token_key(long) == long.encode("utf-8")[:48]


def test_empty_token_and_batch_padding():
    assert encode_tokens([""])[0][:3].tolist() == [259, 260, 261]
    ids = batch_to_ids([["a", "b"], []])
    assert ids.shape == (2, 2, 50)
    assert (ids[1] == 0).all() and (ids[0] > 0).all()


def test_index_batch_deduplicates_by_what_the_model_sees():
    long_a, long_b = "x" * 48 + "a", "x" * 48 + "b"  # identical after truncation
    char_ids, index, lengths, keys = index_batch([["the", "cat", "the"], [long_a, long_b, "<S>"]])
    assert lengths.tolist() == [3, 3]
    assert index[0].tolist() == [0, 1, 0]
    assert index[1, 0] == index[1, 1]
    assert len(keys) == char_ids.shape[0] == 4
    np.testing.assert_array_equal(char_ids[index[1, 2]], encode_tokens(["<S>"])[0])
