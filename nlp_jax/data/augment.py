"""Text augmentation of training examples: EDA (Wei and Zou 2019), drawn afresh at every read.

`eda(text, rng, alpha, unit)` applies one of EDA's operations, chosen at random, to about
alpha x n of the text's n units (characters, or words: jieba's for Chinese, letters-and-digits
runs elsewhere, `corpora.segment_words`):
    random deletion   each unit dropped with probability alpha (at least one unit kept)
    random swap       two random units swapped, max(1, alpha n) times
    random insertion  a copy of a random unit inserted at a random place, max(1, alpha n) times
EDA's fourth operation, synonym replacement, needs a synonym lexicon; none ships with the
project's dependencies, so it is left out (and random insertion copies a word of the same text
where EDA inserts a synonym).

The rng comes from the Grain stream (seed and position in the stream), so the same seed gives the
same augmented text at the same step, and resuming replays it exactly.
"""
from __future__ import annotations

import numpy as np

from nlp_jax.data import corpora

UNITS = ("char", "word")


def _units(text: str, unit: str) -> tuple[list[str], str]:
    """The units of `text` and what joins them back: characters; or words, joined by nothing in
    Chinese (jieba's words) and by one space elsewhere (runs of letters and digits, symbols)."""
    if unit == "char":
        return list(text), ""
    starts = corpora.segment_words(text).tolist()
    words = [text[a:b].strip() for a, b in zip(starts, starts[1:] + [len(text)])]
    return [w for w in words if w], "" if corpora.HAN.search(text) else " "


def eda(text: str, rng: np.random.Generator, alpha: float, unit: str = "char") -> str:
    """`text` changed by one random EDA operation on about alpha of its units (see the module
    docstring); texts of one unit come back as they are."""
    units, joiner = _units(text, unit)
    n = len(units)
    if n < 2 or alpha <= 0:
        return text
    changes = max(1, int(alpha * n))
    op = rng.integers(3)
    if op == 0:     # random deletion
        keep = rng.random(n) >= alpha
        if not keep.any():
            keep[rng.integers(n)] = True
        units = [u for u, k in zip(units, keep) if k]
    elif op == 1:   # random swap
        for _ in range(changes):
            i, j = rng.integers(n, size=2)
            units[i], units[j] = units[j], units[i]
    else:           # random insertion of a copy of one of the text's own units
        for _ in range(changes):
            units.insert(int(rng.integers(len(units) + 1)), units[int(rng.integers(n))])
    return joiner.join(units)
