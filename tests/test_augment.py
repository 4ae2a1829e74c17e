"""EDA text augmentation: its operations, seeded draws, and exact resume of a run that uses it."""
import json

import numpy as np
import pytest

from configs import finetune_cls
from nlp_jax.data.augment import eda
from nlp_jax.train.trainer import train_and_evaluate
from crash import Crash, crash_after

TEXT = "这个手机质量很好，物流也快。"


def test_eda_is_seeded_and_changes_the_text_with_its_own_units():
    draws = [eda(TEXT, np.random.default_rng(s), 0.2) for s in range(30)]
    assert draws == [eda(TEXT, np.random.default_rng(s), 0.2) for s in range(30)]  # same seed
    assert len(set(draws)) > 10 and draws.count(TEXT) < 5              # and differs across seeds
    for d in draws:   # deletion, swap or insertion of the text's own characters, nothing else
        assert set(d) <= set(TEXT) and 0 < len(d)
    words = [eda("the cat sat on the mat", np.random.default_rng(s), 0.3, "word") for s in range(30)]
    for w in words:   # whole words moved, dropped or repeated, joined by single spaces
        assert set(w.split(" ")) <= {"the", "cat", "sat", "on", "mat"}
    assert eda("好", np.random.default_rng(0), 0.5) == "好"    # one unit: nothing to do
    assert eda(TEXT, np.random.default_rng(0), 0.0) == TEXT


def test_a_run_with_augmentation_resumes_exactly(tmp_path):
    def config(num_steps):
        c = finetune_cls.get_config()
        c.model.size, c.data.tokenizer_model, c.data.vocab_size = "tiny", "char", 2000
        c.data.max_seq_len, c.data.augment, c.data.augment_prob = 32, "eda", 0.3
        c.tasks.sentiment.max_examples = 40
        c.train.update(batch_size=8, num_steps=num_steps, log_every=1, eval_every=3,
                       warmup_steps=1, progress_bar=False)
        return c
    train_and_evaluate(config(6), str(tmp_path / "straight"))

    with pytest.raises(Crash):
        train_and_evaluate(config(6), str(tmp_path / "resumed"), hooks=[crash_after(5)])
    train_and_evaluate(config(6), str(tmp_path / "resumed"))
    rows = lambda d: [{k: v for k, v in r.items() if not k.endswith("_per_s")}
                      for r in map(json.loads, open(tmp_path / d / "metrics.jsonl"))
                      if r["split"] == "train"]
    assert rows("resumed") == rows("straight")
    plain = config(6)
    plain.data.augment = "none"
    train_and_evaluate(plain, str(tmp_path / "plain"))
    assert [r["loss"] for r in rows("plain")] != pytest.approx([r["loss"] for r in rows("straight")])
