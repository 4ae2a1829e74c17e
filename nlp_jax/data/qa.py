"""Extractive question answering: examples to windowed rows, and rows' logits back to answers.

An example is {"id", "question", "context", "answers": [{"text", "start"}]} (character offsets;
`answers` empty for an unanswerable question, SQuAD 2.0). A row is [CLS] question [SEP] part of
the context [SEP]; a context longer than a row is read in windows `doc_stride` pieces apart, as
BERT's run_squad.py does. The model gives every position a start and an end logit; `answers`
picks, per example, the best span over all its windows (the n-best search of run_squad.py), or
no answer when the [CLS] score beats it and the task has unanswerable questions.
"""
from __future__ import annotations

import logging

import numpy as np

from nlp_jax.data.encoding import max_context, windows

_log = logging.getLogger(__name__)


def is_chinese(examples: list[dict]) -> bool:
    """Whether the contexts are mostly CJK characters: then answers are scored on characters
    (CMRC 2018's script), else on words (SQuAD's)."""
    text = "".join(e["context"] for e in examples[:100])
    letters = [c for c in text if not c.isspace()]
    cjk = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in letters)
    return bool(letters) and cjk / len(letters) > 0.3


def _answer_pieces(spans, answer: dict) -> tuple[int, int] | None:
    """The first and last context piece of `answer`'s characters, None when not in the context."""
    if answer["start"] < 0:
        return None
    start, end = answer["start"], answer["start"] + len(answer["text"])
    covering = [p for p, (a, b) in enumerate(spans) if a < b and a < end and b > start]
    return (covering[0], covering[-1]) if covering else None


def encode(examples: list[dict], tokenizer, max_seq_len: int, *, doc_stride: int,
           max_query_len: int, train: bool) -> dict[str, np.ndarray]:
    """R rows (windows) of L = max_seq_len:

    input_ids, token_type_ids (1 on the context and its [SEP]), attention_mask [R, L] int32;
    start_positions, end_positions [R] int32: the answer's first and last piece in the row, 0 =
      [CLS] when the row does not hold the whole answer or there is none (targets for training);
    token_spans [R, L, 2] int32: each context piece's [start, end) characters in the context (-1
      elsewhere); max_context [R, L]: 1 where this window scores the piece; example_index [R].
    `train`: the first answer found in the context is the target, and questions whose answers
    are all outside their context (an offset error in the file) are left out.
    """
    L = max_seq_len
    questions = tokenizer.encode_batch([e["question"] for e in examples])
    contexts = [tokenizer.encode_with_offsets(e["context"]) for e in examples]
    rows, n_skipped = [], 0   # (example, window start, window end, scored here, start, end)
    for i, (e, q, (ids, spans)) in enumerate(zip(examples, questions, contexts)):
        q = q[:max_query_len]
        width = L - len(q) - 3
        if width < 1:
            raise ValueError(f"data.max_seq_len={L} leaves no room for the context after a "
                             f"question of {len(q)} pieces; raise it or lower data.max_query_len")
        found = [p for p in (_answer_pieces(spans, a) for a in e["answers"]) if p]
        if train and e["answers"] and not found:
            n_skipped += 1
            continue
        ranges = windows(len(ids), width, doc_stride or max(width // 2, 1))
        owner = max_context(ranges, len(ids))
        for w, (s, t) in enumerate(ranges):
            first = found[0] if found else None
            inside = first and s <= first[0] and first[1] < t
            offset = len(q) + 2 - s   # piece p of the context sits at row position p + offset
            rows.append((i, s, t, [owner[p] == w for p in range(s, t)],
                         first[0] + offset if inside else 0, first[1] + offset if inside else 0))
    if n_skipped:
        _log.warning("%d training questions left out: none of their answers is in the context",
                     n_skipped)
    R = len(rows)
    out = {k: np.zeros((R, L), np.int32) for k in ("input_ids", "token_type_ids", "attention_mask")}
    out["input_ids"][:] = tokenizer.pad_id
    out["token_spans"] = np.full((R, L, 2), -1, np.int32)
    out["max_context"] = np.zeros((R, L), np.float32)
    for k, j in (("example_index", 0), ("start_positions", 4), ("end_positions", 5)):
        out[k] = np.asarray([row[j] for row in rows], np.int32).reshape(R)
    for r, (i, s, t, scored, *_) in enumerate(rows):
        q = questions[i][:max_query_len]
        ids, spans = contexts[i]
        row = [tokenizer.cls_id, *q, tokenizer.sep_id, *ids[s:t], tokenizer.sep_id]
        c = len(q) + 2   # where the context starts
        out["input_ids"][r, : len(row)] = row
        out["attention_mask"][r, : len(row)] = 1
        out["token_type_ids"][r, c : len(row)] = 1
        if t > s:
            out["token_spans"][r, c : c + t - s] = spans[s:t]
            out["max_context"][r, c : c + t - s] = scored
    n_long = sum(len(ids) > L - len(q[:max_query_len]) - 3
                 for q, (ids, _) in zip(questions, contexts))
    if n_long:
        _log.info("%d of %d contexts read in windows (%d rows)", n_long, len(examples), R)
    return out


def answers(examples: list[dict], features: dict, logits: np.ndarray, *, no_answer: bool,
            n_best: int = 20, max_answer_len: int = 30) -> list[dict]:
    """{"answer", "score", "start"} per example from the rows' logits [R, L, 2] (start, end).

    Candidates, as run_squad.py searches them: in each window, the `n_best` highest start and end
    logits, the start in a piece this window scores (max_context), the end at or after it, both in
    the context, at most `max_answer_len` pieces; a span's score is its start plus end logit.
    `no_answer` (the task has unanswerable questions): the answer is "" (start -1) when the lowest
    [CLS] score over the windows beats the best span (SQuAD 2.0's null threshold 0). `score` is
    the answer's probability among the n best candidates (softmax of their scores).
    """
    best = {}   # example -> (candidates [(score, char start, char end)], null score)
    for r, i in enumerate(features["example_index"]):
        spans, scored = features["token_spans"][r], features["max_context"][r]
        start_logits, end_logits = logits[r, :, 0], logits[r, :, 1]
        in_context = spans[:, 0] < spans[:, 1]   # pieces covering characters of the context
        starts = [p for p in np.argsort(-start_logits, kind="stable")[:n_best]
                  if in_context[p] and scored[p]]
        ends = [p for p in np.argsort(-end_logits, kind="stable")[:n_best] if in_context[p]]
        spans_found, null = best.setdefault(int(i), ([], np.inf))
        spans_found += [(float(start_logits[a] + end_logits[b]), int(spans[a, 0]), int(spans[b, 1]))
                        for a in starts for b in ends if a <= b < a + max_answer_len]
        best[int(i)] = (spans_found, min(null, float(start_logits[0] + end_logits[0])))
    out = []
    for i, e in enumerate(examples):
        candidates, null = best.get(i, ([], np.inf))
        candidates = sorted(candidates, reverse=True)[:n_best]
        if no_answer or not candidates:
            candidates = sorted(candidates + [(null if np.isfinite(null) else 0.0, -1, -1)],
                                reverse=True)
        scores = np.asarray([c[0] for c in candidates])
        probs = np.exp(scores - scores.max())
        score, start, end = candidates[0]
        out.append({"answer": e["context"][start:end] if start >= 0 else "",
                    "score": round(float(probs[0] / probs.sum()), 6), "start": start})
    return out
