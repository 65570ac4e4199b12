"""Narrations -> fixed-shape token ids, by one of two tokenisers (`data.text.tokenizer`):

- `hashed` (default): words hashed into `data.text.vocab_size` buckets; `[CLS] w_1 ... w_{L-1}`.
- `clip_bpe`: CLIP's byte-pair encoding (open_clip's `SimpleTokenizer` and the vocabulary shipped in
  its wheel, 49408 ids; nothing is downloaded); `<start_of_text> bpe ... <end_of_text>`, truncated
  to L with the end token kept last, exactly as open_clip tokenises. Its vocabulary is its own:
  `data.text.vocab_size` is not read. Use it with a CLIP text tower (`model.text.backbone: open_clip`).

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
Each candidate is `[CLS] w_1 ... w_{L-1}` (hashed) or `[SOT] bpe ... [EOT]` (clip_bpe), truncated
to L; the first id lets a transformer text encoder pool without knowing the length. Padding is
PAD_ID (0) under token_mask False for both (0 is also a BPE token, "!": the mask tells them apart).
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np

from mmdist.config import ConfigError

PAD_ID = 0  # padding (token_mask False)
CLS_ID = 1  # first token of every candidate
NUM_RESERVED_IDS = 2  # word buckets start after the reserved ids

TOKENIZERS = ("hashed", "clip_bpe")
# len(open_clip SimpleTokenizer().encoder): 49152 - 256 - 2 merges + 2 x 256 byte symbols + 2 specials.
# A constant so that building a model does not load the tokeniser (tests/data/test_text.py checks it).
CLIP_BPE_VOCAB_SIZE = 49408

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


@functools.lru_cache(maxsize=1)
def clip_bpe_tokenizer():
    """open_clip's BPE tokeniser, built once per process (its 48k merges take about a second).
    Imported here, not with the module: processes on the hashed tokeniser never load open_clip."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def encode_clip_bpe(text: str, max_tokens: int) -> list[int]:
    """`[SOT] + BPE ids + [EOT]` of one narration, truncated to `max_tokens` with EOT kept last
    (open_clip's own rule); `[]` when the text has no BPE token."""
    tokenizer = clip_bpe_tokenizer()
    ids = tokenizer.encode(text)
    if not ids:
        return []
    ids = [tokenizer.sot_token_id, *ids, tokenizer.eot_token_id]
    if len(ids) > max_tokens:
        ids = ids[:max_tokens]
        ids[-1] = tokenizer.eot_token_id
    return ids


def vocabulary_size(tokenizer: str, hashed_buckets: int) -> int:
    """Token ids the text encoder must embed: the hashed buckets, or CLIP's BPE vocabulary."""
    return CLIP_BPE_VOCAB_SIZE if tokenizer == "clip_bpe" else hashed_buckets


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
    if text_cfg["tokenizer"] == "clip_bpe":
        encode = functools.partial(encode_clip_bpe, max_tokens=max_tokens)
    else:
        encode = functools.partial(encode_text, vocab_size=vocab_size, max_tokens=max_tokens)
    ids = np.full((max_candidates, max_tokens), PAD_ID, dtype=np.int64)  # [P, L]
    token_mask = np.zeros((max_candidates, max_tokens), dtype=bool)  # [P, L]
    candidate_mask = np.zeros(max_candidates, dtype=bool)  # [P]
    row = 0
    for text in texts:
        if row == max_candidates:
            break
        encoded = encode(text) if text is not None else []
        if not encoded:
            continue
        ids[row, : len(encoded)] = encoded
        token_mask[row, : len(encoded)] = True
        candidate_mask[row] = True
        row += 1
    return ids, token_mask, candidate_mask


def check_text_config(text_cfg: dict) -> None:
    """Values the tokeniser cannot work with; key names are checked by the pipeline's config check."""
    if text_cfg["tokenizer"] not in TOKENIZERS:
        raise ConfigError(f"data.text.tokenizer must be one of {list(TOKENIZERS)}, got {text_cfg['tokenizer']!r}")
    if text_cfg["vocab_size"] <= NUM_RESERVED_IDS:
        raise ConfigError(
            f"data.text.vocab_size must exceed the {NUM_RESERVED_IDS} reserved ids, got {text_cfg['vocab_size']}"
        )
    if text_cfg["max_tokens"] < 2:
        raise ConfigError(
            f"data.text.max_tokens must be >= 2 (CLS + one word, or SOT + EOT), got {text_cfg['max_tokens']}"
        )
    if text_cfg["max_candidates"] < 1:
        raise ConfigError(f"data.text.max_candidates must be >= 1, got {text_cfg['max_candidates']}")
