"""Orbax checkpoints: one composite item per step under WORKDIR/checkpoints/<step>/.

    state   params, optimizer state, step, RNG (StandardSave: sharded, written by every process)
    data    the Grain iterator's position (JSON). The global batch order does not depend on the
            number of processes, so every process holds the same position and one copy suffices.
    config  the run's config (JSON), checked on restore so that a workdir holding another run's
            checkpoint is refused with one clear line instead of a shape error.

Saving is asynchronous: the step loop goes on while the arrays are written. Orbax writes to a
temporary directory and renames it when complete, so a crash never leaves a half checkpoint
where the next run would restore it.
"""
from __future__ import annotations

import os

import orbax.checkpoint as ocp

# Config entries that change the shape or meaning of what a checkpoint holds, with the value that
# a config saved before the entry existed stands for (data.pack: such runs were unpacked).
_COMPATIBILITY_KEYS = {"model": None, "data.vocab_size": None, "data.max_seq_len": None,
                       "data.pack": False}


class IncompatibleCheckpointError(ValueError):
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
        if a != b:
            raise IncompatibleCheckpointError(
                f"{directory} holds a checkpoint of another run ({key}: saved {a}, config {b}); "
                "use a new --workdir, or the same config as the saved run")


class Checkpointer:
    def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_state: dict, config: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config)))

    def saved_config(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))["config"]

    def restore(self, step: int, abstract_state: dict, config: dict) -> tuple[dict, dict]:
        """Restores (state, data_state) into the shardings of `abstract_state`."""
        check_compatible(self.saved_config(step), config, self.directory)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore()))
        except (ValueError, KeyError) as e:
            raise IncompatibleCheckpointError(
                f"{self.directory}/{step} does not fit this model ({str(e).splitlines()[0]}); "
                "use a new --workdir, or the config it was saved with") from e
        return restored["state"], restored["data"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
