"""SentencePiece tokenizer with BERT's special tokens at ids 0..4.

Trained in memory on the pretraining sentences on the first run and kept as WORKDIR/tokenizer/spm.model,
so that a restarted or evaluated run tokenizes exactly as the run that wrote its checkpoints.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import sentencepiece as spm

_log = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4, in this order
MODEL_FILENAME = "spm.model"

# Enough sentences for a stable unigram vocabulary; more only slows training (SentencePiece samples).
_MAX_TRAINING_SENTENCES = 1_000_000


class Tokenizer:
    """Text <-> ids. `encode` adds no special tokens: instance layout is the caller's business."""

    def __init__(self, processor: spm.SentencePieceProcessor):
        self._sp = processor
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(
            len(SPECIAL_TOKENS)
        )
        self.vocab_size = processor.get_piece_size()
        found = [processor.id_to_piece(i) for i in range(min(len(SPECIAL_TOKENS), self.vocab_size))]
        if found != list(SPECIAL_TOKENS):
            raise ValueError(
                f"SentencePiece model has pieces {found} at ids 0..4, expected {list(SPECIAL_TOKENS)}; "
                f"use a model made by train_tokenizer"
            )

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(range(len(SPECIAL_TOKENS)))

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # One call: SentencePiece encodes the batch in C++ threads.
        return self._sp.encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """-> (ids, spans): ids as `encode(text)`; spans[i] = [start, end) str indices of `text` that
        piece i covers. A piece made only by normalisation (the leading "▁", the first of several
        pieces NFKC expands one character into) covers nothing: start == end."""
        return self.encode_batch_with_offsets([text])[0]

    def encode_batch_with_offsets(
        self, texts: Sequence[str]
    ) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """`encode_with_offsets` of each text, in one multi-threaded SentencePiece call."""
        texts = list(texts)
        try:
            # sentencepiece >= 0.2.1: str input -> offsets in str (code point) indices, already
            # mapped back through NFKC and whitespace folding (verified on "，１２" and astral chars).
            out = self._sp.encode(
                texts, out_type="offset_mapping", num_threads=os.cpu_count() or 1
            )
            return [(list(o["ids"]), [tuple(span) for span in o["offsets"]]) for o in out]
        except ValueError:  # older sentencepiece: no offset_mapping; its protos hold UTF-8 offsets
            return [_proto_offsets(self._sp.encode(t, out_type="immutable_proto"), t) for t in texts]

    def decode(self, ids) -> str:
        """ids: any int sequence or array (specials decode to nothing)."""
        return self._sp.decode(np.asarray(ids, dtype=np.int64).ravel().tolist())

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    @classmethod
    def load(cls, path: str) -> Tokenizer:
        """`path`: a .model file, or a directory holding spm.model."""
        if os.path.isdir(path):
            path = os.path.join(path, MODEL_FILENAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no SentencePiece model at {path}; train one with train_tokenizer or fix "
                f"data.tokenizer_path"
            )
        return cls(spm.SentencePieceProcessor(model_file=path))


def _proto_offsets(proto, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """SentencePieceText with begin/end in UTF-8 bytes -> (ids, str-index spans) of `text`."""
    # char_at[b] = index of the character that byte b of the UTF-8 text belongs to (+1 entry: end).
    char_at = [i for i, ch in enumerate(text) for _ in range(len(ch.encode("utf-8")))]
    char_at.append(len(text))
    ids = [p.id for p in proto.pieces]
    spans = []
    for p in proto.pieces:
        start = char_at[p.begin]
        # The end byte is exclusive: the character of byte end-1, plus one; empty pieces stay empty.
        spans.append((start, char_at[p.end - 1] + 1 if p.end > p.begin else start))
    return ids, spans


def _write_atomically(path: str, data: bytes) -> None:
    # Rename within the directory: concurrent trainers (several hosts, one workdir) or a crash can never
    # leave a half-written model for a later run to load.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


MODEL_TYPES = ("unigram", "bpe", "char")


def train_tokenizer(
    sentences: Iterable[str], vocab_size: int, path: str | None, model_type: str = "unigram"
) -> Tokenizer:
    """Trains a SentencePiece model on `sentences`; writes it to `path` (.model) unless None.

    model_type 'unigram' or 'bpe' learns `vocab_size` pieces; 'char' makes one piece per character
    (as Chinese BERT tokenizes CJK text), `vocab_size` then being an upper bound: the characters
    covering 99.95% of the text, the rarest ones becoming [UNK]."""
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"data.tokenizer_model={model_type!r} is not a SentencePiece model type; choose one of "
            f"{', '.join(MODEL_TYPES)}"
        )
    char = model_type == "char"
    model = io.BytesIO()
    start = time.perf_counter()
    # Fixed seed: SentencePiece otherwise samples input sentences (corpora over the cap) from
    # std::random_device, and every host training its own copy must get the very same model.
    spm.set_random_generator_seed(0)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=not char,  # char: as many pieces as covered characters
            add_dummy_prefix=not char,  # a leading "▁" only helps whole-word pieces match
            character_coverage=0.9995,  # CJK: rare characters -> [UNK] instead of wasting the vocabulary
            byte_fallback=False,
            pad_id=0,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            pad_piece=PAD,
            unk_piece=UNK,
            # Control symbols get the next ids (2, 3, 4) and are never produced from text, so a literal
            # "[MASK]" typed in a document cannot impersonate the real one.
            control_symbols=[CLS, SEP, MASK],
            input_sentence_size=_MAX_TRAINING_SENTENCES,
            shuffle_input_sentence=True,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        # e.g. "Vocabulary size is smaller than required_chars": keep SentencePiece's reason, add the fix.
        raise ValueError(
            f"SentencePiece training failed ({str(e).strip()}); adjust data.vocab_size="
            f"{vocab_size} or the corpus"
        ) from None
    tokenizer = Tokenizer(spm.SentencePieceProcessor(model_proto=model.getvalue()))
    _log.info(
        "Trained a %d-piece %s SentencePiece model in %.1fs", tokenizer.vocab_size, model_type,
        time.perf_counter() - start,
    )
    if path is not None:
        _write_atomically(path, model.getvalue())
    return tokenizer


def load_or_train_tokenizer(
    cfg_data, workdir: str | None, sentences_fn: Callable[[], Iterable[str]]
) -> Tokenizer:
    """data.tokenizer_path if set; else WORKDIR/tokenizer/spm.model if present; else trains one
    (cfg_data.tokenizer_model, at most cfg_data.vocab_size pieces) on sentences_fn() and saves it
    there (nowhere if workdir is None).

    On several hosts each trains the same model from the same sentences (training is seeded) and the
    atomic rename makes the shared file whole; for large runs, train once and set tokenizer_path.
    """
    if cfg_data.tokenizer_path:
        tokenizer = Tokenizer.load(cfg_data.tokenizer_path)
    else:
        path = os.path.join(workdir, "tokenizer", MODEL_FILENAME) if workdir else None
        if path and os.path.isfile(path):
            tokenizer = Tokenizer.load(path)
        else:
            return train_tokenizer(
                sentences_fn(), cfg_data.vocab_size, path, cfg_data.get("tokenizer_model", "unigram")
            )
    if tokenizer.vocab_size != cfg_data.vocab_size:
        _log.warning(
            "Loaded tokenizer has %d pieces, data.vocab_size=%d; the model must use the "
            "tokenizer's vocab_size",
            tokenizer.vocab_size,
            cfg_data.vocab_size,
        )
    return tokenizer
