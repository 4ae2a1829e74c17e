"""Grain batch streams: each process's share of a seeded global batch order, checkpointable.

Pretraining (`pipeline.PretrainingData.train_iter`) and fine-tuning (`task_batches`,
`eval_batches`) read their rows through one stream, `batch_dataset`:
  row indices 0..N-1 -> shuffle (reshuffled every epoch) -> repeat (num_epochs; None = forever)
  -> per-row map (rng from (seed, position in the stream)) -> batch(B / P)
  -> every P-th local batch from process_index -> per-batch map.
The global order depends only on the seed, never on the number of processes P: global batch k is
the P consecutive local batches kP .. kP+P-1, and process p reads the rows [p*B/P, (p+1)*B/P) of
it. The iterator state counts global batches, so a checkpointed position also resumes under
another process count, with the same rows and the same per-row randomness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import numpy as np


def check_sharding(batch_size: int, process_index: int, process_count: int) -> None:
    """Raises ValueError unless every process can read an equal share of each global batch."""
    if batch_size % process_count:
        raise ValueError(
            f"batch_size={batch_size} is not divisible by process_count={process_count}; use a "
            f"multiple of {process_count}"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} is outside [0, process_count={process_count})"
        )


def batch_dataset(
    num_rows: int,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    pad_remainder: bool = False,
    row_fn: Callable[[int, np.random.Generator], Any] | None = None,
    batch_fn: Callable[[np.ndarray], Any] | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """This process's MapDataset of local batches of `batch_size / process_count` rows (see the
    module docstring for the order).

    row_fn(index, rng) makes a row from its index; without it, a local batch is an int array of
    row indices, which batch_fn (applied to every local batch) may turn into features. The
    shuffle and the rngs derive from `seed` alone. With finite `num_epochs`, `pad_remainder` pads
    the last global batch with index -1 rows (row_fn and batch_fn must handle them) instead of
    dropping it, and the global batches are cut to a multiple of process_count local batches, so
    that every process reads the same number.
    """
    check_sharding(batch_size, process_index, process_count)
    shuffle_seed, row_seed = np.random.SeedSequence(seed).generate_state(2)
    ds = grain.MapDataset.range(num_rows)
    if shuffle:
        # ShuffleMapDataset reseeds with (seed + epoch) for positions past one epoch (after repeat).
        ds = ds.shuffle(seed=int(shuffle_seed))
    ds = ds.repeat(num_epochs)
    if pad_remainder and num_epochs is not None and len(ds) % batch_size:
        rows, total = ds, len(ds)
        padded = -(-total // batch_size) * batch_size
        ds = grain.MapDataset.range(padded).map(lambda i: rows[i] if i < total else -1)
    if row_fn is not None:
        # Seeded by the stream position, which differs every epoch: each pass draws anew.
        ds = ds.random_map(row_fn, seed=int(row_seed))
    ds = ds.batch(batch_size // process_count, drop_remainder=True)
    if num_epochs is not None:
        ds = ds[: len(ds) - len(ds) % process_count]
    ds = ds[process_index::process_count]
    return ds if batch_fn is None else ds.map(batch_fn)


def iterate(ds: grain.MapDataset, *, num_threads: int, prefetch: int) -> grain.DatasetIterator:
    """Iterator over `ds`, read ahead on threads (not processes, so it needs no absl flags and no
    picklable closures). get_state() -> a JSON-serialisable dict; set_state(state) resumes exactly
    where it was taken."""
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


# ----------------------------------------------------------------------------------------------
# Fine-tuning features (encoding.encode_task's arrays, or packing.pack_features' rows).


def _gather(features: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """Rows `index` of every feature; index -1 is a padding row (a copy of row 0 with weight 0,
    so the model sees ordinary inputs and every metric ignores it)."""
    real = index >= 0
    batch = {k: v[np.where(real, index, 0)] for k, v in features.items()}
    batch["example_weights"] = real.astype(np.float32)
    if "label_weights" in batch:
        batch["label_weights"] = batch["label_weights"] * real[:, None]
    return batch


def _num_examples(features: dict[str, np.ndarray]) -> int:
    sizes = {len(v) for v in features.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"features have different numbers of rows {sorted(sizes)}; use encode_task"
        )
    return sizes.pop()


def task_batches(
    features: dict[str, np.ndarray],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool,
    drop_remainder: bool,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    num_threads: int = 1,
    prefetch: int = 4,
    row_fn: Callable[[int, np.random.Generator], dict] | None = None,
) -> grain.DatasetIterator:
    """Iterator of this process's local batches {name: [batch_size / process_count, ...]} plus
    "example_weights" [B/P] float32 (0 on padding rows).

    row_fn(index, rng) -> {name: array}: makes each training row afresh at every read instead of
    taking row `index` of `features` (text augmentation); its rng depends on the seed and the
    position in the stream alone, so resuming replays it (drop_remainder only).

    The order is `batch_dataset`'s: example indices -> shuffle (reshuffled each epoch) ->
    repeat(num_epochs; None = forever) -> [finite, not drop_remainder: padded with weight-0 rows
    to a whole global batch] -> batch(B/P) -> every P-th from process_index. With finite epochs
    the global batches are cut to a multiple of P local batches so that every process gets the
    same number of batches. get_state()/set_state() checkpoint it.
    """
    n = _num_examples(features)
    if n == 0:
        raise ValueError("no examples to batch; check the task split")
    if row_fn is not None:
        if not drop_remainder:
            raise ValueError("row_fn is for training streams (drop_remainder=True)")
        ds = batch_dataset(
            n, batch_size=batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
            row_fn=lambda i, rng: {**row_fn(int(i), rng), "example_weights": np.float32(1.0)},
            process_index=process_index, process_count=process_count,
        )
        return iterate(ds, num_threads=num_threads, prefetch=prefetch)
    ds = batch_dataset(
        n, batch_size=batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        pad_remainder=not drop_remainder,
        batch_fn=lambda index: _gather(features, np.asarray(index)),
        process_index=process_index, process_count=process_count,
    )
    return iterate(ds, num_threads=num_threads, prefetch=prefetch)


def eval_batches(
    features: dict[str, np.ndarray],
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """All examples once, in order, as this process's rows of global batches of `batch_size`; the
    last global batch is padded with example_weights 0 (and label_weights 0), so every batch has
    the same shapes and sum(example_weights) over all processes equals the number of examples."""
    return list(
        task_batches(
            features, batch_size=batch_size, seed=0, shuffle=False, drop_remainder=False,
            process_index=process_index, process_count=process_count, num_epochs=1, num_threads=0,
        )
    )
