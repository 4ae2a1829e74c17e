"""Task encoding: `encode_task` turns a task split into fixed-shape arrays for the model.

Either tokenizer (SentencePiece or WordPiece) works. Classification examples become
[CLS] a [SEP] (b [SEP]) rows; token-classification examples become one label per tokenizer piece
(`bio.piece_labels`) with the character span of every piece, so that predicted piece tags can be
read back as character entities (`bio.entities_from_pieces`). Relation examples get typed entity
markers around the head and tail (`mark_entities`), and the positions of the markers that open
them (Baldini Soares et al. 2019's "entity start").
"""

from __future__ import annotations

import logging

import numpy as np

from nlp_jax.data import bio
from nlp_jax.data.sources import RELATION, TOKEN_CLASSIFICATION, TaskData

_log = logging.getLogger(__name__)


def _truncate_pair(a: list, b: list, budget: int) -> bool:
    """Longest-first truncation in place (ties shorten b, as BERT does); True if it cut anything."""
    cut = False
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
        cut = True
    return cut


def _encode_classification(task, split, examples, tokenizer, max_seq_len):
    n, L = len(examples), max_seq_len
    ids_a = tokenizer.encode_batch([e["text"] for e in examples])
    pairs = [i for i, e in enumerate(examples) if e["text_b"] is not None]
    ids_b: list[list[int]] = [[] for _ in examples]
    for i, ids in zip(pairs, tokenizer.encode_batch([examples[i]["text_b"] for i in pairs])):
        ids_b[i] = ids
    out = {k: np.zeros((n, L), np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}
    out["input_ids"][:] = tokenizer.pad_id
    n_truncated = 0
    for i, e in enumerate(examples):
        a, b, pair = list(ids_a[i]), list(ids_b[i]), e["text_b"] is not None
        n_truncated += _truncate_pair(a, b, L - 3 if pair else L - 2)
        row = [tokenizer.cls_id, *a, tokenizer.sep_id]
        types = [0] * len(row)
        if pair:
            row += [*b, tokenizer.sep_id]
            types += [1] * (len(b) + 1)
        out["input_ids"][i, : len(row)] = row
        out["token_type_ids"][i, : len(row)] = types
        out["attention_mask"][i, : len(row)] = 1
    dtype = np.float32 if task.kind == "regression" else np.int32
    out["labels"] = np.asarray([e["label"] for e in examples], dtype).reshape(n)
    return out, n_truncated


def _encode_tokens(task, split, examples, tokenizer, max_seq_len):
    n, L = len(examples), max_seq_len
    texts = ["".join(e["chars"]) for e in examples]
    for i, (text, e) in enumerate(zip(texts, examples)):
        if not text or len(text) != len(e["tags"]):
            raise ValueError(
                f"task {task.name!r} split {split!r} example {i}: {len(text)} characters and "
                f"{len(e['tags'])} tags; give one single-character entry and one tag per character"
            )
    if hasattr(tokenizer, "encode_batch_with_offsets"):
        encoded = tokenizer.encode_batch_with_offsets(texts)
    else:
        encoded = [tokenizer.encode_with_offsets(t) for t in texts]
    out = {k: np.zeros((n, L), np.int32)
           for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}
    out["input_ids"][:] = tokenizer.pad_id
    out["label_weights"] = np.zeros((n, L), np.float32)
    out["token_spans"] = np.full((n, L, 2), -1, np.int32)
    n_truncated = 0
    for i, ((ids, spans), e) in enumerate(zip(encoded, examples)):
        if len(ids) > L - 2:
            ids, spans = ids[: L - 2], spans[: L - 2]
            n_truncated += 1
        k = len(ids)
        out["input_ids"][i, : k + 2] = [tokenizer.cls_id, *ids, tokenizer.sep_id]
        out["attention_mask"][i, : k + 2] = 1
        if k:
            out["labels"][i, 1 : k + 1] = bio.piece_labels(spans, e["tags"], task.label_names)
            out["token_spans"][i, 1 : k + 1] = spans
            # Pieces made by normalisation alone cover no character: nothing to predict there.
            out["label_weights"][i, 1 : k + 1] = [float(s < t) for s, t in spans]
    return out, n_truncated


def mark_entities(text: str, head: dict, tail: dict) -> tuple[str, int, int]:
    """`text` with typed punctuation markers, `@ * type * head @` and `# ^ type ^ tail #` (Zhou
    and Chen 2021: markers made of characters every tokenizer has, so no new vocabulary), and the
    character offsets of the opening `@` and `#`. Without a type: `@ head @`, `# tail #`."""
    def opening(symbol, inner, entity):
        return f"{symbol} {inner} {entity['type']} {inner} " if entity.get("type") else f"{symbol} "
    inserts = sorted([(head["start"], 1, opening("@", "*", head), "head"),
                      (head["end"], 0, " @", None),
                      (tail["start"], 1, opening("#", "^", tail), "tail"),
                      (tail["end"], 0, " #", None)])      # at one offset, a closing one first
    pieces, starts, last = [], {}, 0
    for offset, _, marker, which in inserts:
        pieces.append(text[last:offset])
        if which:
            starts[which] = sum(map(len, pieces))
        pieces.append(marker)
        last = offset
    pieces.append(text[last:])
    return "".join(pieces), starts["head"], starts["tail"]


def _encode_relation(task, split, examples, tokenizer, max_seq_len):
    n, L = len(examples), max_seq_len
    out = {k: np.zeros((n, L), np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}
    out["input_ids"][:] = tokenizer.pad_id
    out["entity_positions"] = np.zeros((n, 2), np.int32)
    n_truncated = 0
    for i, e in enumerate(examples):
        marked, head, tail = mark_entities(e["text"], e["head"], e["tail"])
        ids, spans = tokenizer.encode_with_offsets(marked)
        # The first piece that reaches into each opening marker; +1 for [CLS].
        first = [next((j for j, (_, end) in enumerate(spans) if end > c), 0) + 1
                 for c in (head, tail)]
        if len(ids) > L - 2:
            ids, n_truncated = ids[: L - 2], n_truncated + 1
        # A marker cut off by truncation falls back to [CLS] (position 0).
        out["entity_positions"][i] = [p if p <= len(ids) else 0 for p in first]
        out["input_ids"][i, : len(ids) + 2] = [tokenizer.cls_id, *ids, tokenizer.sep_id]
        out["attention_mask"][i, : len(ids) + 2] = 1
    out["labels"] = np.asarray([e["label"] for e in examples], np.int32).reshape(n)
    return out, n_truncated


def encode_task(task: TaskData, split: str, tokenizer, max_seq_len: int) -> dict[str, np.ndarray]:
    """Fixed-shape arrays of `split` (N examples, L = max_seq_len), for either tokenizer.

    classification: input_ids, token_type_ids (1 on text_b and its [SEP]), attention_mask [N, L]
      int32 as [CLS] a [SEP] (b [SEP]), pairs truncated longest-first; labels [N] int32.
    token_classification: input_ids, token_type_ids (0), attention_mask, labels [N, L] int32 (piece
      tag, see `bio.piece_labels`); label_weights [N, L] float32 (1 on pieces covering text, 0 on
      [CLS]/[SEP]/padding); token_spans [N, L, 2] int32 ([start, end) character span of each piece
      in the example's text; -1 on specials and padding).
    relation: input_ids, token_type_ids (0), attention_mask [N, L] of the marked text
      (`mark_entities`); entity_positions [N, 2] int32 (the head's and tail's opening markers;
      0 = [CLS] when truncation cut one off); labels [N] int32.
    Over-long examples are truncated, with one warning per split.
    """
    if split not in task.splits:
        raise ValueError(
            f"split={split!r} is not in task {task.name!r}; use one of {list(task.splits)}"
        )
    if max_seq_len < 4:
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for text; use at least 4")
    examples = task.splits[split]
    encode = {TOKEN_CLASSIFICATION: _encode_tokens, RELATION: _encode_relation}.get(
        task.kind, _encode_classification)
    out, n_truncated = encode(task, split, examples, tokenizer, max_seq_len)
    if n_truncated:
        _log.warning(
            "Task %s split %s: %d of %d examples truncated to max_seq_len=%d",
            task.name, split, n_truncated, len(examples), max_seq_len,
        )
    return out
