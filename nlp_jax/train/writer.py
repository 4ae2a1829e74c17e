"""Where a run's records go: WORKDIR/metrics.jsonl (one JSON object per logged step), TensorBoard,
and the workdir's JSON files (written whole or not at all).

Only process 0 writes metrics; the values are global (already reduced over all devices and hosts).
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np


class MetricWriter:
    def __init__(self, workdir: str, *, resume_step: int = 0, recomputed_splits=()):
        """resume_step: rows logged after it are dropped (they will be logged again), as are all
        rows of `recomputed_splits` and of splits named after them (e.g. "test" and
        "test_mismatched", scored again at the end of every run)."""
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not self.enabled:
            return
        _truncate_after(self.path, resume_step, recomputed_splits)
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:  # TensorBoard is optional: metrics.jsonl is the record
            self._tb = None

    def write(self, step: int, split: str, metrics: dict) -> dict:
        row = {"step": int(step), "split": split}
        row.update({k: _scalar(v) for k, v in sorted(metrics.items())})
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if self._tb is not None:
                for k, v in row.items():
                    if k not in ("step", "split") and isinstance(v, (int, float)):
                        self._tb.add_scalar(f"{split}/{k}", v, step)
        return row

    def close(self):
        if self._tb is not None:
            self._tb.close()


def _scalar(v):
    v = np.asarray(v)
    return v.item() if v.size == 1 else v.tolist()


def _recomputed(split: str, recomputed_splits) -> bool:
    return any(split == s or split.startswith(s + "_") for s in recomputed_splits)


def _truncate_after(path: str, step: int, recomputed_splits=()) -> None:
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step
                and not _recomputed(json.loads(line)["split"], recomputed_splits)]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(rows)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """Writes `obj` to `path` through a temporary file and a rename: never half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
