"""Sequence packing: several examples per row, so that batches carry text rather than padding.

`best_fit` decides which examples share a row; `pack_features` builds the packed rows of
fine-tuning features at once, `pack_instances` records the rows of pretraining instances, which
`pretraining.make_packed_example` builds and masks at every read. The model keeps every example
to itself through a segment-numbered attention mask and per-example positions (see
`BertEncoder`).
"""
from __future__ import annotations

import bisect
import dataclasses
import heapq
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pretraining imports this module
    from nlp_jax.data.pretraining import Instances


def best_fit(lengths: np.ndarray, capacity: int, max_per_row: int) -> list[list[int]]:
    """Groups of example indices, each group's lengths summing to at most `capacity`, at most
    `max_per_row` examples a group: best fit by decreasing length (each example, longest first,
    goes to the fullest open row that still has room for it; ties to the oldest row). Deterministic.

    Open rows are kept in one min-heap per amount of free room (at most capacity + 1 of them), so
    a corpus of millions of nearly full rows packs in O(N log N), not O(N^2)."""
    lengths = np.asarray(lengths)
    if len(lengths) and (lengths.max() > capacity or lengths.min() < 1):
        raise ValueError(f"lengths must be in [1, {capacity}]; got {lengths.min()}..{lengths.max()}")
    groups: list[list[int]] = []
    open_rows: dict[int, list[int]] = {}   # free room -> heap of row numbers
    frees: list[int] = []                  # sorted free-room amounts that have open rows
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        j = bisect.bisect_left(frees, n)   # the least room that still fits
        if j < len(frees):
            free = frees[j]
            row = heapq.heappop(open_rows[free])
            if not open_rows[free]:
                del open_rows[free], frees[j]
            groups[row].append(int(i))
        else:
            free, row = capacity, len(groups)
            groups.append([int(i)])
        free -= n
        if free > 0 and len(groups[row]) < max_per_row:
            if free not in open_rows:
                open_rows[free] = []
                bisect.insort(frees, free)
            heapq.heappush(open_rows[free], row)
    return groups


def pack_features(features: dict[str, np.ndarray], pad_id: int, max_per_row: int = 8
                  ) -> dict[str, np.ndarray]:
    """Sequence packing of training features (encode_task's, N rows of L): several examples per
    row, so that batches carry text rather than padding (short examples padded to L leave most
    of a row empty). Rows are filled by `best_fit`, at most `max_per_row` examples each;
    deterministic, and training shuffles the rows.

    Every row: input_ids, token_type_ids [R, L] as the examples had them, one after the other;
    attention_mask [R, L] = the example's number in the row (1, 2, ...; 0 = padding), which with
    position_ids [R, L] (0, 1, ... per example) keeps attention and positions within each example
    (see BertEncoder). Classification: cls_positions, labels and label_weights [R, max_per_row]
    (label_weights 0 on empty slots). Token classification: labels and label_weights [R, L]
    travel with their tokens (token_spans, only needed to score, are dropped)."""
    lengths = features["attention_mask"].sum(1)
    L = features["input_ids"].shape[1]
    members = best_fit(lengths, L, max_per_row)
    R, token_level = len(members), features["labels"].ndim == 2
    out = {k: np.zeros((R, L), np.int32)
           for k in ("input_ids", "token_type_ids", "attention_mask", "position_ids")}
    out["input_ids"][:] = pad_id
    if token_level:
        out["labels"], out["label_weights"] = np.zeros((R, L), np.int32), np.zeros((R, L), np.float32)
    else:
        out["cls_positions"] = np.zeros((R, max_per_row), np.int32)
        out["labels"] = np.zeros((R, max_per_row), features["labels"].dtype)   # float: regression
        out["label_weights"] = np.zeros((R, max_per_row), np.float32)
    for r, row in enumerate(members):
        start = 0
        for slot, i in enumerate(row):
            n = int(lengths[i])
            span = slice(start, start + n)
            for k in ("input_ids", "token_type_ids"):
                out[k][r, span] = features[k][i, :n]
            out["attention_mask"][r, span] = slot + 1
            out["position_ids"][r, span] = np.arange(n)
            if token_level:
                out["labels"][r, span] = features["labels"][i, :n]
                out["label_weights"][r, span] = features["label_weights"][i, :n]
            else:
                out["cls_positions"][r, slot] = start
                out["labels"][r, slot] = features["labels"][i]
                out["label_weights"][r, slot] = 1.0
            start += n
    return out


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Which instances share a training row (sequence packing), stored flat like `Instances`:
    row r holds instances members[offsets[r]:offsets[r+1]], in that order."""

    members: np.ndarray  # int32 [N]
    offsets: np.ndarray  # int64 [R + 1]
    max_per_row: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, r: int) -> np.ndarray:
        return self.members[self.offsets[r] : self.offsets[r + 1]]


def pack_instances(instances: Instances, max_seq_len: int, max_per_row: int = 8) -> PackedRows:
    """Groups the instances into rows of at most max_seq_len tokens (`best_fit`), once: the
    loader shuffles the rows every epoch and masks them afresh, as it does unpacked instances."""
    groups = best_fit(np.diff(instances.offsets), max_seq_len, max_per_row)
    return PackedRows(
        members=np.fromiter((i for g in groups for i in g), np.int32, len(instances)),
        offsets=np.cumsum([0] + [len(g) for g in groups], dtype=np.int64),
        max_per_row=max_per_row,
    )
