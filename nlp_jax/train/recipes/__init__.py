"""Recipes: what differs between kinds of run. The trainer (`nlp_jax/train/trainer.py`) does the rest.

A recipe is picked by name from `config.recipe` ("pretrain", "finetune", or one a user's module
registers with `@register("name")`; list that module in `config.loss_modules`). The trainer uses it
in this order:

    Recipe.check_config(config)         static checks, before anything slow: one clear line each
    recipe = Recipe(config, workdir, mesh)   data, tokenizer, the model's config (the slow part)
    recipe.model(rngs)                  the nnx.Module to train
    recipe.streams                      name -> Stream: the training batches and the loss per stream
    recipe.pick(step)                   which stream trains at `step` (several tasks: a seeded draw)
    recipe.init_params(params)          fresh parameters -> parameters to start from (init_from)
    recipe.from_base(params, trains)    which of them checkpoints leave to the base (PEFT)
    recipe.write_files()                what the workdir needs besides checkpoints (tokenizer, ...)
    recipe.evaluate(split, params, steps)   -> Evaluation: rows for metrics.jsonl, a score, ...

A new kind of task is a recipe, a model (or head) and a loss; the trainer does not change.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

from flax import nnx

from nlp_jax.losses.registry import Registry

_RECIPES = Registry("recipe", "recipes")
register = _RECIPES.register   # class decorator: `@register("my_task")` -> config.recipe = "my_task"


def get(name: str) -> type:
    # The built-in recipes register on import; imported here so that the registry is complete.
    from nlp_jax.train.recipes import finetune, lm, pretrain, seq2seq  # noqa: F401  pylint: disable=unused-import
    return _RECIPES.get(name)


@dataclasses.dataclass
class Stream:
    """One source of training batches and what the step does with them."""
    batches: Iterator[dict]       # local batches (numpy), forever; get_state()/set_state() resume it
    loss_fn: Callable             # fn(outputs, batch) -> (loss, metrics)
    model_kwargs: dict            # fixed keyword arguments of the model call (e.g. the task head)
    per_row: dict                 # unit -> how many per batch row, logged as <unit>_per_s


@dataclasses.dataclass
class Evaluation:
    rows: list[dict]              # written to metrics.jsonl under the split's name
    score: float | None = None    # higher is better; picks the best checkpoint (None: no best/)
    predictions: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
                                  # name -> one row per example (the test split's are written)
    summary: Any = None           # what train_and_evaluate returns


class Recipe:
    """The base: defaults for what a recipe may leave out."""
    eval_split = "eval"           # scored every train.eval_every steps
    test_split: str | None = None  # scored once at the end, with the best (else the last) params
    streams: dict[str, Stream]
    steps_per_epoch: int = 0      # for train.epochs and eval_every = 0 (0: the recipe has no epochs)
    num_layers: int = 0           # the encoder's depth, for train.freeze_layers / layerwise_lr_decay

    @staticmethod
    def check_config(config) -> None:
        pass

    def model(self, rngs: nnx.Rngs) -> nnx.Module:
        raise NotImplementedError

    def pick(self, step: int) -> str:
        return next(iter(self.streams))

    def init_params(self, params: dict) -> dict:
        return params

    def write_files(self) -> None:
        pass

    def from_base(self, params: dict, trains: dict) -> dict | None:
        """A tree of bools like `params`: True where `init_params` loads a weight that does not
        train (so checkpoints need not hold it), or None (checkpoints hold every parameter)."""
        return None

    def evaluate(self, split: str, params: dict, steps: dict) -> Evaluation:
        raise NotImplementedError
