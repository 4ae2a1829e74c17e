"""Linear probe: how much a pretraining workdir's frozen encoder knows about review sentiment.

    python scripts/linear_probe.py --workdir runs/pretrain

Fits a logistic regression on [pooled output; mean of the token outputs] of 3,000 training reviews
and prints the test accuracy for the pretrained encoder and for the same architecture with random
weights (same tokenizer), one JSON line. A pretrained encoder worth its name scores clearly higher.
"""
import argparse
import json

import jax
import ml_collections
import numpy as np
from flax import nnx
from sklearn.linear_model import LogisticRegression

from nlp_jax.data import encoding, sources
from nlp_jax.models.bert import BertForPreTraining
from nlp_jax.train.pretrained import load_workdir


def features(encoder, task, split, tokenizer, max_seq_len=128, batch=256):
    f = encoding.encode_task(task, split, tokenizer, max_seq_len)
    encode = jax.jit(lambda ids, tt, am: encoder(ids, tt, am))
    out = []
    for i in range(0, len(f["labels"]), batch):
        sl = slice(i, i + batch)
        o = encode(f["input_ids"][sl], f["token_type_ids"][sl], f["attention_mask"][sl])
        mask = f["attention_mask"][sl][..., None]
        mean = (np.asarray(o["sequence_output"]) * mask).sum(1) / mask.sum(1)
        out.append(np.concatenate([np.asarray(o["pooled_output"]), mean], -1))
    return np.concatenate(out), f["labels"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", default="runs/pretrain")
    p.add_argument("--train_examples", type=int, default=3000)
    a = p.parse_args()
    model, tokenizer, _ = load_workdir(a.workdir)
    random_model = BertForPreTraining(model.cfg, nnx.Rngs(0))
    task = sources.load_task(ml_collections.ConfigDict(
        dict(name="sentiment", source="builtin", max_examples=a.train_examples)))
    result = {}
    for name, m in (("pretrained", model), ("random", random_model)):
        x_train, y_train = features(m.bert, task, "train", tokenizer)
        x_test, y_test = features(m.bert, task, "test", tokenizer)
        clf = LogisticRegression(max_iter=2000).fit(x_train, y_train)
        result[f"{name}_test_accuracy"] = round(float(clf.score(x_test, y_test)), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
