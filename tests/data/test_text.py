"""The tokenisers of mmdist/data/text.py: the hashed word tokeniser (hand-worked cases and stability
properties) and CLIP's BPE (hand-worked ids, and open_clip's own tokenizer as the reference)."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from mmdist.data.text import (
    CLIP_BPE_VOCAB_SIZE,
    CLS_ID,
    NUM_RESERVED_IDS,
    PAD_ID,
    check_text_config,
    clip_bpe_tokenizer,
    encode_text,
    tokenize,
    word_id,
    words,
)

TEXT_CFG = {"text": {"tokenizer": "hashed", "vocab_size": 1000, "max_tokens": 4, "max_candidates": 3}}
BPE_CFG = {"text": {"tokenizer": "clip_bpe", "vocab_size": 1000, "max_tokens": 8, "max_candidates": 4}}


def test_words_lowercase_and_split_on_punctuation():
    assert words("C cuts the CARROT, then the person's knife-block!") == [
        "c", "cuts", "the", "carrot", "then", "the", "person's", "knife", "block",
    ]
    assert words("  ...  ") == []


def test_word_id_is_blake2b_modulo_buckets_after_reserved_ids():
    # Independent computation of the documented rule: blake2b-64 little-endian, mod (V - reserved), + reserved.
    digest = hashlib.blake2b(b"carrot", digest_size=8).digest()
    expected = NUM_RESERVED_IDS + int.from_bytes(digest, "little") % (1000 - NUM_RESERVED_IDS)
    assert word_id("carrot", 1000) == expected
    ids = [word_id(w, 50) for w in ("a", "b", "cut", "carrot", "knife", "pan", "x" * 100)]
    assert all(NUM_RESERVED_IDS <= i < 50 for i in ids)


def test_word_ids_do_not_depend_on_the_process_hash_seed():
    # Python's hash() is salted per process; decoder actors in other processes must agree.
    code = "from mmdist.data.text import word_id; print([word_id(w, 16384) for w in ['cut', 'carrot', 'pan']])"
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout)
    assert outputs == {f"{[word_id(w, 16384) for w in ['cut', 'carrot', 'pan']]}\n"}


def test_tokenize_hand_worked_case():
    ids, token_mask, candidate_mask = tokenize(["C cuts the carrot.", "", None, "Knife!", "never reached"], TEXT_CFG)
    v = 1000
    expected_ids = np.array(
        [
            [CLS_ID, word_id("c", v), word_id("cuts", v), word_id("the", v)],  # truncated to L = 4
            [CLS_ID, word_id("knife", v), PAD_ID, PAD_ID],  # "" and None are not candidates
            [CLS_ID, word_id("never", v), word_id("reached", v), PAD_ID],
        ]
    )
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(token_mask, expected_ids != PAD_ID)
    np.testing.assert_array_equal(candidate_mask, [True, True, True])
    assert ids.dtype == np.int64 and token_mask.dtype == bool and candidate_mask.dtype == bool


def test_tokenize_pads_missing_candidates():
    ids, token_mask, candidate_mask = tokenize(["pan"], TEXT_CFG)
    assert ids.shape == (3, 4) and token_mask.shape == (3, 4)
    np.testing.assert_array_equal(candidate_mask, [True, False, False])
    assert (ids[1:] == PAD_ID).all() and not token_mask[1:].any()
    assert encode_text("pan", 1000, 4) == [CLS_ID, word_id("pan", 1000)]


def test_tokenize_all_empty_has_no_candidate():
    _, token_mask, candidate_mask = tokenize(["", "?!"], TEXT_CFG)
    assert not candidate_mask.any() and not token_mask.any()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("vocab_size", 2, "vocab_size"),
        ("max_tokens", 1, "max_tokens"),
        ("max_candidates", 0, "max_candidates"),
        ("tokenizer", "wordpiece", "tokenizer"),
    ],
)
def test_check_text_config_names_the_key(key, value, message):
    cfg = {**TEXT_CFG["text"], key: value}
    with pytest.raises(ValueError, match=f"data.text.{message}"):
        check_text_config(cfg)


def test_clip_bpe_hand_worked_ids():
    # CLIP's published ids: <start_of_text> 49406, "a</w>" 320, "photo</w>" 1125, "of</w>" 539,
    # "cat</w>" 2368, <end_of_text> 49407; padding 0 under a False mask.
    ids, token_mask, candidate_mask = tokenize(["A photo of a CAT", None, "   "], BPE_CFG)
    np.testing.assert_array_equal(ids[0], [49406, 320, 1125, 539, 320, 2368, 49407, PAD_ID])
    np.testing.assert_array_equal(token_mask[0], [True] * 7 + [False])
    np.testing.assert_array_equal(candidate_mask, [True, False, False, False])  # None and blank are not candidates
    assert CLIP_BPE_VOCAB_SIZE == clip_bpe_tokenizer().vocab_size == 49408


def test_clip_bpe_matches_open_clip_tokenizer():
    """open_clip's own tokenizer (sot + BPE + eot, truncated with eot kept last, zero padded) is the reference."""
    from open_clip.tokenizer import tokenize as open_clip_tokenize

    sentences = [
        "The person cuts the carrot on the board.",
        "Up 5 !% today",  # "!%" is BPE ids 0 ("!") and 260: 0 is also the padding value, the mask must count it
        "Café crème, naïve résumé and 12,345 steps then a very long tail of words past the context",
        "person's knife-block",
    ]
    ids, token_mask, candidate_mask = tokenize(sentences, BPE_CFG)
    reference = open_clip_tokenize(sentences, context_length=BPE_CFG["text"]["max_tokens"]).numpy()
    np.testing.assert_array_equal(ids, reference)
    assert candidate_mask.all()
    tokenizer = clip_bpe_tokenizer()
    lengths = [min(len(tokenizer.encode(text)) + 2, BPE_CFG["text"]["max_tokens"]) for text in sentences]
    np.testing.assert_array_equal(token_mask, np.arange(BPE_CFG["text"]["max_tokens"]) < np.array(lengths)[:, None])
    assert ids[1, 3] == 0 and token_mask[1, 3] and not token_mask[1, 7]  # a real "!" (id 0) is a token, padding is not
    assert ids[2, -1] == tokenizer.eot_token_id  # truncated: the end token kept last
