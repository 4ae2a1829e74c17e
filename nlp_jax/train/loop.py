"""The shape of a training run, top to bottom: workdir, mesh, data, model, state, steps, loop.

`train_and_evaluate(config, workdir)` is what `run.py` calls; a notebook can call it too.
Rerunning it on the same workdir continues from the latest checkpoint, data position included,
and produces exactly the losses an uninterrupted run would have.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from typing import Callable, Sequence

import jax
import numpy as np

from nlp_jax import losses, parallel
from nlp_jax.data import build_pretraining_data
from nlp_jax.models.bert import BertForPreTraining
from nlp_jax.train import optim
from nlp_jax.train.checkpoint import Checkpointer, check_compatible
from nlp_jax.train.pretrained import bert_config
from nlp_jax.train.step import make_steps
from nlp_jax.train.writer import MetricWriter

log = logging.getLogger("nlp_jax")


def _check_config(config) -> None:
    t, d = config.train, config.data
    if t.batch_size % jax.process_count():
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by the "
                         f"{jax.process_count()} processes")
    if t.batch_size % t.grad_accum_steps:
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by "
                         f"train.grad_accum_steps={t.grad_accum_steps}")
    if t.get("steps_per_execution", 1) < 1:
        raise ValueError(f"train.steps_per_execution={t.steps_per_execution} must be >= 1")
    # A rotary model has no position table, so nothing bounds its length.
    if (config.model.position_embedding == "absolute"
            and d.max_seq_len > config.model.max_position_embeddings):
        raise ValueError(f"data.max_seq_len={d.max_seq_len} exceeds model.max_position_embeddings="
                         f"{config.model.max_position_embeddings}; raise the latter or shorten the former")


def frequency_baseline(eval_batches) -> float:
    """Held-out accuracy of always predicting the most frequent masked token: the bar a masked LM
    must clear to have learnt anything (an upper bound for any constant guess)."""
    ids = np.concatenate([b["masked_lm_ids"][b["masked_lm_weights"] > 0] for b in eval_batches])
    return float(np.bincount(ids).max() / max(len(ids), 1))


def train_and_evaluate(config, workdir: str, *, hooks: Sequence[Callable[[int, dict], None]] = ()
                       ) -> dict:
    """Trains `config` in `workdir`; returns the last evaluation's metrics.

    hooks: functions called as hook(step, state) after every jitted call: every step, or every
    `_steps_per_call` steps (e.g. custom logging, or an early stop by raising)."""
    # ---------------------------------------------------------------- config & workdir
    _check_config(config)
    os.makedirs(workdir, exist_ok=True)
    config_dict = json.loads(config.to_json_best_effort())
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.max_checkpoints)
    latest = ckpt.latest_step()
    if latest is not None:  # refuse another run's checkpoint before writing anything
        check_compatible(ckpt.saved_config(latest), config_dict, ckpt.directory)
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, "config.json"), config_dict)

    # ---------------------------------------------------------------- mesh
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.rules_from_config(config.mesh)
    log.info("mesh %s on %d process(es)", dict(mesh.shape), jax.process_count())

    # ---------------------------------------------------------------- input pipeline
    t, d = config.train, config.data
    data = build_pretraining_data(d, workdir=workdir, batch_size=t.batch_size, seed=t.seed,
                                  num_eval_batches=t.eval_batches,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
    train_iter = data.train_iter()
    eval_batches = data.eval_batches()

    # ---------------------------------------------------------------- model, loss, optimiser
    model_cfg = bert_config(config.model, data.tokenizer.vocab_size)
    losses.import_loss_modules(config.loss_modules)
    loss_fn = losses.combined_loss(dict(config.losses))
    tx = optim.make_optimizer(t)
    k = _steps_per_call(t, start=latest or 0)
    steps = make_steps(lambda rngs: BertForPreTraining(model_cfg, rngs), tx, loss_fn, mesh, rules,
                       seed=t.seed, grad_accum_steps=t.grad_accum_steps,
                       schedule=optim.learning_rate_schedule(t), steps_per_execution=k)

    # ---------------------------------------------------------------- init or restore
    if latest is None:
        state, start = steps.init(), 0
    else:
        state, data_state = ckpt.restore(latest, steps.abstract_state, config_dict)
        train_iter.set_state(data_state)
        start = latest
        log.info("resumed from step %d", start)
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    log.info("model: %s, %.1fM parameters; %d step(s) per call", model_cfg, n_params / 1e6, k)

    # ---------------------------------------------------------------- loop
    writer = MetricWriter(workdir, resume_step=start)
    tokens_per_batch = t.batch_size * d.max_seq_len
    text_tokens_per_batch = t.batch_size * data.text_tokens_per_row   # padding excluded
    baseline = frequency_baseline(eval_batches)

    def evaluate(step):
        sums = collections.defaultdict(float)
        for b in eval_batches:
            for k, v in steps.evaluate(state["params"], parallel.global_batch(b, mesh)).items():
                sums[k] += float(v)
        metrics = {k: v / len(eval_batches) for k, v in sums.items()}
        metrics["masked_lm_accuracy_baseline"] = baseline
        return writer.write(step, "eval", metrics)

    def save(step):
        ckpt.save(step, state, last_data_state, config_dict)

    batches = _prefetch(train_iter, mesh, size=2, steps_per_execution=k)
    bar = _progress_bar(t, start)
    last_data_state, result = train_iter.get_state(), {}
    window_start, window_steps = time.perf_counter(), 0
    try:
        for step in range(start + k, t.num_steps + 1, k):   # step: the last step of the call
            batch, last_data_state = next(batches)
            state, metrics = steps.train(state, batch)
            window_steps += k
            if step == start + k:  # keep compilation out of the tokens/s figures
                jax.block_until_ready(metrics)
                window_start, window_steps = time.perf_counter(), 0
            if step % t.log_every == 0 or step == t.num_steps:
                metrics = jax.device_get(metrics)  # the only host sync in the loop
                if k > 1:   # the call's last step, as with single steps
                    metrics = {name: value[-1] for name, value in metrics.items()}
                elapsed = time.perf_counter() - window_start
                steps_per_s = window_steps / max(elapsed, 1e-9)
                metrics["tokens_per_s"] = tokens_per_batch * steps_per_s
                metrics["text_tokens_per_s"] = text_tokens_per_batch * steps_per_s
                row = writer.write(step, "train", metrics)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")
                window_start, window_steps = time.perf_counter(), 0
            if bar is not None:
                bar.update(k)
            if step % t.eval_every == 0 or step == t.num_steps:
                result = evaluate(step)
                log.info("step %d eval: %s", step, _fmt(result))
            if step % t.checkpoint_every == 0 or step == t.num_steps:
                save(step)
            for hook in hooks:
                hook(step, state)
        if not result and start >= t.num_steps:  # already finished: report the final evaluation
            result = evaluate(start)
    finally:  # a checkpoint in flight is completed even when the loop stops on an error
        if bar is not None:
            bar.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    if result:
        log.info("held-out masked-LM accuracy %.4f (most frequent token: %.4f), next-sentence "
                 "accuracy %.4f", result.get("masked_lm_accuracy", float("nan")), baseline,
                 result.get("next_sentence_accuracy", float("nan")))
    return result


def _steps_per_call(t, start: int = 0) -> int:
    """Steps per jitted call (make_steps' steps_per_execution): the largest divisor of num_steps,
    the log/eval/checkpoint intervals and the resumed step that is at most
    train.steps_per_execution, so that every call ends where a step has to be logged, evaluated
    or saved. The updates do not depend on it, only the speed does."""
    g = math.gcd(t.num_steps, t.log_every, t.eval_every, t.checkpoint_every, start)
    return max(d for d in range(1, t.get("steps_per_execution", 1) + 1) if g % d == 0)


def _fmt(metrics: dict) -> dict:
    return {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}


def _prefetch(train_iter, mesh, size: int, steps_per_execution: int = 1):
    """Yields (global batch on device, iterator state after it), `size` batches ahead, so the
    host-to-device copy of the next batch overlaps the current step. steps_per_execution > 1:
    that many batches stacked on a leading axis, one call's worth."""
    queue = collections.deque()

    def put():
        if steps_per_execution == 1:
            batch = parallel.global_batch(next(train_iter), mesh)
        else:
            local = [next(train_iter) for _ in range(steps_per_execution)]
            batch = parallel.global_batch({name: np.stack([b[name] for b in local])
                                           for name in local[0]}, mesh, stacked=True)
        queue.append((batch, train_iter.get_state()))

    for _ in range(size):
        put()
    while True:
        put()
        yield queue.popleft()


def _progress_bar(t, start):
    if not t.progress_bar or jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=t.num_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
