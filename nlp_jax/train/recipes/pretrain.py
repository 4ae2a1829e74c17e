"""Pretraining recipe: BERT's masked LM and next-sentence prediction on a corpus (or whole-word /
span masking and ALBERT's sentence-order prediction: data.masking, data.sentence_task; or ELECTRA's
replaced-token detection: model.electra).

Data: `nlp_jax.data.build_pretraining_data` (corpus -> tokenizer -> sentence pairs -> masked Grain
stream); model: `BertForPreTraining` with the sentence heads data.sentence_task asks for, or
`ElectraForPreTraining` (generator + discriminator, nlp_jax/models/electra.py); loss: the weighted
sum of `config.losses` (registered names), less those the model or the data gives nothing to
(`training_losses`).
Evaluation scores fixed held-out batches (the "eval" rows) and has no test split or best
checkpoint: a pretraining run is judged by what it transfers to.
"""
from __future__ import annotations

import collections
import logging

import jax
import numpy as np

from nlp_jax import losses, parallel
from nlp_jax.data import build_pretraining_data, corpora
from nlp_jax.data.pretraining import MASKING, MIN_SEQ_LEN, SENTENCE_TASKS, check_choice
from nlp_jax.models.electra import ElectraConfig, generator_config
from nlp_jax.train.pretrained import bert_config, check_positions, pretraining_model
from nlp_jax.train.recipes import Evaluation, Recipe, Stream, register

log = logging.getLogger("nlp_jax")


def frequency_baseline(eval_batches) -> float:
    """Held-out accuracy of always predicting the most frequent masked token: the bar a masked LM
    must clear to have learnt anything (an upper bound for any constant guess)."""
    ids = np.concatenate([b["masked_lm_ids"][b["masked_lm_weights"] > 0] for b in eval_batches])
    return float(np.bincount(ids).max() / max(len(ids), 1))


# Sentence-level losses -> the data.sentence_task values that make their labels.
_SENTENCE_LOSSES = {"nsp": ("nsp", "both"), "sop": ("sop", "both")}
# Losses only one model computes -> that model ("electra": model.electra, else "bert"); a loss
# not listed (a user's own) trains with either.
_MODEL_LOSSES = {"mlm": "bert", "nsp": "bert", "sop": "bert",
                 "generator_mlm": "electra", "rtd": "electra"}


def training_losses(config) -> dict[str, float]:
    """config.losses without those the run gives nothing to: the sentence losses (nsp, sop) whose
    labels data.sentence_task does not make, and the losses of the other model (BERT: mlm and the
    sentence losses; ELECTRA: generator_mlm and rtd). The config lists every weight; the data and
    model.electra decide which train."""
    task = config.data.get("sentence_task", "nsp")
    model = "electra" if config.model.get("electra", False) else "bert"
    return {name: weight for name, weight in config.losses.items()
            if task in _SENTENCE_LOSSES.get(name, SENTENCE_TASKS)
            and _MODEL_LOSSES.get(name, model) == model}


def check_electra(config) -> None:
    """model.electra's keys, and the losses it needs (one clear line each)."""
    m, weights = config.model, config.losses
    for name, what in (("generator_mlm", "its generator"), ("rtd", "its discriminator")):
        if weights.get(name, 0) <= 0:
            raise ValueError(f"model.electra=True trains {what} through losses.{name}, which is "
                             f"{weights.get(name, 'missing')}; set --config.losses.{name} > 0 "
                             "(ELECTRA: generator_mlm 1, rtd 50)")
    if m.get("generator_temperature", 1.0) <= 0:
        raise ValueError(f"model.generator_temperature={m.generator_temperature} must be > 0")
    generator_config(bert_config(m, 8), ElectraConfig.from_config(m))   # the fractions' check


@register("pretrain")
class Pretrain(Recipe):
    eval_split = "eval"

    @staticmethod
    def check_config(config) -> None:
        d, m = config.data, config.model
        corpora.check_corpus_config(d)
        if d.max_seq_len < MIN_SEQ_LEN:
            raise ValueError(f"data.max_seq_len={d.max_seq_len} is too small: need at least "
                             f"{MIN_SEQ_LEN} for [CLS] A [SEP] B [SEP]; raise data.max_seq_len")
        if not 0 < d.mask_prob <= 1 or d.max_predictions < 1:
            raise ValueError(f"data.mask_prob={d.mask_prob} must be in (0, 1] and "
                             f"data.max_predictions={d.max_predictions} >= 1")
        check_choice("data.masking", d.get("masking", "token"), MASKING)
        check_choice("data.sentence_task", d.get("sentence_task", "nsp"), SENTENCE_TASKS)
        span_p, span_max = d.get("span_length_p", 0.2), d.get("max_span_length", 10)
        if d.get("masking") == "span" and not (0 < span_p <= 1 and span_max >= 1):
            raise ValueError(f"data.span_length_p={span_p} must be in (0, 1] and "
                             f"data.max_span_length={span_max} >= 1")
        check_positions(m, d.max_seq_len, "data.max_seq_len")
        if config.get("init_from"):
            raise ValueError("init_from is a fine-tuning key; pretraining resumes from its own "
                             "--workdir")
        for name in config.losses:
            losses.get(name)   # an unknown loss is refused now, not after the data is built
        if m.get("electra", False):
            check_electra(config)

    def __init__(self, config, workdir: str, mesh):
        t, d = config.train, config.data
        self.data = build_pretraining_data(
            d, workdir=workdir, batch_size=t.batch_size, seed=t.seed,
            num_eval_batches=t.eval_batches, process_index=jax.process_index(),
            process_count=jax.process_count())
        self.model_config = bert_config(config.model, self.data.tokenizer.vocab_size)
        self.num_layers = self.model_config.num_layers
        self.steps_per_epoch = self.data.steps_per_epoch
        self.eval_batches = self.data.eval_batches()
        self.baseline = frequency_baseline(self.eval_batches)
        self.streams = {"pretrain": Stream(
            batches=self.data.train_iter(), loss_fn=losses.combined_loss(training_losses(config)),
            model_kwargs={},
            # tokens: every position; text_tokens: the (packed) rows' text, padding excluded.
            per_row={"tokens": d.max_seq_len, "text_tokens": self.data.text_tokens_per_row})}
        self.mesh = mesh
        self.config = config
        log.info("model: %s", self.model_config)
        if config.model.get("electra", False):
            log.info("ELECTRA generator: %s", generator_config(
                self.model_config, ElectraConfig.from_config(config.model)))

    def model(self, rngs):
        return pretraining_model(self.model_config, self.config, rngs)

    def evaluate(self, split, params, steps) -> Evaluation:
        evaluate = steps["pretrain"].evaluate
        sums = collections.defaultdict(float)
        for b in self.eval_batches:
            for k, v in evaluate(params, parallel.global_batch(b, self.mesh)).items():
                sums[k] += float(v)
        metrics = {k: v / len(self.eval_batches) for k, v in sums.items()}
        metrics["masked_lm_accuracy_baseline"] = self.baseline
        return Evaluation(rows=[metrics], summary=metrics)
