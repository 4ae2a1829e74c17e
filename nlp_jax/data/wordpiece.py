"""BERT's WordPiece tokenizer, in pure Python, for Hugging Face BERT checkpoints (vocab.txt).

Gives the ids of Hugging Face's BertTokenizer: BasicTokenizer (clean text, split CJK characters,
lower-case and strip accents, split punctuation and whitespace), then greedy longest-match-first
WordPiece with `##` continuations. Same interface as `nlp_jax.data.tokenizer.Tokenizer` where a
caller depends on it (special ids, vocab_size, encode/encode_batch/decode, id_to_piece).

One deliberate difference from Hugging Face: a literal "[MASK]" (or other special token) typed in
the text is tokenized as text, never mapped to the special id, as in our SentencePiece tokenizer.
"""
from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Sequence

import numpy as np

from nlp_jax.data.tokenizer import CLS, MASK, PAD, SEP, UNK

_log = logging.getLogger(__name__)

MAX_CHARS_PER_WORD = 100  # longer words become [UNK], as in BERT


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    # BERT counts \t \n \r as whitespace, not control.
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    # All non-alphanumeric ASCII ("^", "$", "`" are not Unicode punctuation) plus Unicode P*.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


# The CJK Unified Ideographs blocks (not Hangul, Hiragana or Katakana, which are space-separated
# or handled by WordPiece as any other script).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def basic_tokenize(text: str, lower_case: bool = True, strip_accents: bool | None = None,
                   split_cjk: bool = True) -> list[str]:
    """Text -> words before WordPiece. strip_accents=None follows lower_case (as BERT does)."""
    if strip_accents is None:
        strip_accents = lower_case
    chars = []
    for ch in text:
        if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif split_cjk and _is_cjk(ch):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    # NFC first so that composed and decomposed input give the same ids.
    text = unicodedata.normalize("NFC", "".join(chars))
    words = []
    for word in text.split():
        if lower_case:
            word = word.lower()
        if strip_accents:
            word = "".join(c for c in unicodedata.normalize("NFD", word)
                           if unicodedata.category(c) != "Mn")
        piece = ""
        for ch in word:
            if _is_punctuation(ch):
                words += [piece, ch] if piece else [ch]
                piece = ""
            else:
                piece += ch
        if piece:
            words.append(piece)
    return words


# (character, start, end): a character after normalisation and the [start, end) span of the
# original text it came from.
_AlignedChar = tuple[str, int, int]


def _clusters(chars: list[_AlignedChar]) -> list[list[_AlignedChar]]:
    """Splits at every starter (combining class 0), so Unicode normalisation, lower-casing and
    accent stripping never act across two clusters (Hangul conjoining vowels/finals join the
    syllable before them)."""
    out: list[list[_AlignedChar]] = []
    for c in chars:
        joins = unicodedata.combining(c[0]) or 0x1160 <= ord(c[0]) <= 0x11FF
        if out and joins:
            out[-1].append(c)
        else:
            out.append([c])
    return out


def _transform_aligned(chars: list[_AlignedChar], fn) -> list[_AlignedChar]:
    """Applies the str -> str `fn` to the word `chars`, keeping each output character's origin.

    The output text is always exactly fn(word), so ids equal those of `basic_tokenize`. Each output
    character gets the span of its cluster; when per-cluster results do not line up with fn(word)
    (context rules such as the Greek final sigma keep the length, so they still line up), every
    character gets the whole word's span: coarser, never wrong.
    """
    word = "".join(c for c, _, _ in chars)
    target = fn(word)
    if target == word:
        return chars
    per_cluster = [
        (ch, min(s for _, s, _ in cl), max(e for _, _, e in cl))
        for cl in _clusters(chars)
        for ch in fn("".join(c for c, _, _ in cl))
    ]
    if len(per_cluster) == len(target):
        return [(ch, s, e) for ch, (_, s, e) in zip(target, per_cluster)]
    start, end = min(s for _, s, _ in chars), max(e for _, _, e in chars)
    return [(ch, start, end) for ch in target]


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def basic_tokenize_with_offsets(text: str, lower_case: bool = True,
                                strip_accents: bool | None = None,
                                split_cjk: bool = True) -> list[list[_AlignedChar]]:
    """`basic_tokenize` that keeps track of the original text: one list of (char, start, end) per
    word, where "".join(chars) is the word `basic_tokenize` gives and [start, end) are str indices
    of `text` (several characters share a span when normalisation merged or split characters)."""
    if strip_accents is None:
        strip_accents = lower_case
    # Cleaning and CJK splitting map characters one to one: do them on the original indices.
    raw_words: list[list[_AlignedChar]] = []
    current: list[_AlignedChar] = []
    for i, ch in enumerate(text):
        if ch == "\x00" or ch == "\ufffd" or _is_control(ch):
            continue
        # str.isspace too: basic_tokenize's text.split() also splits on e.g. U+2028.
        if _is_whitespace(ch) or ch.isspace() or (split_cjk and _is_cjk(ch)):
            if current:
                raw_words.append(current)
            current = []
            if not (_is_whitespace(ch) or ch.isspace()):
                raw_words.append([(ch, i, i + 1)])
        else:
            current.append((ch, i, i + 1))
    if current:
        raw_words.append(current)

    words = []
    for chars in raw_words:
        # NFC never composes across the spaces basic_tokenize puts between words, so per word is
        # the same as its whole-text NFC.
        chars = _transform_aligned(chars, lambda w: unicodedata.normalize("NFC", w))
        if lower_case:
            chars = _transform_aligned(chars, str.lower)
        if strip_accents:
            chars = _transform_aligned(chars, _strip_accents)
        piece: list[_AlignedChar] = []
        for c in chars:
            if _is_punctuation(c[0]):
                words += [piece, [c]] if piece else [[c]]
                piece = []
            else:
                piece.append(c)
        if piece:
            words.append(piece)
    return words


class WordPieceTokenizer:
    """Text <-> ids with a BERT vocabulary. `encode` adds no special tokens."""

    def __init__(self, vocab: Sequence[str], lower_case: bool = True,
                 strip_accents: bool | None = None, split_cjk: bool = True, fast=None):
        """vocab: the pieces in id order. fast: optional `tokenizers.Tokenizer` for encode_batch."""
        self._pieces = list(vocab)
        self._ids = {p: i for i, p in enumerate(self._pieces)}
        self.lower_case, self.strip_accents, self.split_cjk = lower_case, strip_accents, split_cjk
        self.vocab_size = len(self._pieces)
        missing = [t for t in (PAD, UNK, CLS, SEP, MASK) if t not in self._ids]
        if missing:
            raise ValueError(f"BERT vocabulary lacks the special tokens {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self._ids[t] for t in (PAD, UNK, CLS, SEP, MASK))
        self._fast = fast

    @property
    def special_ids(self) -> tuple[int, ...]:
        return self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > MAX_CHARS_PER_WORD:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            # Greedy longest match first; a word with any unmatched part is one [UNK].
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self._ids:
                    ids.append(self._ids[piece])
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids

    def encode(self, text: str) -> list[int]:
        words = basic_tokenize(text, self.lower_case, self.strip_accents, self.split_cjk)
        return [i for w in words for i in self._wordpiece(w)]

    def _wordpiece_ranges(self, word: str) -> list[tuple[int, int, int]]:
        """`_wordpiece` as (id, start, end): the piece covers word[start:end]."""
        if len(word) > MAX_CHARS_PER_WORD:
            return [(self.unk_id, 0, len(word))]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self._ids:
                    pieces.append((self._ids[piece], start, end))
                    start = end
                    break
            else:
                return [(self.unk_id, 0, len(word))]
        return pieces

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """-> (ids, spans): ids as `encode(text)` (the pure-Python path); spans[i] = [start, end)
        str indices of `text` covered by piece i (a whole word for [UNK])."""
        ids, spans = [], []
        for chars in basic_tokenize_with_offsets(text, self.lower_case, self.strip_accents,
                                                 self.split_cjk):
            word = "".join(c for c, _, _ in chars)
            for i, a, b in self._wordpiece_ranges(word):
                ids.append(i)
                spans.append((min(s for _, s, _ in chars[a:b]), max(e for _, _, e in chars[a:b])))
        return ids, spans

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self._fast is not None:
            return [e.ids for e in self._fast.encode_batch(list(texts), add_special_tokens=False)]
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        """ids: any int sequence or array (specials decode to nothing); `##` pieces rejoin words."""
        special = set(self.special_ids)
        pieces = [self._pieces[i] for i in np.asarray(ids, dtype=np.int64).ravel().tolist()
                  if i not in special]
        return " ".join(pieces).replace(" ##", "")

    def id_to_piece(self, i: int) -> str:
        return self._pieces[int(i)]

    @classmethod
    def load(cls, path: str, use_fast: bool | None = None) -> WordPieceTokenizer:
        """`path`: a Hugging Face directory with vocab.txt and/or tokenizer.json.

        Casing comes from tokenizer_config.json, else tokenizer.json's normalizer, else the
        vocabulary (lower-case when it has no upper-case pieces). use_fast: encode_batch through
        the `tokenizers` package when tokenizer.json exists (None: when importable).
        """
        vocab_txt, tok_json = (os.path.join(path, f) for f in ("vocab.txt", "tokenizer.json"))
        tok_spec = None
        if os.path.isfile(tok_json):
            with open(tok_json, encoding="utf-8") as f:
                tok_spec = json.load(f)
        if os.path.isfile(vocab_txt):
            with open(vocab_txt, encoding="utf-8") as f:
                # Only the newline ends a piece: some vocabularies hold other whitespace characters.
                vocab = [line.rstrip("\n") for line in f]
        elif tok_spec is not None and tok_spec.get("model", {}).get("type") == "WordPiece":
            by_id = {i: p for p, i in tok_spec["model"]["vocab"].items()}
            vocab = [by_id[i] for i in range(len(by_id))]
        else:
            raise FileNotFoundError(f"{path}: no vocab.txt, nor a WordPiece tokenizer.json")

        options = {}
        cfg_file = os.path.join(path, "tokenizer_config.json")
        if os.path.isfile(cfg_file):
            with open(cfg_file, encoding="utf-8") as f:
                options = json.load(f)
        norm = (tok_spec or {}).get("normalizer") or {}
        if norm.get("type") != "BertNormalizer":
            norm = {}
        lower = options.get("do_lower_case", norm.get("lowercase"))
        if lower is None:
            lower = not any(p != p.lower() for p in vocab if not p.startswith("["))
        strip = options.get("strip_accents", norm.get("strip_accents"))
        split_cjk = options.get("tokenize_chinese_chars", norm.get("handle_chinese_chars", True))

        fast = None
        if tok_spec is not None and use_fast is not False:
            fast = _load_fast(tok_json, required=bool(use_fast))
        return cls(vocab, lower_case=bool(lower), strip_accents=strip,
                   split_cjk=bool(split_cjk), fast=fast)


def _load_fast(tok_json: str, required: bool):
    try:
        import tokenizers
    except ImportError:
        if required:
            raise
        return None
    fast = tokenizers.Tokenizer.from_file(tok_json)
    fast.no_truncation()
    fast.no_padding()
    # Literal special tokens in text are text (see the module docstring), on both paths alike.
    if hasattr(fast, "encode_special_tokens"):
        fast.encode_special_tokens = True
    elif required:
        raise RuntimeError("this `tokenizers` version cannot treat special tokens as text")
    else:
        return None
    return fast
