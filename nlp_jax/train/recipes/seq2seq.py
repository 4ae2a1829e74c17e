"""Sequence-to-sequence recipe (translation, summarisation): BERT2BERT, trained with teacher
forcing, scored on generated text.

- Data: `nlp_jax.data.seq2seq` (built-in pinyin / headline, TFDS, TSV / JSONL files), encoded as
  source ids and BOS + target -> target + EOS.
- Model: `Seq2Seq` (nlp_jax/models/decoder.py). `config.init_from` (a pretraining workdir of
  ours or a Hugging Face BERT directory) warm-starts the encoder and the decoder from the same
  BERT (Rothe et al., 2020); the tokenizer is then the checkpoint's. Empty: random weights and a
  tokenizer trained on the task's sources and targets.
- Loss: `seq2seq` (next-token cross-entropy, train.label_smoothing).
- Evaluation: the dev split's teacher-forced loss and, on up to data.eval_examples examples,
  the generated text's BLEU / ROUGE / exact match (task.metrics); train.best_metric picks the
  best checkpoint, whose test rows and predictions end the run.

WORKDIR/encoder.json and seq2seq.json record what `--mode generate` needs to rebuild the model.
"""
from __future__ import annotations

import logging

import jax
import numpy as np

from nlp_jax import losses, metrics as metrics_lib, parallel
from nlp_jax.data import seq2seq as data
from nlp_jax.data import stream
from nlp_jax.data.tokenizer import load_or_train_tokenizer
from nlp_jax.models import decoding
from nlp_jax.models.decoder import Seq2Seq, warm_start_decoder
from nlp_jax.train import pretrained
from nlp_jax.train.checkpoint import overlay
from nlp_jax.train.recipes import Evaluation, Recipe, Stream, register
from nlp_jax.train.recipes.finetune import _check_shapes, write_model_files
from nlp_jax.train.recipes.lm import pooled

log = logging.getLogger("nlp_jax")

def generation_settings(g, max_target_len: int = 0) -> dict:
    """config.generate -> keyword arguments of `decoding.generate`."""
    return dict(method=g.method, max_new_tokens=int(g.max_new_tokens or max_target_len),
                num_beams=int(g.num_beams), length_penalty_alpha=float(g.length_penalty),
                temperature=float(g.temperature), top_k=int(g.top_k), top_p=float(g.top_p))


def check_generate(g) -> None:
    if g.method not in decoding.METHODS:
        raise ValueError(f"generate.method={g.method!r}: choose one of "
                         f"{', '.join(decoding.METHODS)}")
    if g.num_beams < 1 or g.temperature <= 0 or not 0 < g.top_p <= 1 or g.top_k < 0:
        raise ValueError(f"generate: num_beams={g.num_beams} must be >= 1, temperature="
                         f"{g.temperature} > 0, top_p={g.top_p} in (0, 1] and top_k={g.top_k} "
                         ">= 0")


def generate_texts(model, tokenizer, texts: list[str], settings: dict, *, max_len: int,
                   seq2seq: bool, batch_size: int = 32, seed: int = 0) -> list[str]:
    """Generated text for each input: a Seq2Seq model's output for each source (its first max_len
    pieces), or a language model's continuation of each prompt ([CLS] + its last max_len - 1
    pieces, left-padded). model: (graphdef, params) or a module. Every batch is padded to
    batch_size rows of max_len, so one compiled search serves them all; batch k samples with
    the key (seed, k)."""
    ids = tokenizer.encode_batch(texts) if texts else []
    out = []
    for k in range(0, len(ids), batch_size):
        chunk = ids[k:k + batch_size]
        prompt = np.full((batch_size, max_len), tokenizer.pad_id, np.int32)
        mask = np.zeros((batch_size, max_len), np.int32)
        mask[len(chunk):, -1] = 1   # rows that only pad the batch: one real token each
        for i, pieces in enumerate(chunk):
            pieces = pieces[:max_len] if seq2seq else [tokenizer.cls_id, *pieces][-max_len:]
            if seq2seq:   # the source reads left to right
                prompt[i, :len(pieces)], mask[i, :len(pieces)] = pieces, 1
            else:         # the prompt ends where generation starts
                prompt[i, max_len - len(pieces):], mask[i, max_len - len(pieces):] = pieces, 1
        if seq2seq and not all(chunk):
            mask[:, 0] = 1   # an empty source still reads one (padding) token
        result = decoding.generate(model, prompt, mask, eos_id=tokenizer.sep_id,
                                   pad_id=tokenizer.pad_id, bos_id=tokenizer.cls_id,
                                   rng=jax.random.key(seed * 100_003 + k // batch_size),
                                   **settings)
        out.extend(data.detokenize(tokenizer, row) for row in np.asarray(result.tokens)[:len(chunk)])
    return out


@register("seq2seq")
class Seq2SeqRecipe(Recipe):
    eval_split = "dev"
    test_split = "test"

    @staticmethod
    def check_config(config) -> None:
        d = config.data
        if d.max_source_len < 1 or d.max_target_len < 2:
            raise ValueError(f"data.max_source_len={d.max_source_len} must be >= 1 and "
                             f"data.max_target_len={d.max_target_len} >= 2 (BOS or EOS + a piece)")
        if set(config.losses) != {"seq2seq"}:
            raise ValueError(f"losses={dict(config.losses)}: a seq2seq model trains on "
                             "{'seq2seq': 1.0}")
        unknown = [m for m in config.task.metrics if m not in metrics_lib.GENERATION_METRICS]
        if unknown:
            raise ValueError(f"task.metrics: unknown {unknown}; use some of "
                             f"{', '.join(metrics_lib.GENERATION_METRICS)}")
        best = config.train.best_metric
        reported = {"rouge1", "rouge2", "rougeL"} if "rouge" in config.task.metrics else set()
        reported |= {m for m in config.task.metrics if m != "rouge"} | {"loss"}
        if best not in reported:
            raise ValueError(f"train.best_metric={best!r} is not among the dev metrics "
                             f"{sorted(reported)}; pick one of them or add it to task.metrics")
        if (config.get("peft") or {}).get("method", "none") != "none":
            raise ValueError("peft.method: parameter-efficient tuning is for the encoder tasks "
                             "(configs/finetune_*.py) for now; set peft.method=none")
        check_generate(config.generate)
        pretrained.check_init_from(config)

    def __init__(self, config, workdir: str, mesh):
        t, d = config.train, config.data
        self.config, self.workdir, self.mesh = config, workdir, mesh
        self.splits = data.load_seq2seq_task(config.task.name, config.task, d.split_seed)
        if config.init_from:
            self.encoder = pretrained.load_encoder(config.init_from, config.model)
            self.model_config, self.tokenizer = self.encoder.config, self.encoder.tokenizer
            self.tokenizer_files = self.encoder.tokenizer_files
        else:
            self.encoder = None
            train = self.splits["train"]
            self.tokenizer = load_or_train_tokenizer(
                d, workdir, lambda: (x for e in train for x in (e["source"], e["target"])))
            self.tokenizer_files = pretrained.tokenizer_files(d.tokenizer_path) \
                if d.tokenizer_path else {}
            self.model_config = pretrained.bert_config(config.model, self.tokenizer.vocab_size)
        cfg = self.model_config
        pretrained.check_positions(cfg, d.max_source_len, "data.max_source_len")
        pretrained.check_positions(cfg, d.max_target_len, "data.max_target_len")
        self.num_layers = cfg.num_layers
        self.info = {"task": config.task.name, "metrics": list(config.task.metrics),
                     "chinese": data.target_is_chinese(self.splits["train"]),
                     "max_source_len": d.max_source_len, "max_target_len": d.max_target_len}
        # Dev is decoded at every evaluation: its first data.eval_examples examples only.
        if d.eval_examples:
            self.splits["dev"] = self.splits["dev"][: d.eval_examples]
        self.features = {s: data.encode_seq2seq(examples, self.tokenizer, d.max_source_len,
                                                d.max_target_len)
                         for s, examples in self.splits.items()}
        p, P = jax.process_index(), jax.process_count()
        smoothing = {"seq2seq": {"label_smoothing": t.label_smoothing}}
        batches = stream.task_batches(self.features["train"], batch_size=t.batch_size, seed=t.seed,
                                      shuffle=True, drop_remainder=True, process_index=p,
                                      process_count=P, num_threads=d.num_threads,
                                      prefetch=d.prefetch)
        self.streams = {"seq2seq": Stream(
            batches, losses.combined_loss(dict(config.losses), smoothing), {},
            {"examples": 1, "target_tokens": float(self.features["train"]["label_weights"].sum(1)
                                                   .mean())})}
        self.steps_per_epoch = max(len(self.splits["train"]) // t.batch_size, 1)
        self.eval_sets = {s: stream.eval_batches(self.features[s], t.batch_size, p, P)
                          for s in ("dev", "test")}
        self.generation = generation_settings(config.generate, d.max_target_len)
        log.info("seq2seq %s: %s, %d steps per epoch, batch %d", config.task.name,
                 ", ".join(f"{s} {len(e)}" for s, e in self.splits.items()),
                 self.steps_per_epoch, t.batch_size)

    def model(self, rngs):
        return Seq2Seq(self.model_config, rngs)

    def init_params(self, params: dict) -> dict:
        if self.encoder is None:
            return params
        _check_shapes(self.encoder.params, jax.eval_shape(lambda: params["bert"]),
                      self.config.init_from)
        # A checkpoint may lack what the model has (a pooler): those keep their fresh values.
        # Only the loaded leaves move to the devices; the fresh ones stay where they are.
        encoder = overlay(params["bert"], self.encoder.params)
        shardings = jax.tree.map(lambda x: x.sharding, params)
        return jax.device_put(warm_start_decoder(params, encoder), shardings)

    def write_files(self) -> None:
        write_model_files(self.workdir, self.tokenizer_files, self.model_config,
                          {"seq2seq.json": self.info})

    def evaluate(self, split, params, steps) -> Evaluation:
        evaluate = steps["seq2seq"].evaluate
        rows = []
        for b in self.eval_sets[split]:
            row = evaluate(params, parallel.global_batch(b, self.mesh))
            rows.append({k: float(v) for k, v in row.items()})
        report = {k: v for k, v in pooled(rows).items() if k not in ("seq2seq_loss", "predicted_tokens")}
        examples, g = self.splits[split], self.config.generate
        hypotheses = generate_texts((steps["seq2seq"].graphdef, params), self.tokenizer,
                                    [e["source"] for e in examples], self.generation,
                                    max_len=self.info["max_source_len"], seq2seq=True,
                                    batch_size=g.batch_size, seed=g.seed)
        report.update(metrics_lib.generation_report(
            hypotheses, [e["target"] for e in examples], self.info["chinese"],
            self.info["metrics"]))
        predictions = [{"source": e["source"], "target": e["target"], "prediction": h}
                       for e, h in zip(examples, hypotheses)]
        best = self.config.train.best_metric
        score = -report["loss"] if best == "loss" else report[best]
        # WORKDIR/predictions/<task>_test.jsonl ("wmt19_translate-zh-en" for a TFDS name)
        name = self.config.task.name.replace("/", "-")
        return Evaluation(rows=[report], score=score, predictions={name: predictions},
                          summary=report)
