"""The loss registry: losses are pure functions picked by name from the config.

A loss is `fn(outputs, batch) -> (loss, metrics)`: `outputs` is the dict the model returns,
`batch` the dict the pipeline yields, `loss` a float32 scalar and `metrics` a dict of scalars to
log. Register one with `@register("name")`; a config then trains on it with
`config.losses = {"name": weight, ...}`. A researcher's own module is listed in
`config.loss_modules` and imported before the losses are looked up, so no edit of nlp_jax is needed.
"""
from __future__ import annotations

import functools
import importlib
from typing import Callable

import jax.numpy as jnp

LossFn = Callable[[dict, dict], tuple]


class Registry:
    """Things picked by name from the config (losses here; recipes use one too)."""

    def __init__(self, kind: str, plural: str):
        self.kind, self.plural, self.entries = kind, plural, {}

    def register(self, name: str):
        """Decorator: `@register("name")` makes the decorated object available under `name`."""
        def wrap(obj):
            if name in self.entries and self.entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice; pick another name")
            self.entries[name] = obj
            return obj
        return wrap

    def get(self, name: str):
        if name not in self.entries:
            raise KeyError(f"unknown {self.kind} {name!r}: registered {self.plural} are "
                           f"{sorted(self.entries)}; add your module to config.loss_modules if "
                           "it defines it")
        return self.entries[name]


_LOSSES = Registry("loss", "losses")
register = _LOSSES.register   # `@register("mlm")`: available as `config.losses.mlm`
get = _LOSSES.get


def import_loss_modules(modules) -> None:
    """Imports user modules (dotted names) so their @register calls run."""
    for m in modules or ():
        try:
            importlib.import_module(m)
        except ImportError as e:
            raise ImportError(f"config.loss_modules: cannot import {m!r} ({e}); "
                              "check the name and that its directory is on PYTHONPATH") from e


def combined_loss(weights: dict, loss_args: dict | None = None) -> LossFn:
    """The weighted sum of the named losses; each loss's own value is reported as `<name>_loss`.

    loss_args: optional keyword arguments per loss name, e.g. {"classification":
    {"label_smoothing": 0.1}}."""
    loss_args = loss_args or {}
    fns = {name: functools.partial(get(name), **dict(loss_args.get(name, {}))) for name in weights}

    def loss_fn(outputs, batch):
        total, metrics = jnp.float32(0.0), {}
        for name, fn in fns.items():
            value, m = fn(outputs, batch)
            total = total + weights[name] * value
            metrics.update(m)
            metrics[f"{name}_loss"] = value
        metrics["loss"] = total
        return total, metrics

    return loss_fn
