"""Pretraining recipe: BERT's masked LM and next-sentence prediction on a corpus (or whole-word /
span masking and ALBERT's sentence-order prediction: data.masking, data.sentence_task).

Data: `nlp_jax.data.build_pretraining_data` (corpus -> tokenizer -> sentence pairs -> masked Grain
stream); model: `BertForPreTraining` with the sentence heads data.sentence_task asks for; loss: the
weighted sum of `config.losses` (registered names), less a sentence loss the data makes no labels
for (`training_losses`).
Evaluation scores fixed held-out batches (the "eval" rows) and has no test split or best
checkpoint: a pretraining run is judged by what it transfers to.
"""
from __future__ import annotations

import collections
import logging

import jax
import numpy as np

from nlp_jax import losses, parallel
from nlp_jax.data import build_pretraining_data
from nlp_jax.data.pretraining import MASKING, MIN_SEQ_LEN, SENTENCE_TASKS, check_choice
from nlp_jax.models.bert import BertForPreTraining
from nlp_jax.train.pretrained import bert_config
from nlp_jax.train.recipes import Evaluation, Recipe, Stream, register

log = logging.getLogger("nlp_jax")


def frequency_baseline(eval_batches) -> float:
    """Held-out accuracy of always predicting the most frequent masked token: the bar a masked LM
    must clear to have learnt anything (an upper bound for any constant guess)."""
    ids = np.concatenate([b["masked_lm_ids"][b["masked_lm_weights"] > 0] for b in eval_batches])
    return float(np.bincount(ids).max() / max(len(ids), 1))


# Sentence-level losses -> the data.sentence_task values that make their labels.
_SENTENCE_LOSSES = {"nsp": ("nsp", "both"), "sop": ("sop", "both")}


def training_losses(config) -> dict[str, float]:
    """config.losses without the sentence losses (nsp, sop) whose labels data.sentence_task does
    not make: the config lists both weights, the data decides which one trains."""
    task = config.data.get("sentence_task", "nsp")
    return {name: weight for name, weight in config.losses.items()
            if task in _SENTENCE_LOSSES.get(name, SENTENCE_TASKS)}


@register("pretrain")
class Pretrain(Recipe):
    eval_split = "eval"

    @staticmethod
    def check_config(config) -> None:
        d, m = config.data, config.model
        if d.corpus not in ("builtin", "text", "tfds"):
            raise ValueError(f"data.corpus={d.corpus!r}: choose builtin, text or tfds")
        if d.corpus == "text" and not d.train_files:
            raise ValueError("data.corpus=text needs data.train_files (a glob of text files)")
        if d.corpus == "tfds" and not d.tfds_name:
            raise ValueError("data.corpus=tfds needs data.tfds_name, e.g. wikipedia/20230601.en")
        if d.train_files and d.corpus != "text":
            raise ValueError(f"data.train_files is set but data.corpus={d.corpus}; add "
                             "--config.data.corpus=text to train on those files")
        if d.tfds_name and d.corpus != "tfds":
            raise ValueError(f"data.tfds_name is set but data.corpus={d.corpus}; add "
                             "--config.data.corpus=tfds to train on that dataset")
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
        # A rotary model has no position table, so nothing bounds its length.
        if m.position_embedding == "absolute" and d.max_seq_len > m.max_position_embeddings:
            raise ValueError(f"data.max_seq_len={d.max_seq_len} exceeds model."
                             f"max_position_embeddings={m.max_position_embeddings}; raise the "
                             "latter or shorten the former")
        if config.get("init_from"):
            raise ValueError("init_from is a fine-tuning key; pretraining resumes from its own "
                             "--workdir")
        for name in config.losses:
            losses.get(name)   # an unknown loss is refused now, not after the data is built

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
        self.sentence_task = d.get("sentence_task", "nsp")
        log.info("model: %s", self.model_config)

    def model(self, rngs):
        return BertForPreTraining(self.model_config, rngs, sentence_task=self.sentence_task)

    def evaluate(self, split, params, steps) -> Evaluation:
        evaluate = steps["pretrain"].evaluate
        sums = collections.defaultdict(float)
        for b in self.eval_batches:
            for k, v in evaluate(params, parallel.global_batch(b, self.mesh)).items():
                sums[k] += float(v)
        metrics = {k: v / len(self.eval_batches) for k, v in sums.items()}
        metrics["masked_lm_accuracy_baseline"] = self.baseline
        return Evaluation(rows=[metrics], summary=metrics)
