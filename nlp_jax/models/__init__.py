"""Flax NNX models."""
from nlp_jax.models.bert import PRESETS, BertConfig, BertEncoder, BertForPreTraining

__all__ = ["PRESETS", "BertConfig", "BertEncoder", "BertForPreTraining"]
