"""The linear-chain CRF against brute force over every tag sequence, and a CRF NER head end to end."""
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import finetune_ner
from nlp_jax.losses import crf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK = np.array([[0, 1, 1, 0, 1, 0],     # holes inside and [CLS]-like ends, as NER rows have
                 [1, 1, 1, 1, 0, 0],
                 [0, 0, 0, 0, 0, 0]], bool)   # no real position at all
L = 3


def setup(seed=0):
    rng = np.random.default_rng(seed)
    emissions = rng.normal(size=(3, 6, L)).astype(np.float32)
    params = {k: rng.normal(size=s).astype(np.float32)
              for k, s in (("transitions", (L, L)), ("start", (L,)), ("end", (L,)))}
    return emissions, params


def brute_score(emissions, tags, params):
    """Score of a tag sequence over the real positions only, by the formula."""
    s = params["start"][tags[0]] + params["end"][tags[-1]]
    s += sum(emissions[t, y] for t, y in zip(range(len(tags)), tags))
    s += sum(params["transitions"][a, b] for a, b in zip(tags[:-1], tags[1:]))
    return s


def all_paths(emissions, mask, params):
    real = emissions[mask]
    return {tags: brute_score(real, tags, params)
            for tags in itertools.product(range(L), repeat=int(mask.sum()))}


def test_log_likelihood_and_partition_equal_brute_force():
    emissions, params = setup()
    tags = np.random.default_rng(1).integers(0, L, size=(3, 6))
    ll = np.asarray(crf.log_likelihood(jnp.asarray(emissions), jnp.asarray(tags),
                                       jnp.asarray(MASK), params))
    for b in range(2):
        paths = all_paths(emissions[b], MASK[b], params)
        log_z = np.log(np.sum(np.exp(list(paths.values()))))
        gold = paths[tuple(tags[b][MASK[b]])]
        assert ll[b] == pytest.approx(gold - log_z, rel=1e-5)
    assert ll[2] == 0.0    # an empty row contributes nothing
    # Probabilities over all paths sum to one.
    paths = all_paths(emissions[0], MASK[0], params)
    total = sum(np.exp(float(crf.log_likelihood(
        jnp.asarray(emissions[:1]), jnp.asarray(np.array([_place(t, MASK[0])])),
        jnp.asarray(MASK[:1]), params)[0])) for t in paths)
    assert total == pytest.approx(1.0, rel=1e-5)


def _place(real_tags, mask):
    out = np.zeros(len(mask), int)
    out[mask] = real_tags
    return out


def test_viterbi_is_the_brute_force_argmax():
    for seed in range(3):
        emissions, params = setup(seed)
        path = np.asarray(crf.viterbi(jnp.asarray(emissions), jnp.asarray(MASK), params))
        for b in range(2):
            paths = all_paths(emissions[b], MASK[b], params)
            assert tuple(path[b][MASK[b]]) == max(paths, key=paths.get)


def test_without_transitions_viterbi_is_the_per_token_argmax():
    emissions, params = setup()
    zero = jax.tree.map(np.zeros_like, params)
    path = np.asarray(crf.viterbi(jnp.asarray(emissions), jnp.asarray(MASK), zero))
    np.testing.assert_array_equal(path[MASK], emissions.argmax(-1)[MASK])


def test_a_crf_ner_head_trains_scores_and_predicts(tmp_path):
    from nlp_jax.predict import predict_lines
    from nlp_jax.train.trainer import train_and_evaluate
    c = finetune_ner.get_config()
    c.init_from = os.path.join(ROOT, "tests", "data", "tiny_bert_pretraining")
    c.tasks.ner.crf, c.tasks.ner.max_examples = True, 40
    c.data.max_seq_len, c.train.batch_size, c.train.num_steps = 24, 8, 4
    c.train.log_every, c.train.eval_every, c.train.progress_bar = 1, 2, False
    result = train_and_evaluate(c, str(tmp_path))
    assert {"entity_f1", "entity_precision", "entity_recall"} <= set(result["ner"])
    with open(tmp_path / "metrics.jsonl") as f:
        train = [r for r in map(json.loads, f) if r["split"] == "train"]
    assert all(r["loss"] == r["crf_loss"] > 0 for r in train)
    assert json.load(open(tmp_path / "tasks.json"))["ner"]["crf"] is True
    out = list(predict_lines(str(tmp_path), ["江泽民在北京会见了记者。"]))
    assert len(out) == 1 and set(out[0]) == {"entities"}
