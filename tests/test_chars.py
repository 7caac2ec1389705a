"""Character ids (reference §1)."""

import numpy as np
import pytest

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


def _spelled_one_by_one(tokens, max_chars):
    """The character ids written out token by token, as the format describes them."""
    ids = np.full((len(tokens), max_chars), 261, dtype=np.int64)
    for row, token in enumerate(tokens):
        if token in ("<S>", "</S>"):
            spelled = [257 if token == "<S>" else 258]
        else:
            spelled = [byte + 1 for byte in token.encode("utf-8", errors="ignore")[: max_chars - 2]]
        ids[row, : len(spelled) + 2] = [259, *spelled, 260]
    return ids


def _random_sentences(rng, n):
    pieces = ["the", "", "é", "日本語", "\ud800", "<S>", "</S>", "x" * 60, "ü" * 30, "a\u0301", "𝔘", "-", "THE"]
    return [[str(rng.choice(pieces)) * int(rng.integers(1, 3)) for _ in range(int(rng.integers(0, 12)))] for _ in range(n)]


@pytest.mark.parametrize("max_chars", [50, 8])
def test_batched_encoding_matches_token_by_token_spelling(max_chars):
    rng = np.random.default_rng(0)
    for sentences in (_random_sentences(rng, 40) for _ in range(20)):
        tokens = [token for sentence in sentences for token in sentence]
        np.testing.assert_array_equal(encode_tokens(tokens, max_chars), _spelled_one_by_one(tokens, max_chars))
        char_ids, index, lengths, keys = index_batch(sentences, max_chars)
        assert lengths.tolist() == [len(sentence) for sentence in sentences]
        assert keys == list(dict.fromkeys(token_key(token, max_chars) for token in tokens))
        for row, sentence in enumerate(sentences):
            np.testing.assert_array_equal(char_ids[index[row, : len(sentence)]], _spelled_one_by_one(sentence, max_chars))
            assert (index[row, len(sentence) :] == 0).all()
