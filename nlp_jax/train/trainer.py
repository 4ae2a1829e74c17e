"""The training loop, the only one: every kind of run (pretraining, fine-tuning, ...) is a recipe.

`train_and_evaluate(config, workdir)` is what `run.py` calls; a notebook can call it too. Top to
bottom: config checks, workdir and lock, mesh, the recipe's data and model, the jitted steps,
restore (the workdir's latest checkpoint, else `init_from` through the recipe, else fresh), the
loop (K steps per call, logging, evaluation, checkpoints, the best checkpoint by the dev score),
then the test split with the best parameters.

Rerunning the same command continues from the latest checkpoint, data position included, and gives
exactly the losses of an uninterrupted run. Faults:
  - SIGTERM or SIGINT (a preempted VM, Ctrl-C): the current call finishes, a checkpoint is saved
    at its step and completed, and `Stopped` is raised (run.py exits 128 + the signal number).
    On several processes JAX's preemption service takes SIGTERM and Orbax's sync point makes
    every process stop at the same step.
  - A non-finite loss or gradient norm stops the run (`NonFiniteError`, naming the step and the
    loss parts) before anything from that step on is saved.
  - An unreadable newest checkpoint is set aside with a warning; the previous one is restored.
  - A second run on a workdir that a live run holds is refused (`WorkdirInUseError`); the lock is
    the kernel's (flock), so a run killed even with SIGKILL leaves none behind.
"""
from __future__ import annotations

import collections
import fcntl
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Callable, Sequence

import jax
import numpy as np

from nlp_jax import losses, parallel
from nlp_jax.train import optim, recipes
from nlp_jax.train.checkpoint import (Checkpointer, DamagedCheckpointError,
                                     IncompatibleCheckpointError, check_compatible, overlay,
                                     subset)
from nlp_jax.train.step import Regularizers, make_steps
from nlp_jax.train.writer import MetricWriter, write_json

log = logging.getLogger("nlp_jax")


class Stopped(Exception):
    """The run stopped on a signal after saving a checkpoint; rerun the command to continue."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; the checkpoint "
                         "of that step is saved: rerun the same command to continue")


class NonFiniteError(ValueError):
    pass


class WorkdirInUseError(ValueError):
    pass


def train_and_evaluate(config, workdir: str, *, hooks: Sequence[Callable[[int, dict], None]] = ()):
    """Trains `config` in `workdir`. Returns the recipe's summary of the final evaluation: the
    test split's (fine-tuning: {task: metrics}), else the last evaluation's metrics.

    hooks: functions called as hook(step, state) after every jitted call (every step, or every
    K = train.steps_per_execution steps), e.g. custom logging or an early stop by raising."""
    # ---------------------------------------------------------------- config & workdir
    losses.import_loss_modules(config.get("loss_modules", ()))  # user losses and recipes
    recipe_cls = recipes.get(config.get("recipe", "pretrain"))
    _check_config(config)
    recipe_cls.check_config(config)
    config_dict = json.loads(config.to_json_best_effort())
    _make_dir(workdir)
    with _WorkdirLock(workdir), _StopSignals() as signals:
        return _run(config, config_dict, workdir, recipe_cls, signals, hooks)


def _run(config, config_dict, workdir, recipe_cls, signals, hooks):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    ckpt = Checkpointer(ckpt_dir, max_to_keep=config.train.max_checkpoints) \
        if os.path.isdir(ckpt_dir) else None
    latest = ckpt.latest_step() if ckpt else None
    if latest is not None:  # refuse another run's checkpoint before any slow work
        try:
            check_compatible(ckpt.saved_config(latest), config_dict, ckpt_dir)
        except DamagedCheckpointError:
            pass   # restore_latest below sets it aside and falls back
        except IncompatibleCheckpointError:
            ckpt.close()
            raise

    # ---------------------------------------------------------------- mesh
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.rules_from_config(config.mesh)
    log.info("mesh %s on %d process(es)", dict(mesh.shape), jax.process_count())

    # ---------------------------------------------------------------- the recipe: data and model
    recipe = recipe_cls(config, workdir, mesh)
    t = _resolve_intervals(config.train, recipe.steps_per_epoch)

    # ---------------------------------------------------------------- optimiser and steps
    peft_method = (config.get("peft") or {}).get("method", "none")
    tx = optim.make_optimizer(t, recipe.num_layers, config.get("peft"))
    schedule = optim.learning_rate_schedule(t)
    regularizers = Regularizers.from_config(t, config.get("peft"))
    steps = {name: make_steps(recipe.model, tx, stream.loss_fn, mesh, rules, seed=t.seed,
                              grad_accum_steps=t.grad_accum_steps, schedule=schedule,
                              model_kwargs=stream.model_kwargs, regularizers=regularizers)
             for name, stream in recipe.streams.items()}
    first = next(iter(steps.values()))

    # ---------------------------------------------------------------- restore or initialise
    # What checkpoints hold of the params: all, or (PEFT from init_from) all but the base's
    # frozen weights, which restoring takes from init_from again.
    trains = optim.trainable_mask(first.abstract_state["params"], t, recipe.num_layers,
                                  peft_method)
    from_base = recipe.from_base(first.abstract_state["params"], trains)
    keep = None if from_base is None else jax.tree.map(lambda b: not b, from_base)
    saved = (lambda p: p) if keep is None else (lambda p: subset(p, keep))
    target = {**first.abstract_state, "params": saved(first.abstract_state["params"])}
    restored = ckpt.restore_latest(target, config_dict) if latest is not None else None
    if restored is None:
        state, start, best_score, stale = first.init(), 0, None, 0
        state["params"] = recipe.init_params(state["params"])
    else:
        start, state, data = restored
        if from_base is not None:
            state["params"] = overlay(recipe.init_params(first.init()["params"]), state["params"])
        # Checkpoints written before the one trainer held the pretraining iterator's state alone.
        data = data if "iterators" in data else {"iterators": {next(iter(steps)): data}}
        for name, stream in recipe.streams.items():
            stream.batches.set_state(data["iterators"][name])
        best_score = data.get("best_score")
        stale = data.get("evals_without_improvement", 0)
        log.info("resumed from step %d", start)
    k = _steps_per_call(t)
    # Each stream's jitted call by its number of steps: k, and 1 up to a step k does not reach.
    calls = {n: {1: s.train, **({k: s.jit_train(k)} if k > 1 else {})} for n, s in steps.items()}
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    n_trainable = sum(x.size for x, train in zip(jax.tree.leaves(state["params"]),
                                                 jax.tree.leaves(trains)) if train)
    # The optimiser's memory, which parameter-efficient methods are for (frozen leaves have none).
    opt_state_bytes = sum(x.nbytes for x in jax.tree.leaves(state["opt_state"]))
    log.info("%s: %.1fM parameters (%.2fM trained); %d step(s) per call; %d steps",
             type(recipe).__name__, n_params / 1e6, n_trainable / 1e6, k, t.num_steps)

    # Written only now that everything loaded and fits: a failed start leaves the workdir as it was.
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "config.json"), config_dict)
    recipe.write_files()
    ckpt = ckpt or Checkpointer(ckpt_dir, max_to_keep=t.max_checkpoints)
    best_dir = os.path.join(workdir, "best")
    best_ckpt = Checkpointer(best_dir, max_to_keep=1, async_save=False) \
        if os.path.isdir(best_dir) else None
    if best_ckpt is not None:
        # A best checkpoint past the restored step belongs to steps that are trained again.
        for step in best_ckpt.manager.all_steps():
            if step > start:
                best_ckpt.manager.delete(step)

    # ---------------------------------------------------------------- loop
    writer = MetricWriter(workdir, resume_step=start,
                          recomputed_splits=(recipe.test_split,) if recipe.test_split else ())
    several = len(recipe.streams) > 1
    bar = _progress_bar(t, start)
    finite = _FiniteCheck()
    window = _Throughput()
    last_saved, last_eval = start if restored else None, None
    iterators = {n: s.batches.get_state() for n, s in recipe.streams.items()}
    logged = start > 0   # a resumed run logged the sizes in its first row already
    call, compiled = 0, set()

    def save(step):
        nonlocal last_saved
        finite.check()      # never a checkpoint with non-finite values
        ckpt.save(step, {**state, "params": saved(state["params"])},
                  {"iterators": iterators, "best_score": best_score,
                   "evals_without_improvement": stale}, config_dict)
        last_saved = step

    def evaluate(step):
        nonlocal best_score, best_ckpt, last_eval, stale
        result = recipe.evaluate(recipe.eval_split, state["params"], steps)
        for row in result.rows:
            log.info("step %d %s: %s", step, recipe.eval_split, _fmt(writer.write(
                step, recipe.eval_split, row)))
        if result.score is not None and (best_score is None or result.score > best_score):
            best_score, stale = float(result.score), 0
            best_ckpt = best_ckpt or Checkpointer(best_dir, max_to_keep=1, async_save=False)
            best_ckpt.save(step, {"params": saved(state["params"])}, {"score": best_score},
                           config_dict)
        elif result.score is not None:
            stale += 1
        if result.score is not None:
            log.info("step %d %s score %.4f (best %.4f)", step, recipe.eval_split, result.score,
                     best_score)
        last_eval = result

    try:
        # train.early_stopping_patience: stop after that many evaluations without a better score
        # (a rerun of a run that stopped so goes straight to the test split).
        patience = t.get("early_stopping_patience", 0)
        end = start if patience and stale >= patience else t.num_steps
        if t.num_steps == 0 and best_ckpt is None:   # train.epochs=0 (zero-shot): the starting
            evaluate(0)                              # weights' dev rows, kept in best/
        for step, n, name, batch, iterators in _prefetch(recipe, start, end,
                                                          _call_size(t, k), mesh):
            state, metrics = calls[name][n](state, batch)
            finite.add(step, n, metrics)
            window.add(recipe.streams[name].per_row, t.batch_size * n)
            call += 1
            if (name, n) not in compiled:  # keep compilation out of the throughput figures
                compiled.add((name, n))
                jax.block_until_ready(metrics)
                window.reset()
            if step % t.log_every == 0 or step == t.num_steps:
                finite.check()
                metrics = jax.device_get(metrics)
                if n > 1:   # the call's last step, as with single steps
                    metrics = {m: v[-1] for m, v in metrics.items()}
                metrics.update(window.rates())
                if not logged:   # the first train row says how much of the model trains
                    metrics.update(params=n_params, trainable_params=n_trainable,
                                   opt_state_bytes=opt_state_bytes)
                    logged = True
                row = writer.write(step, "train",
                                   {"task": name, **metrics} if several else metrics)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.3f}")
                window.reset()
            if bar is not None:
                bar.update(n)
            if step % t.eval_every == 0 or step == t.num_steps:
                finite.check()
                evaluate(step)
                window.reset()   # evaluation time is not training throughput
            if step % t.checkpoint_every == 0 or step == t.num_steps:
                save(step)
            for hook in hooks:
                hook(step, state)
            if patience and stale >= patience:
                log.info("step %d: early stopping, %d evaluations without a better %s", step,
                         stale, recipe.eval_split)
                if last_saved != step:
                    save(step)
                break
            if _should_stop(signals, ckpt, call):
                if last_saved != step:
                    save(step)
                ckpt.wait()
                raise Stopped(step, signals.signum or signal.SIGTERM)
        finite.check()

        # ------------------------------------------------------------ final evaluation
        if recipe.test_split is None:
            if last_eval is None:   # already finished: report the last evaluation again
                last_eval = recipe.evaluate(recipe.eval_split, state["params"], steps)
            return last_eval.summary
        params, step = state["params"], max(start, t.num_steps)
        if best_ckpt is not None and best_ckpt.latest_step() is not None:
            step = best_ckpt.latest_step()
            params = overlay(state["params"], best_ckpt.restore(
                step, {"params": target["params"]}, config_dict)[0]["params"])
        result = recipe.evaluate(recipe.test_split, params, steps)
        for row in result.rows:   # a row may name its own split, e.g. test_mismatched
            split = row.pop("split", recipe.test_split)
            log.info("%s (step %d): %s", split, step, _fmt(writer.write(step, split, row)))
        _write_predictions(workdir, recipe.test_split, result.predictions)
        return result.summary
    finally:  # a checkpoint in flight is completed even when the run stops on an error
        if bar is not None:
            bar.close()
        ckpt.wait()
        ckpt.close()
        if best_ckpt is not None:
            best_ckpt.close()
        writer.close()


# ------------------------------------------------------------------------------------------
# Config


def _check_config(config) -> None:
    """What every recipe's train block must satisfy; the recipe checks its own keys."""
    t = config.train
    if t.batch_size % jax.process_count():
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the "
                         f"{jax.process_count()} processes")
    if t.batch_size % t.grad_accum_steps:
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by "
                         f"train.grad_accum_steps={t.grad_accum_steps}")
    for key in ("steps_per_execution", "log_every", "max_checkpoints", "grad_accum_steps"):
        if t[key] < 1:
            raise ValueError(f"train.{key}={t[key]} must be >= 1")
    for key in ("num_steps", "eval_every", "checkpoint_every"):
        if t[key] < 0:
            raise ValueError(f"train.{key}={t[key]} must be >= 0")


def _resolve_intervals(t, steps_per_epoch: int):
    """train.num_steps (0: train.epochs epochs; both 0: none), eval_every (0: once an epoch) and
    checkpoint_every (0: at every evaluation), in steps."""
    t = t.copy_and_resolve_references()
    with t.unlocked():
        if t.num_steps <= 0:   # train.epochs=0 too: no step, the starting weights are scored
            if not steps_per_epoch or t.get("epochs") is None or t.epochs < 0:
                raise ValueError("train.num_steps=0 needs train.epochs; set one of them")
            t.num_steps = t.epochs * steps_per_epoch
        if t.eval_every <= 0:
            if not steps_per_epoch:
                raise ValueError("train.eval_every must be > 0 for this recipe")
            t.eval_every = steps_per_epoch
        t.checkpoint_every = t.checkpoint_every if t.checkpoint_every > 0 else t.eval_every
    return t


def _steps_per_call(t) -> int:
    """Steps per jitted call: the largest divisor of train.log_every that is at most
    train.steps_per_execution, so that calls end at every logged step. The updates do not depend
    on it, only the speed."""
    return max(d for d in range(1, t.steps_per_execution + 1) if t.log_every % d == 0)


def _call_size(t, k: int) -> Callable[[int], int]:
    """step -> how many steps the call after it runs: k, or 1 where k steps would pass a step that
    must end a call (logged, evaluated, checkpointed or the last), as an evaluation at the end of
    a 739-step epoch; so any num_steps and interval run at k steps per call nearly throughout."""
    every = (t.log_every, t.eval_every, t.checkpoint_every)

    def size(step: int) -> int:
        boundary = min(t.num_steps, *(step - step % e + e for e in every))
        return k if step + k <= boundary else 1
    return size


# ------------------------------------------------------------------------------------------
# Loop parts


def _prefetch(recipe, start: int, num_steps: int, call_size: Callable[[int], int], mesh,
              size: int = 2):
    """Yields (last step of the call, its number of steps n = call_size(step before it), stream
    name, global batch on device, every stream's iterator state after it), `size` calls ahead, so
    the host-to-device copy of the next batch overlaps the current call. n > 1: n batches stacked
    on a leading axis (one stream per call)."""
    iterators = {n: s.batches for n, s in recipe.streams.items()}
    queue = collections.deque()
    next_step = start

    def put():
        nonlocal next_step
        name, k = recipe.pick(next_step + 1), call_size(next_step)
        it = iterators[name]
        if k == 1:
            batch = parallel.global_batch(next(it), mesh)
        else:
            local = [next(it) for _ in range(k)]
            batch = parallel.global_batch({f: np.stack([b[f] for b in local]) for f in local[0]},
                                          mesh, stacked=True)
        next_step += k
        queue.append((next_step, k, name, batch,
                      {n: i.get_state() for n, i in iterators.items()}))

    if start >= num_steps:
        return
    for _ in range(size):
        put()
    while True:
        put()
        item = queue.popleft()
        yield item
        if item[0] >= num_steps:
            return


class _FiniteCheck:
    """Keeps each call's metrics on the device until the loop syncs anyway (a log, evaluation or
    checkpoint step), then finds the first step whose loss or gradient norm is not finite."""

    def __init__(self):
        self.pending = []

    def add(self, step: int, k: int, metrics: dict) -> None:
        self.pending.append((step - k + 1, {m: metrics[m] for m in metrics
                                            if m.endswith("loss") or m == "grad_norm"}))

    def check(self) -> None:
        pending, self.pending = self.pending, []
        fetched = jax.device_get([metrics for _, metrics in pending])   # one transfer for all
        for (first_step, _), metrics in zip(pending, fetched):
            values = {m: np.atleast_1d(np.asarray(v)) for m, v in metrics.items()}
            bad = ~np.logical_and.reduce([np.isfinite(v) for v in values.values()])
            if bad.any():
                i = int(np.argmax(bad))
                parts = ", ".join(f"{m}={float(v[i]):.4g}" for m, v in sorted(values.items()))
                raise NonFiniteError(
                    f"step {first_step + i}: the loss is not finite ({parts}); nothing from this "
                    "step on was saved. Lower train.learning_rate (or check the data and the "
                    "loss weights), then rerun: training resumes from the last checkpoint")


class _Throughput:
    def __init__(self):
        self.reset()

    def reset(self):
        self.start, self.counts = time.perf_counter(), collections.Counter()

    def add(self, per_row: dict, rows: int):
        for unit, n in per_row.items():
            self.counts[unit] += n * rows

    def rates(self) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {f"{unit}_per_s": n / elapsed for unit, n in self.counts.items()}


class _StopSignals:
    """SIGTERM and SIGINT set a flag that the loop reads between calls: a handler must not save
    (the signal may arrive inside Orbax or XLA). A second Ctrl-C stops at once. Several processes:
    SIGTERM is left to JAX's preemption service (the loop asks Orbax's sync point instead), and
    SIGINT to Python, because one process's flag would stop it alone."""

    def __init__(self):
        self.signum, self._previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step with a checkpoint",
                    signal.Signals(signum).name)

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _should_stop(signals: _StopSignals, ckpt: Checkpointer, call: int) -> bool:
    if jax.process_count() > 1:
        # Every process calls this after every call; JAX picks one call number for all of them.
        return ckpt.manager.reached_preemption(call)
    return signals.signum is not None


class _WorkdirLock:
    """An exclusive flock on WORKDIR/.lock for the run's lifetime (process 0; a remote workdir is
    not locked). The kernel drops it when the process ends, however it ends; the file is removed
    on a normal exit, so a finished (or refused) run leaves the workdir as it was."""

    def __init__(self, workdir: str):
        self.workdir, self.path, self.file = workdir, os.path.join(workdir, ".lock"), None

    def __enter__(self):
        if jax.process_index() != 0 or "://" in self.workdir:
            return self
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "?"
                f.close()
                raise WorkdirInUseError(f"{self.workdir} is in use by a live run (process "
                                        f"{holder}); wait for it to end, or use another "
                                        "--workdir") from None
            # A run that just ended may have removed the file we opened: lock the one on disk.
            try:
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            os.remove(self.path)
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


def _progress_bar(t, start):
    if not t.get("progress_bar", False) or jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=t.num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)


def _fmt(metrics: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()
            if k not in ("step", "split") and "/" not in k and not isinstance(v, list)}


def _make_dir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--workdir {workdir} cannot be created ({e.strerror}); choose another "
                         "path") from None


def _write_predictions(workdir: str, split: str, predictions: dict) -> None:
    if jax.process_index() != 0 or not predictions:
        return
    os.makedirs(os.path.join(workdir, "predictions"), exist_ok=True)
    for name, rows in predictions.items():
        with open(os.path.join(workdir, "predictions", f"{name}_{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

