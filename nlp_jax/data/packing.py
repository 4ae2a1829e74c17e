"""Sequence packing: which examples share a row, so that batches carry text rather than padding.

Fine-tuning (`tasks.pack_features`) and pretraining (`pretraining.make_packed_example`) build
their rows from the groups `best_fit` returns; the model keeps every example to itself through a
segment-numbered attention mask and per-example positions (see `BertEncoder`).
"""
from __future__ import annotations

import bisect
import heapq

import numpy as np


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
