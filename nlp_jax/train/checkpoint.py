"""Orbax checkpoints, and the one way to read them back.

A run's checkpoints live under WORKDIR/checkpoints/<step>/ (and the best one by the dev score under
WORKDIR/best/<step>/), each one composite item per step:

    state   params, optimizer state, step, RNG (written sharded by every process); best/ holds
            {"params"} only. With parameter-efficient fine-tuning from `init_from`, "params" holds
            only what that base does not give: the trained part (and anything fresh, e.g. a
            pooler the base lacks); restoring reads the base again and `overlay`s it.
    data    JSON: the training iterators' positions and the best dev score so far. The global
            batch order does not depend on the number of processes, so one copy suffices.
    config  JSON: the run's config, checked on restore so that a workdir holding another run's
            checkpoint is refused with one clear line instead of a shape error.

`Checkpointer.restore` is the only restore: resume, `init_from`, `best/` and `--mode predict` all
go through it. It reads the subtree its target names (partial restore), into the shardings the
target carries, so a fine-tuning run takes the encoder from a pretraining checkpoint and leaves
the heads and optimizer state alone.

Saving is asynchronous: the step loop goes on while the arrays are written. Orbax writes to a
temporary directory and renames it when complete, so a crash never leaves a half checkpoint where
the next run would restore it; a checkpoint damaged later (a truncated or missing file) is set
aside by `restore_latest`, which then falls back to the previous one.
"""
from __future__ import annotations

import logging
import os
import time

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("nlp_jax")

# Config entries that change the shape or meaning of what a checkpoint holds, with the value that
# a config saved before the entry existed stands for (data.pack: such runs were unpacked).
_COMPATIBILITY_KEYS = {"model": None, "data.vocab_size": None, "data.max_seq_len": None,
                       "data.pack": False, "data.masking": "token", "data.sentence_task": "nsp",
                       "peft": None}


class IncompatibleCheckpointError(ValueError):
    pass


class DamagedCheckpointError(ValueError):
    pass


def _lookup(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def check_compatible(saved: dict, current: dict, directory: str) -> None:
    for key, default in _COMPATIBILITY_KEYS.items():
        a, b = (default if v is None else v for v in (_lookup(saved, key), _lookup(current, key)))
        if isinstance(a, dict) and isinstance(b, dict):
            # Keys one side lacks came (or went) with a later version: compare what both hold.
            a, b = ({k: d[k] for k in sorted(a.keys() & b.keys())} for d in (a, b))
        if a != b:
            raise IncompatibleCheckpointError(
                f"{directory} holds a checkpoint of another run ({key}: saved {a}, config {b}); "
                "use a new --workdir, or the same config as the saved run")


def on_one_device(tree):
    """ShapeDtypeStructs of `tree` placed on the first device: a restore target for use outside
    a mesh (prediction, loading a pretrained encoder before it is sharded)."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


class Checkpointer:
    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                                 read_only=read_only,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data: dict, config: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(state),   # the handler PyTreeRestore (below) reads
            data=ocp.args.JsonSave(data),
            config=ocp.args.JsonSave(config)))

    def saved_config(self, step: int) -> dict:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(
                config=ocp.args.JsonRestore()))["config"]
        except Exception as e:  # pylint: disable=broad-except
            raise DamagedCheckpointError(f"{self.directory}/{step}: {_first_line(e)}") from e

    def restore(self, step: int, target: dict, config: dict | None = None
                ) -> tuple[dict, dict | None]:
        """(state, data) of checkpoint `step`: the subtree of the saved state that `target` names
        (a pytree of jax.ShapeDtypeStruct with shardings), placed as the target says, and the JSON
        data item. `config`: refuse a checkpoint of another run (IncompatibleCheckpointError);
        DamagedCheckpointError when the files cannot be read."""
        if config is not None:
            check_compatible(self.saved_config(step), config, self.directory)
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(target, restore_args=restore_args,
                                             partial_restore=True),
                data=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            if _is_shape_error(e):
                raise IncompatibleCheckpointError(
                    f"{self.directory}/{step} does not fit this model ({_first_line(e)}); use a "
                    "new --workdir, or the config it was saved with") from e
            raise DamagedCheckpointError(f"{self.directory}/{step}: {_first_line(e)}") from e
        except Exception as e:  # pylint: disable=broad-except  (TensorStore, OS errors, ...)
            raise DamagedCheckpointError(f"{self.directory}/{step}: {_first_line(e)}") from e
        return restored["state"], restored["data"]

    def restore_latest(self, target: dict, config: dict) -> tuple[int, dict, dict] | None:
        """(step, state, data) of the newest readable checkpoint, or None if there is none. A
        damaged one (a truncated or missing file) gets one warning line and is moved to
        WORKDIR/damaged_checkpoints/, and the previous one is tried."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state, data = self.restore(step, target, config)
                return step, state, data
            except DamagedCheckpointError as e:
                log.warning("checkpoint %d is unreadable (%s); set aside, trying the previous one",
                            step, str(e).split(": ", 1)[-1])
                self._set_aside(step)
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            target = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints",
                                  f"{step}-{int(time.time())}")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def subset(tree: dict, keep) -> dict:
    """The leaves of nested dict `tree` where `keep` (a tree of bools like it) is True; empty
    dicts dropped. What a checkpoint holds when part of the model is another checkpoint's."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            sub = subset(v, keep[k])
            if sub:
                out[k] = sub
        elif keep[k]:
            out[k] = v
    return out


def overlay(tree: dict, part: dict) -> dict:
    """`tree` with the leaves `part` has replaced by its values (`subset`'s inverse)."""
    return {k: overlay(v, part[k]) if isinstance(v, dict) and k in part else part.get(k, v)
            for k, v in tree.items()}


def _first_line(e: Exception, limit: int = 300) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= limit else line[:limit] + " ..."


def _is_shape_error(e: Exception) -> bool:
    text = str(e).lower()
    return any(p in text for p in ("shape mismatch", "not compatible with the stored shape",
                                   "incompatible shape", "shapes do not match"))
