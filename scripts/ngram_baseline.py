"""Held-out perplexity of Kneser-Ney n-gram models, the baseline beside the language model's.

  python scripts/ngram_baseline.py --config configs/pretrain_lm.py --workdir WORKDIR [--orders 2,3,4]

Builds the LM data exactly as the run does (same corpus, held-out split and, from WORKDIR/tokenizer,
the same tokenizer; without a trained workdir one is trained as the run would) and prints one JSON
line per order: the perplexity per token of that tokenizer on every held-out prediction
(`nlp_jax.data.lm.ngram_perplexity`, interpolated Kneser-Ney), the number to compare with the
language model's held-out perplexity over `LMData.eval_batches(0)`. With
--config.data.tokenizer_model=char it is a character n-gram model.
"""

from __future__ import annotations

import json
import math
import time

from absl import app, flags
from ml_collections import config_flags

from nlp_jax.data import lm

_CONFIG = config_flags.DEFINE_config_file("config", None, "an LM config file (get_config)")
_WORKDIR = flags.DEFINE_string("workdir", None, "the LM run's workdir (for its tokenizer)")
_ORDERS = flags.DEFINE_string("orders", "2,3,4", "comma-separated n-gram orders")


def main(argv):
    del argv
    config = _CONFIG.value
    data = lm.build_lm_data(config.data, workdir=_WORKDIR.value, batch_size=1, seed=0,
                            num_eval_batches=1)
    train, heldout = data.train.documents(), data.heldout.documents()
    V = data.tokenizer.vocab_size
    for n in (int(x) for x in _ORDERS.value.split(",") if x.strip()):
        if n * math.log2(V) >= 63:
            print(json.dumps({"n": n, "skipped": f"vocabulary {V} too large for 64-bit {n}-gram keys"}))
            continue
        start = time.perf_counter()
        result = lm.ngram_perplexity(train, heldout, n=n, vocab_size=V)
        print(json.dumps({"n": n, "smoothing": "interpolated Kneser-Ney", "vocab_size": V,
                          "train_tokens": len(data.train), **result,
                          "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
