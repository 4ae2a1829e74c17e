"""Loss functions, picked by name (see registry.py for the contract)."""
from nlp_jax.losses import crf, generation, pretraining, tasks  # noqa: F401  (register mlm, clm, ...)
from nlp_jax.losses.registry import combined_loss, get, import_loss_modules, register

__all__ = ["combined_loss", "get", "import_loss_modules", "register"]
