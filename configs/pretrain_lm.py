r"""Causal language-model pretraining (decoder-only, GPT-style) on a corpus.

    python run.py --config configs/pretrain_lm.py --workdir runs/lm            # CPU-sized, built-in corpus
    python run.py --config configs/pretrain_lm.py:base --workdir runs/lm-base  # GPT-2 small's shape, same code
    python run.py --config configs/pretrain_lm.py --workdir runs/lm --mode generate --input prompts.txt

The argument after the colon picks a model size (tiny, mini, small, medium, base, large; see
nlp_jax/models/bert.py); with none, a CPU-sized run (mini) that finishes in minutes. The layers are
BERT's under a causal mask, with rotary positions and the output tied to the word embeddings
(nlp_jax/models/decoder.py). Any field can be overridden with --config.<path>=<value>.
"""
import ml_collections

from configs import pretrain


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = pretrain.get_config(arg)            # the same model, corpus, train and mesh keys
    cpu_run = arg in (None, "", "default", "tiny", "mini")
    c.recipe = "lm"                         # nlp_jax/train/recipes/lm.py
    c.model.position_embedding = "rotary"   # RoPE: no position table, so any row length works
    for key in ("electra", "generator_hidden_size", "generator_layers", "generator_temperature",
                "disallow_correct"):
        del c.model[key]                    # ELECTRA's keys: a language model has no generator

    d = c.data
    for key in ("max_predictions", "mask_prob", "masking", "span_length_p", "max_span_length",
                "sentence_task", "short_seq_prob", "pack"):
        del d[key]                          # masked-LM keys: a language model reads every token
    d.max_seq_len = 128 if cpu_run else 1024  # tokens per row; documents are packed into rows,
                                            # each attending only to itself (the causal mask stops
                                            # at its end)

    c.train.eval_batches = 0                # held-out batches per evaluation (0: the whole held-out
                                            # split, the tokens the 4-gram baseline is scored on)
    c.losses = {"clm": 1.0}                 # next-token cross-entropy (nlp_jax/losses/generation.py)

    c.generate = ml_collections.ConfigDict()  # --mode generate (nlp_jax/models/decoding.py)
    c.generate.method = "sample"            # greedy | beam | sample
    c.generate.max_new_tokens = 64          # tokens generated after each prompt
    c.generate.num_beams = 4                # beam: hypotheses kept
    c.generate.length_penalty = 0.6         # beam: score / ((5 + length) / 6) ** length_penalty (GNMT)
    c.generate.temperature = 1.0            # sample: logits / temperature
    c.generate.top_k = 0                    # sample: only the k most likely tokens (0: all)
    c.generate.top_p = 0.9                  # sample: the smallest set holding this probability (1: all)
    c.generate.seed = 0                     # sample: the draw, reproducible per seed
    c.generate.batch_size = 16              # prompts decoded together
    return c
