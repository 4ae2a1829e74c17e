"""The few-shot protocol (tasks.<name>.shots_per_class, subset_seed): k training and k dev examples
per class, drawn from the training split by the subset seed alone."""
import collections
import json

import pytest

from configs import finetune_cls, finetune_ner
from nlp_jax.data import bio, sources


def few_shot(k, seed, **fields):
    cfg = finetune_cls.get_config().tasks.sentiment
    cfg.update(dict(shots_per_class=k, subset_seed=seed, **fields))
    return sources.load_task(cfg)


def key(e):
    return json.dumps(e, sort_keys=True, ensure_ascii=False)


@pytest.fixture(scope="module")
def full():
    return sources.load_task(finetune_cls.get_config().tasks.sentiment)


@pytest.mark.parametrize("k", [8, 16])
def test_k_per_class_for_train_and_an_equal_disjoint_dev_from_train(full, k):
    task = few_shot(k, 3)
    for split in ("train", "dev"):
        counts = collections.Counter(e["label"] for e in task.splits[split])
        assert counts == {0: k, 1: k}, split
    train, dev = {key(e) for e in task.splits["train"]}, {key(e) for e in task.splits["dev"]}
    assert len(train) == len(dev) == 2 * k and not train & dev
    # Both come from the training split; the test split is the full one.
    assert train | dev <= {key(e) for e in full.splits["train"]}
    assert task.splits["test"] == full.splits["test"]


def test_same_seed_same_subsets_other_seeds_other_subsets():
    a, b = few_shot(8, 0), few_shot(8, 0)
    assert a.splits["train"] == b.splits["train"] and a.splits["dev"] == b.splits["dev"]
    subsets = [frozenset(map(key, few_shot(8, seed).splits["train"])) for seed in range(5)]
    assert len(set(subsets)) == 5
    # The draw depends on subset_seed only, not on the split seed's role or the training seed.
    assert few_shot(8, 1).splits["dev"] != few_shot(8, 2).splits["dev"]


def test_few_shot_is_refused_where_it_cannot_hold():
    with pytest.raises(ValueError, match="both pick the training subset"):
        few_shot(8, 0, train_examples=100)
    with pytest.raises(ValueError, match=r"fewer than the 2 x 30 that shots_per_class=30"):
        few_shot(30, 0, max_examples=50)
    ner = sources.TaskData("ner", sources.TOKEN_CLASSIFICATION, sources.NER_LABELS,
                           {"train": [{"chars": ["京"], "tags": [1]}] * 20})
    with pytest.raises(ValueError, match="too few ORG mentions"):
        sources.few_shot(ner, 8, 0)
    squad = sources.TaskData("squad", sources.QUESTION_ANSWERING, (), {"train": [{}] * 20})
    with pytest.raises(ValueError, match="use train_examples"):
        sources.few_shot(squad, 8, 0)


def mentions(examples):
    counts = collections.Counter()
    for e in examples:
        tags = [sources.NER_LABELS[t] for t in e["tags"]]
        counts.update(t for t, _, _ in bio.bio_entities(tags))
    return counts


def test_ner_shots_are_sentences_holding_k_mentions_of_each_type():
    cfg = finetune_ner.get_config().tasks.ner
    full = sources.load_task(cfg)
    cfg.update(dict(shots_per_class=8, subset_seed=1))
    task = sources.load_task(cfg)
    train, dev = ({key(e) for e in task.splits[s]} for s in ("train", "dev"))
    assert not train & dev and train | dev <= {key(e) for e in full.splits["train"]}
    for split in ("train", "dev"):
        examples = task.splits[split]
        counts = mentions(examples)
        assert set(counts) == {"LOC", "ORG", "PER"} and min(counts.values()) >= 8, (split, counts)
        # Greedy: every sentence holds an entity, and each type adds at most 8 sentences.
        assert all(mentions([e]) for e in examples) and len(examples) <= 3 * 8
    cfg.update(dict(subset_seed=2))
    assert sources.load_task(cfg).splits["train"] != task.splits["train"]
    cfg.update(dict(subset_seed=1))
    assert sources.load_task(cfg).splits == task.splits
