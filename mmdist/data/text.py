"""Word-level tokeniser with a hashed vocabulary: narrations -> fixed-shape token ids.

Why hashing rather than a learned or shipped vocabulary:
- nothing is downloaded and nothing is shipped: the vocabulary is a pure function of the word,
  so every decoder actor, on every node, maps a word to the same id with no shared state and
  no pass over the data before training;
- it is open: a word first seen at evaluation still gets an id (its bucket), never `unk`;
- collisions are rare at the sizes we use (a few thousand distinct words in `vocab_size`
  buckets) and only merge two words into one embedding row, which the text encoder tolerates.
The hash is blake2b, not Python's `hash()`, because `hash()` of a str is salted per process.

Layout of one clip's text (SPEC Sec. 1, MMV eq. 2 MIL candidates):
    ids             int64 [P, L]   P = max_candidates narrations, L = max_tokens
    token_mask      bool  [P, L]   True on real tokens (CLS included)
    candidate_mask  bool  [P]      True on real narrations
Each candidate is `[CLS] w_1 ... w_{L-1}`, truncated to L; the CLS id lets a transformer
text encoder pool without knowing the length.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

PAD_ID = 0  # padding (token_mask False)
CLS_ID = 1  # first token of every candidate
NUM_RESERVED_IDS = 2  # word buckets start after the reserved ids

TEXT_CONFIG_KEYS = {"vocab_size": int, "max_tokens": int, "max_candidates": int}

# Lower-cased letters/digits, keeping in-word apostrophes ("person's" is one word).
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-case `text` and split it into words; punctuation and spaces separate words."""
    return _WORD.findall(text.lower())


def word_id(word: str, vocab_size: int) -> int:
    """Stable id of `word` in [NUM_RESERVED_IDS, vocab_size): blake2b hash, modulo the buckets."""
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return NUM_RESERVED_IDS + int.from_bytes(digest, "little") % (vocab_size - NUM_RESERVED_IDS)


def encode_text(text: str, vocab_size: int, max_tokens: int) -> list[int]:
    """`[CLS] + word ids` of one narration, truncated to `max_tokens`; `[]` when it has no word."""
    ids = [word_id(word, vocab_size) for word in words(text)]
    if not ids:
        return []
    return ([CLS_ID] + ids)[:max_tokens]


def tokenize(texts: list[str | None], cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenise one clip's narration candidates into fixed shapes.

    `texts` is the clip's `text` list (the first is the clip's own narration, the rest are
    temporally close ones: MIL-NCE positives, MMV eq. 2). `cfg` is the `data` config (reads
    `cfg["text"]`). A candidate that is None or has no word is not a candidate (its
    candidate_mask is False); candidates beyond `max_candidates` are dropped in order.
    The caller decides what an all-empty list means (the decoder drops the record).

    Returns ids int64 [P, L], token_mask bool [P, L], candidate_mask bool [P].
    """
    text_cfg = cfg["text"]
    vocab_size, max_tokens, max_candidates = (
        text_cfg["vocab_size"],
        text_cfg["max_tokens"],
        text_cfg["max_candidates"],
    )
    ids = np.full((max_candidates, max_tokens), PAD_ID, dtype=np.int64)  # [P, L]
    token_mask = np.zeros((max_candidates, max_tokens), dtype=bool)  # [P, L]
    candidate_mask = np.zeros(max_candidates, dtype=bool)  # [P]
    row = 0
    for text in texts:
        if row == max_candidates:
            break
        encoded = encode_text(text, vocab_size, max_tokens) if text is not None else []
        if not encoded:
            continue
        ids[row, : len(encoded)] = encoded
        token_mask[row, : len(encoded)] = True
        candidate_mask[row] = True
        row += 1
    return ids, token_mask, candidate_mask


def check_text_config(text_cfg: dict) -> None:
    """Values the tokeniser cannot work with; key names are checked by the pipeline's config check."""
    if text_cfg["vocab_size"] <= NUM_RESERVED_IDS:
        raise ValueError(
            f"data.text.vocab_size must exceed the {NUM_RESERVED_IDS} reserved ids, got {text_cfg['vocab_size']}"
        )
    if text_cfg["max_tokens"] < 2:
        raise ValueError(f"data.text.max_tokens must be >= 2 (CLS + one word), got {text_cfg['max_tokens']}")
    if text_cfg["max_candidates"] < 1:
        raise ValueError(f"data.text.max_candidates must be >= 1, got {text_cfg['max_candidates']}")
