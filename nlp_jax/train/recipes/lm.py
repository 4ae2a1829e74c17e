"""Language-model recipe: a decoder-only Transformer (GPT) trained on next-token prediction.

Data: `nlp_jax.data.lm.build_lm_data` (corpus -> tokenizer -> documents packed into rows, the
causal mask stopping at each document's end); model: `Decoder` (nlp_jax/models/decoder.py);
loss: `clm`. Evaluation pools fixed held-out batches (train.eval_batches; 0: the whole held-out split) into
one per-token loss, its perplexity and next-token accuracy, beside the perplexity of a 4-gram
model (interpolated Kneser-Ney) of the same tokens on the whole held-out split: the bar a language
model must clear.
"""
from __future__ import annotations

import logging
import math

import jax

from nlp_jax import losses, parallel
from nlp_jax.data import corpora
from nlp_jax.data import lm as lm_data
from nlp_jax.models.decoder import Decoder
from nlp_jax.train.pretrained import bert_config, check_positions
from nlp_jax.train.recipes import Evaluation, Recipe, Stream, register

log = logging.getLogger("nlp_jax")


def pooled(rows: list[dict]) -> dict:
    """Per-batch `clm` / `seq2seq` metrics -> one per-token mean over all batches (weighted by
    `predicted_tokens`), and perplexity = exp(loss)."""
    tokens = sum(r["predicted_tokens"] for r in rows)
    out = {k: sum(r[k] * r["predicted_tokens"] for r in rows) / max(tokens, 1e-9)
           for k in rows[0] if k != "predicted_tokens"}
    out["perplexity"] = math.exp(min(out["loss"], 50.0))
    out["predicted_tokens"] = tokens
    return out


@register("lm")
class LanguageModel(Recipe):
    eval_split = "eval"

    @staticmethod
    def check_config(config) -> None:
        d, m = config.data, config.model
        corpora.check_corpus_config(d)
        if d.max_seq_len < 2:
            raise ValueError(f"data.max_seq_len={d.max_seq_len}: a row needs at least 2 tokens")
        check_positions(m, d.max_seq_len, "data.max_seq_len")
        if set(config.losses) != {"clm"}:
            raise ValueError(f"losses={dict(config.losses)}: a language model trains on "
                             "{'clm': 1.0} (add your own loss under another recipe)")
        if config.get("init_from"):
            raise ValueError("init_from is a fine-tuning key; a language model resumes from its "
                             "own --workdir")

    def __init__(self, config, workdir: str, mesh):
        t, d = config.train, config.data
        self.data = lm_data.build_lm_data(
            d, workdir=workdir, batch_size=t.batch_size, seed=t.seed,
            num_eval_batches=t.eval_batches, process_index=jax.process_index(),
            process_count=jax.process_count())
        self.model_config = bert_config(config.model, self.data.tokenizer.vocab_size)
        self.num_layers = self.model_config.num_layers
        self.steps_per_epoch = self.data.steps_per_epoch
        self.eval_batches = self.data.eval_batches(t.eval_batches)
        # The bar to clear: a 4-gram model (interpolated Kneser-Ney) of the same tokens.
        self.baseline = lm_data.ngram_perplexity(
            self.data.train.documents(), self.data.heldout.documents(), n=4,
            vocab_size=self.data.tokenizer.vocab_size)["perplexity"]
        self.streams = {"lm": Stream(
            batches=self.data.train_iter(), loss_fn=losses.combined_loss(dict(config.losses)),
            model_kwargs={}, per_row={"tokens": d.max_seq_len})}
        self.mesh = mesh
        log.info("model: %s", self.model_config)

    def model(self, rngs):
        return Decoder(self.model_config, rngs)

    def evaluate(self, split, params, steps) -> Evaluation:
        evaluate = steps["lm"].evaluate
        rows = [{k: float(v) for k, v in evaluate(params, parallel.global_batch(b, self.mesh)).items()}
                for b in self.eval_batches]
        metrics = pooled(rows)
        metrics.pop("clm_loss", None)   # the same number as loss
        metrics["perplexity_baseline"] = self.baseline
        return Evaluation(rows=[metrics], summary=metrics)
