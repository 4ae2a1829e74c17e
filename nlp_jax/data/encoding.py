"""Task encoding: `encode_task` turns a task split into fixed-shape arrays for the model.

Either tokenizer (SentencePiece or WordPiece) works. Classification examples become
[CLS] a [SEP] (b [SEP]) rows; token-classification examples become one label per tokenizer piece
(`bio.piece_labels`) with the character span of every piece, so that predicted piece tags can be
read back as character entities (`bio.entities_from_pieces`); a sentence longer than a row is read
in overlapping windows (`windows`), each piece scored where it has the most context
(`max_context`), so that no sentence is cut. Relation examples get typed entity
markers around the head and tail (`mark_entities`), and the positions of the markers that open
them (Baldini Soares et al. 2019's "entity start"). A classification task with a prompt becomes
the pattern's text with [MASK]s where the verbalizer's words are scored (`make_prompt`).
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np

from nlp_jax.data import bio
from nlp_jax.data.sources import QUESTION_ANSWERING, RELATION, TOKEN_CLASSIFICATION, TaskData

_log = logging.getLogger(__name__)


def _truncate_pair(a: list, b: list, budget: int) -> bool:
    """Longest-first truncation in place (ties shorten b, as BERT does); True if it cut anything."""
    cut = False
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
        cut = True
    return cut


def _encode_classification(task, split, examples, tokenizer, max_seq_len, doc_stride):
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


def windows(n: int, width: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) ranges of `n` pieces, at most `width` each, starting `stride` apart until one
    reaches the end (BERT's run_squad.py `doc_stride`); one range when the pieces fit."""
    if width < 1 or not 1 <= stride <= width:
        raise ValueError(f"data.doc_stride={stride} must be in [1, {width}] (the pieces a window "
                         "holds), so that windows overlap or touch and no piece is skipped")
    out, start = [], 0
    while True:
        end = min(start + width, n)
        out.append((start, end))
        if end == n:
            return out
        start += stride


def max_context(spans: list[tuple[int, int]], n: int) -> list[int]:
    """For each of `n` pieces, which of the windows `spans` scores it: the one where it has the
    most context, min(pieces left of it, pieces right of it), ties to the earlier window (BERT's
    `_check_is_max_context`, whose small bonus for longer windows we keep)."""
    best, owner = np.full(n, -np.inf), np.zeros(n, np.int64)
    for w, (start, end) in enumerate(spans):
        p = np.arange(start, end)
        score = np.minimum(p - start, end - 1 - p) + 0.01 * (end - start)
        better = score > best[start:end]
        best[start:end][better], owner[start:end][better] = score[better], w
    return owner.tolist()


def _encode_tokens(task, split, examples, tokenizer, max_seq_len, doc_stride):
    """One row per window of each example; every piece is scored in one window (max_context)."""
    L, width = max_seq_len, max_seq_len - 2
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
    rows = []   # (example, window start, window end, scored here)
    for i, (ids, _) in enumerate(encoded):
        spans = windows(len(ids), width, doc_stride or max(width // 2, 1))
        owner = max_context(spans, len(ids))
        rows += [(i, s, e, [owner[p] == w for p in range(s, e)]) for w, (s, e) in enumerate(spans)]
    R = len(rows)
    out = {k: np.zeros((R, L), np.int32)
           for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}
    out["input_ids"][:] = tokenizer.pad_id
    out["label_weights"] = np.zeros((R, L), np.float32)
    out["token_spans"] = np.full((R, L, 2), -1, np.int32)
    out["max_context"] = np.zeros((R, L), np.float32)
    out["example_index"] = np.asarray([i for i, *_ in rows], np.int32).reshape(R)
    for r, (i, s, e, scored) in enumerate(rows):
        ids, spans = encoded[i][0][s:e], encoded[i][1][s:e]
        k = e - s
        out["input_ids"][r, : k + 2] = [tokenizer.cls_id, *ids, tokenizer.sep_id]
        out["attention_mask"][r, : k + 2] = 1
        if k:
            out["labels"][r, 1 : k + 1] = bio.piece_labels(spans, examples[i]["tags"],
                                                           task.label_names)
            out["token_spans"][r, 1 : k + 1] = spans
            # Pieces made by normalisation alone cover no character: nothing to predict there.
            out["label_weights"][r, 1 : k + 1] = [float(a < b) for a, b in spans]
            out["max_context"][r, 1 : k + 1] = scored
    n_long = sum(len(ids) > width for ids, _ in encoded)
    if n_long:
        _log.info("Task %s split %s: %d of %d examples read in %d windows of %d pieces",
                  task.name, split, n_long, len(examples), R, width)
    return out, 0


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


def _encode_relation(task, split, examples, tokenizer, max_seq_len, doc_stride):
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


# ------------------------------------------------------------------------------------------
# Prompts (PET, Schick and Schütze 2021; LM-BFF, Gao et al. 2021): the input rewritten by a
# pattern around a [MASK] slot, whose verbalizer words the masked-LM head scores.

_SLOTS = re.compile(r"(\{text\}|\{text_b\}|\[MASK\])")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A parsed pattern and its verbalizer, in the tokenizer's pieces.

    parts: the pattern cut at its slots, e.g. ("{text}", "总之很", "[MASK]", "。").
    verbalizer: [labels][num_masks] piece ids, the word of each label in label_names order; every
    word has num_masks pieces, so the [MASK] slot holds num_masks masks."""
    pattern: str
    words: tuple[str, ...]
    parts: tuple[str, ...]
    verbalizer: tuple[tuple[int, ...], ...]

    @property
    def num_masks(self) -> int:
        return len(self.verbalizer[0])


def _pieces(tokenizer, texts: list[str], first: bool) -> list[list[int]]:
    """Each text's piece ids; away from the row's start without leading zero-width pieces
    (SentencePiece's dummy-prefix "▁", which starts every text encoded alone but never comes
    mid-sentence)."""
    if hasattr(tokenizer, "encode_batch_with_offsets"):
        encoded = tokenizer.encode_batch_with_offsets(texts)
    else:
        encoded = [tokenizer.encode_with_offsets(t) for t in texts]
    out = []
    for ids, spans in encoded:
        skip = 0
        while not first and skip < len(ids) and spans[skip][0] == spans[skip][1]:
            skip += 1
        out.append(list(ids[skip:]))
    return out


def make_prompt(pattern: str, words, label_names, tokenizer, where: str = "task") -> Prompt:
    """Checks and tokenizes `pattern` (`{text}`, optional `{text_b}`, exactly one `[MASK]`) and
    the verbalizer `words` (one per label); `where` names the config in errors (tasks.<name>)."""
    parts = tuple(p for p in _SLOTS.split(pattern) if p)
    count = {slot: parts.count(slot) for slot in ("{text}", "{text_b}", "[MASK]")}
    if count["{text}"] != 1 or count["[MASK]"] != 1 or count["{text_b}"] > 1:
        raise ValueError(f"{where}.prompt={pattern!r} needs {{text}} once, [MASK] once and "
                         "{text_b} at most once (sentence pairs), e.g. \"{text}总之很[MASK]。\"")
    words = tuple(str(w) for w in words)
    if len(words) != len(label_names) or not all(words):
        raise ValueError(f"{where}.verbalizer={words} needs one non-empty word per label, in the "
                         f"order of the labels {list(label_names)}")
    # The word is scored where the mask stands, mid-sentence: no dummy prefix.
    ids = [tuple(p) for p in _pieces(tokenizer, list(words), first=False)]
    if len(set(map(len, ids))) != 1 or not ids[0] or tokenizer.unk_id in sum(ids, ()):
        shown = ", ".join(f"{w} -> {[tokenizer.id_to_piece(i) for i in p]}"
                          for w, p in zip(words, ids))
        raise ValueError(f"{where}.verbalizer: every word must be known pieces, as many for each "
                         f"label (their log-probabilities are summed over the masks); the "
                         f"tokenizer gives {shown}: choose other words")
    return Prompt(pattern, words, parts, tuple(ids))


def _encode_prompt(task, split, examples, tokenizer, max_seq_len, prompt: Prompt):
    """[CLS] pattern [SEP] with {text} (and {text_b}) filled in and num_masks [MASK]s at the slot;
    texts are truncated longest-first, the pattern's own words and the masks never."""
    n, L, m = len(examples), max_seq_len, prompt.num_masks
    fixed = {i: _pieces(tokenizer, [part], first=i == 0)[0]   # the pattern's own words
             for i, part in enumerate(prompt.parts) if part not in ("{text}", "{text_b}", "[MASK]")}
    budget = L - 2 - m - sum(map(len, fixed.values()))
    if budget < 1:
        raise ValueError(f"task {task.name}: the prompt {prompt.pattern!r} takes {L - budget} of "
                         f"data.max_seq_len={L} pieces and leaves no room for the text; raise "
                         "max_seq_len or shorten the pattern")
    out = {k: np.zeros((n, L), np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}
    out["input_ids"][:] = tokenizer.pad_id
    out["mask_positions"] = np.zeros((n, m), np.int32)
    pair = "{text_b}" in prompt.parts
    for r, e in enumerate(examples):
        if pair and e["text_b"] is None:
            raise ValueError(f"task {task.name} split {split} example {r}: the prompt has "
                             "{text_b} but the example is a single text; drop {text_b}")
    ids_a = _pieces(tokenizer, [e["text"] for e in examples], prompt.parts[0] == "{text}")
    ids_b = _pieces(tokenizer, [e["text_b"] for e in examples], prompt.parts[0] == "{text_b}") \
        if pair else [[] for _ in examples]
    n_truncated = 0
    for r, (a, b) in enumerate(zip(ids_a, ids_b)):
        n_truncated += _truncate_pair(a, b, budget)
        row = [tokenizer.cls_id]
        for i, part in enumerate(prompt.parts):
            if part == "[MASK]":
                out["mask_positions"][r] = np.arange(len(row), len(row) + m)
                row += [tokenizer.mask_id] * m
            else:
                row += {"{text}": a, "{text_b}": b}.get(part, fixed.get(i))
        row.append(tokenizer.sep_id)
        out["input_ids"][r, : len(row)] = row
        out["attention_mask"][r, : len(row)] = 1
    out["labels"] = np.asarray([e["label"] for e in examples], np.int32).reshape(n)
    return out, n_truncated


def encode_examples(task, split, examples, tokenizer, max_seq_len, prompt=None) -> dict:
    """Classification rows of `examples` as `encode_task` makes them (with a prompt: its rows);
    for rows made afresh at every read (data.augment)."""
    if prompt is not None:
        return _encode_prompt(task, split, examples, tokenizer, max_seq_len, prompt)[0]
    return _encode_classification(task, split, examples, tokenizer, max_seq_len, 0)[0]


# Arrays a row carries for scoring on the host, never sent to the model.
HOST_KEYS = ("token_spans", "max_context", "example_index")


def encode_task(task: TaskData, split: str, tokenizer, max_seq_len: int, *, doc_stride: int = 0,
                max_query_len: int = 64, prompt: Prompt | None = None) -> dict[str, np.ndarray]:
    """Fixed-shape arrays of `split` (R rows, L = max_seq_len), for either tokenizer.

    classification: input_ids, token_type_ids (1 on text_b and its [SEP]), attention_mask [N, L]
      int32 as [CLS] a [SEP] (b [SEP]), pairs truncated longest-first; labels [N] int32.
    token_classification: one row per window of L - 2 pieces, `doc_stride` pieces apart (0: half
      a window), so that no sentence is cut: input_ids, token_type_ids (0), attention_mask,
      labels [R, L] int32 (piece tag, see `bio.piece_labels`); label_weights [R, L] float32 (1 on
      pieces covering text, 0 on [CLS]/[SEP]/padding); token_spans [R, L, 2] int32 ([start, end)
      character span of each piece in the example's text; -1 on specials and padding);
      max_context [R, L] (1 where this window scores the piece, see `max_context`);
      example_index [R] int32.
    relation: input_ids, token_type_ids (0), attention_mask [N, L] of the marked text
      (`mark_entities`); entity_positions [N, 2] int32 (the head's and tail's opening markers;
      0 = [CLS] when truncation cut one off); labels [N] int32.
    question_answering: see `nlp_jax.data.qa.encode` (windows over the context too).
    with a `prompt` (classification): input_ids, token_type_ids (0), attention_mask [N, L] as
      [CLS] pattern [SEP] (`_encode_prompt`); mask_positions [N, num_masks] int32 (where the
      masks are); labels [N] int32.
    Over-long classification and relation examples are truncated, with one warning per split.
    HOST_KEYS are for scoring only; the rest are the model's inputs and the loss's targets.
    """
    if split not in task.splits:
        raise ValueError(
            f"split={split!r} is not in task {task.name!r}; use one of {list(task.splits)}"
        )
    if max_seq_len < 4:
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for text; use at least 4")
    examples = task.splits[split]
    if task.kind == QUESTION_ANSWERING:
        from nlp_jax.data import qa  # pylint: disable=g-import-not-at-top  (qa imports us)
        return qa.encode(examples, tokenizer, max_seq_len, doc_stride=doc_stride,
                         max_query_len=max_query_len, train=split == "train")
    if prompt is not None:
        out, n_truncated = _encode_prompt(task, split, examples, tokenizer, max_seq_len, prompt)
    else:
        encode = {TOKEN_CLASSIFICATION: _encode_tokens, RELATION: _encode_relation}.get(
            task.kind, _encode_classification)
        out, n_truncated = encode(task, split, examples, tokenizer, max_seq_len, doc_stride)
    if n_truncated:
        _log.warning(
            "Task %s split %s: %d of %d examples truncated to max_seq_len=%d",
            task.name, split, n_truncated, len(examples), max_seq_len,
        )
    return out
