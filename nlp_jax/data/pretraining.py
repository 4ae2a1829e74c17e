"""BERT pretraining examples: next-sentence pairs (built once) and masked-LM masking (per read).

Follows BERT's create_pretraining_data.py, with one deliberate difference: pairs are built once
(dupe_factor=1) and masked afresh each time an example is read, with an rng the loader derives from
(seed, position in the stream). Every epoch therefore sees new masks ("dynamic masking", RoBERTa)
without storing dupe_factor copies of the corpus.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from nlp_jax.data.packing import PackedRows

# [CLS] A [SEP] B [SEP] with non-empty A and B.
MIN_SEQ_LEN = 5


@dataclasses.dataclass(frozen=True)
class Instances:
    """N sentence-pair instances stored flat, so random access is an O(1) slice and memory is ~4 B/token.

    Instance i is tokens[offsets[i]:offsets[i+1]] = [CLS] A [SEP] B [SEP], where B starts at
    segment_b_start[i] (the index after the first [SEP]).
    """

    tokens: np.ndarray  # int32 [total_tokens]
    offsets: np.ndarray  # int64 [N + 1]
    segment_b_start: np.ndarray  # int32 [N]
    next_sentence_labels: np.ndarray  # int32 [N]: 0 IsNext, 1 NotNext (B from another document)
    document_index: np.ndarray  # int32 [N]: index of A's document in the input (provenance)

    def __len__(self) -> int:
        return len(self.segment_b_start)

    def instance(self, i: int) -> tuple[np.ndarray, int, int]:
        """(tokens int32 [length], segment_b_start, next_sentence_label) of instance i."""
        return (
            self.tokens[self.offsets[i] : self.offsets[i + 1]],
            int(self.segment_b_start[i]),
            int(self.next_sentence_labels[i]),
        )

    @property
    def max_length(self) -> int:
        return int(np.diff(self.offsets).max(initial=0))


def _truncate_seq_pair(
    a: list[int], b: list[int], max_num_tokens: int, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """BERT's truncate_seq_pair: trim the longer side one token at a time, from its front or its back
    with equal probability. Same distribution, computed without the per-token loop: the final lengths
    are deterministic and the number of front trims of each side is Binomial(trimmed, 1/2)."""
    len_a, len_b = len(a), len(b)
    while len_a + len_b > max_num_tokens:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    front_a = int(rng.binomial(len(a) - len_a, 0.5))
    front_b = int(rng.binomial(len(b) - len_b, 0.5))
    return a[front_a : front_a + len_a], b[front_b : front_b + len_b]


def _random_other_document(num_documents: int, current: int, rng: np.random.Generator) -> int:
    if (
        num_documents == 1
    ):  # nothing else to pick (a tiny held-out split): BERT's fallback, same doc
        return current
    other = int(rng.integers(num_documents - 1))
    return other + (other >= current)


def _pairs_from_document(
    documents: Sequence[Sequence[list[int]]],
    doc_index: int,
    max_num_tokens: int,
    short_seq_prob: float,
    rng: np.random.Generator,
):
    """BERT's create_instances_from_document; yields (tokens_a, tokens_b, is_random_next)."""
    document = documents[doc_index]
    # Mostly fill the sequence, but sometimes use a shorter target so the model also sees short inputs
    # (fine-tuning sequences are often short).
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = int(rng.integers(2, max_num_tokens + 1))
    chunk: list[list[int]] = []
    chunk_length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            segments, whole_sentences = chunk, True
            if len(chunk) == 1 and len(chunk[0]) >= 2:
                # Deviation from BERT, which makes every one-sentence chunk a NotNext pair: on short documents
                # (reviews, last sentences) that skews labels to ~70% NotNext. Cutting the sentence in two at
                # a random token gives it a true continuation, so the coin below keeps labels at ~50/50.
                cut = int(rng.integers(1, len(chunk[0])))
                segments, whole_sentences = [chunk[0][:cut], chunk[0][cut:]], False
            a_end = int(rng.integers(1, len(segments))) if len(segments) >= 2 else 1
            tokens_a = [t for segment in segments[:a_end] for t in segment]
            if len(segments) == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b_length = target_seq_length - len(tokens_a)
                random_document = documents[_random_other_document(len(documents), doc_index, rng)]
                tokens_b = []
                for segment in random_document[int(rng.integers(len(random_document))) :]:
                    tokens_b.extend(segment)
                    if len(tokens_b) >= target_b_length:
                        break
                if whole_sentences:
                    # Put the unused sentences back so they start the next chunk instead of being wasted.
                    i -= len(segments) - a_end
            else:
                is_random_next = False
                tokens_b = [t for segment in segments[a_end:] for t in segment]
            yield (*_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng), is_random_next)
            chunk, chunk_length = [], 0
        i += 1


def create_instances(
    documents: Sequence[Sequence[str]],
    tokenizer,
    max_seq_len: int,
    short_seq_prob: float,
    seed: int,
) -> Instances:
    """Next-sentence-prediction pairs from `documents` (lists of sentences), deterministic for `seed`.

    About half the pairs continue A with the text that follows it (label 0, IsNext); the others take B
    from a random other document (label 1, NotNext). A chunk of one sentence is cut in two to get a
    true continuation (BERT would always make it NotNext), so labels stay balanced on short documents.
    """
    if max_seq_len < MIN_SEQ_LEN:
        raise ValueError(
            f"max_seq_len={max_seq_len} is too small: need at least {MIN_SEQ_LEN} for "
            f"[CLS] A [SEP] B [SEP] with one token in A and in B; raise data.max_seq_len"
        )
    sentences = [s for d in documents for s in d]
    encoded = iter(tokenizer.encode_batch(sentences))
    tokenized, source_index = [], []  # per document, its sentences' ids; empty ones dropped
    for index, document in enumerate(documents):
        if segments := [ids for ids in itertools.islice(encoded, len(document)) if ids]:
            tokenized.append(segments)
            source_index.append(index)
    if not tokenized:
        raise ValueError(
            "no document has a non-empty sentence after tokenization; check the corpus"
        )
    rng = np.random.default_rng(seed)
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    flat: list[int] = []
    offsets, b_starts, labels, doc_ids = [0], [], [], []
    # BERT shuffles the documents' order only to mix instances; the loader shuffles globally anyway.
    for doc_index in range(len(tokenized)):
        for tokens_a, tokens_b, is_random_next in _pairs_from_document(
            tokenized, doc_index, max_seq_len - 3, short_seq_prob, rng
        ):
            flat += [cls, *tokens_a, sep, *tokens_b, sep]
            offsets.append(len(flat))
            b_starts.append(len(tokens_a) + 2)
            labels.append(int(is_random_next))
            doc_ids.append(source_index[doc_index])
    return Instances(
        tokens=np.asarray(flat, np.int32),
        offsets=np.asarray(offsets, np.int64),
        segment_b_start=np.asarray(b_starts, np.int32),
        next_sentence_labels=np.asarray(labels, np.int32),
        document_index=np.asarray(doc_ids, np.int32),
    )


def mask_instance(
    tokens: np.ndarray,
    rng: np.random.Generator,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: Sequence[int],
    max_predictions: int,
    mask_prob: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BERT's masked-LM corruption of one sequence (tokens: int [L]).

    Picks round(mask_prob * #non-special tokens) positions (at least 1, at most max_predictions) without
    replacement; replaces 80% of them with [MASK], 10% with a random non-special id, keeps 10%.
    Returns masked_tokens int32 [L], masked_lm_positions int32 [P], masked_lm_ids int32 [P] (original
    tokens) and masked_lm_weights float32 [P] (1 real, 0 padding), P = max_predictions, sorted by position.
    """
    tokens = np.asarray(tokens, np.int32)
    specials = np.unique(np.asarray(special_ids, np.int32))
    candidates = np.flatnonzero(
        (tokens[:, None] != specials).all(axis=1)
    )  # a few x faster than isin
    num = min(max_predictions, max(1, round(len(candidates) * mask_prob)), len(candidates))
    positions = np.sort(rng.choice(candidates, size=num, replace=False)).astype(np.int32)
    masked = tokens.copy()
    action = rng.random(num)
    # Random replacements come uniformly from the non-special ids: draw from [0, V - #specials) and
    # step over each special id (ascending) at or below the draw.
    random_ids = rng.integers(0, vocab_size - len(specials), size=num)
    for s in specials:
        random_ids += random_ids >= s
    masked[positions] = np.where(
        action < 0.8, mask_id, np.where(action < 0.9, tokens[positions], random_ids)
    )
    # Fixed-size outputs, zero-padded (np.pad costs more than the masking itself at these sizes).
    masked_lm_positions = np.zeros(max_predictions, np.int32)
    masked_lm_ids = np.zeros(max_predictions, np.int32)
    masked_lm_weights = np.zeros(max_predictions, np.float32)
    masked_lm_positions[:num] = positions
    masked_lm_ids[:num] = tokens[positions]
    masked_lm_weights[:num] = 1.0
    return masked, masked_lm_positions, masked_lm_ids, masked_lm_weights


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """Static shapes and ids `make_example` needs."""

    max_seq_len: int
    max_predictions: int
    mask_prob: float
    vocab_size: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...]

    @classmethod
    def from_config(cls, cfg_data, tokenizer) -> ExampleConfig:
        return cls(
            max_seq_len=cfg_data.max_seq_len,
            max_predictions=cfg_data.max_predictions,
            mask_prob=cfg_data.mask_prob,
            vocab_size=tokenizer.vocab_size,
            pad_id=tokenizer.pad_id,
            mask_id=tokenizer.mask_id,
            special_ids=tuple(tokenizer.special_ids),
        )


def make_example(
    index: int, instances: Instances, rng: np.random.Generator, cfg: ExampleConfig
) -> dict[str, np.ndarray]:
    """Masked, padded model input for instance `index`; shapes L = cfg.max_seq_len, P = cfg.max_predictions:

    input_ids int32 [L], token_type_ids int32 [L] (1 on B [SEP]), attention_mask int32 [L],
    masked_lm_positions int32 [P], masked_lm_ids int32 [P], masked_lm_weights float32 [P],
    next_sentence_labels int32 [] (0 IsNext, 1 NotNext).
    """
    row = _make_row([index], instances, rng, cfg, slots=1)
    keys = ("input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
            "masked_lm_ids", "masked_lm_weights")
    return {**{k: row[k] for k in keys}, "next_sentence_labels": row["next_sentence_labels"][0]}


def make_packed_example(
    row: int, rows: PackedRows, instances: Instances, rng: np.random.Generator, cfg: ExampleConfig
) -> dict[str, np.ndarray]:
    """Model input for packed row `row`: its instances one after the other, masked as one sequence
    (the same 15% of the row's text and the same P = cfg.max_predictions as `make_example`, so the
    masked-LM head costs no more per row). K = rows.max_per_row:

    input_ids, token_type_ids int32 [L] as in make_example; attention_mask int32 [L] = the
    instance's number in the row (1, 2, ...; 0 = padding) and position_ids int32 [L] (0, 1, ... per
    instance), which keep attention and positions within each instance (see BertEncoder);
    masked_lm_* [P] index the row; cls_positions int32 [K] (each instance's [CLS]),
    next_sentence_labels int32 [K] and next_sentence_weights float32 [K] (0 on empty slots).
    """
    return _make_row(rows.row(row), instances, rng, cfg, slots=rows.max_per_row)


def _make_row(
    indices, instances: Instances, rng: np.random.Generator, cfg: ExampleConfig, slots: int
) -> dict[str, np.ndarray]:
    L = cfg.max_seq_len
    out = {k: np.zeros(L, np.int32)
           for k in ("input_ids", "token_type_ids", "attention_mask", "position_ids")}
    out["input_ids"][:] = cfg.pad_id
    out["cls_positions"] = np.zeros(slots, np.int32)
    out["next_sentence_labels"] = np.zeros(slots, np.int32)
    out["next_sentence_weights"] = np.zeros(slots, np.float32)
    start = 0
    for slot, index in enumerate(indices):
        tokens, b_start, label = instances.instance(index)
        n = len(tokens)
        if start + n > L:
            raise ValueError(
                f"instance {index} has {n} tokens, more than the {L - start} left of "
                f"max_seq_len={L}; build the instances with the same max_seq_len"
            )
        out["input_ids"][start : start + n] = tokens
        out["token_type_ids"][start + b_start : start + n] = 1
        out["attention_mask"][start : start + n] = slot + 1
        out["position_ids"][start : start + n] = np.arange(n)
        out["cls_positions"][slot] = start
        out["next_sentence_labels"][slot] = label
        out["next_sentence_weights"][slot] = 1.0
        start += n
    (
        out["input_ids"][:start],
        out["masked_lm_positions"],
        out["masked_lm_ids"],
        out["masked_lm_weights"],
    ) = mask_instance(
        out["input_ids"][:start],
        rng,
        vocab_size=cfg.vocab_size,
        mask_id=cfg.mask_id,
        special_ids=cfg.special_ids,
        max_predictions=cfg.max_predictions,
        mask_prob=cfg.mask_prob,
    )
    return out
