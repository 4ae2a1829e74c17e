"""nlp-jax: Transformer language models in pure JAX (Flax NNX, optax, Orbax, Grain)."""
__version__ = "0.1.0"
