"""The seq2seq recipe end to end: BLEU / ROUGE rows from generated text, --mode generate on the
trained workdir, and BERT2BERT's warm start from a Hugging Face BERT."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import finetune_seq2seq
from nlp_jax import metrics, parallel
from nlp_jax.train import pretrained
from nlp_jax.train.recipes.seq2seq import Seq2SeqRecipe
from nlp_jax.train.trainer import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HF = os.path.join(ROOT, "tests", "data", "tiny_bert_pretraining")


def quick(arg, **train):
    c = finetune_seq2seq.get_config(arg)
    c.model.size = "tiny"
    c.data.max_source_len, c.data.max_target_len = 24, 12
    c.data.tokenizer_model, c.data.vocab_size = "char", 200
    c.train.batch_size, c.train.progress_bar, c.train.warmup_steps = 8, False, 1
    c.generate.method, c.generate.batch_size = "greedy", 8
    c.train.update(train)
    return c


def test_a_run_on_tfds_mock_data_reports_bleu_and_rouge_of_its_predictions(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = quick("xsum", num_steps=4, eval_every=2)
    cfg.task.metrics = ("bleu", "rouge")
    workdir = str(tmp_path / "xsum")
    with tfds.testing.mock_data(num_examples=8):
        train_and_evaluate(cfg, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        test = [r for r in map(json.loads, f) if r["split"] == "test"][-1]
    with open(os.path.join(workdir, "predictions", "xsum_test.jsonl")) as f:
        predictions = [json.loads(line) for line in f]
    assert len(predictions) == 8
    expected = metrics.generation_report([p["prediction"] for p in predictions],
                                         [p["target"] for p in predictions], chinese=False)
    for key in ("bleu", "rouge1", "rouge2", "rougeL"):
        assert test[key] == pytest.approx(expected[key])
    assert test["perplexity"] == pytest.approx(np.exp(test["loss"]))

    # --mode generate on the workdir gives, for the same sources and settings, the test split's
    # predictions (same best checkpoint, tokenizer and search).
    sources = tmp_path / "sources.txt"
    sources.write_text("".join(" ".join(p["source"].split()) + "\n" for p in predictions))
    out = subprocess.run(
        [sys.executable, "run.py", "--config", "configs/finetune_seq2seq.py:xsum", "--workdir",
         workdir, "--mode", "generate", "--input", str(sources), "--config.generate.method=greedy",
         "--config.generate.batch_size=8", "--config.data.max_target_len=12"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    texts = [json.loads(line)["text"] for line in out.stdout.splitlines()]
    assert texts == [p["prediction"] for p in predictions]


def test_bert2bert_starts_both_halves_from_a_hugging_face_bert(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("".join(f"the cat {w}\t{w} the dog\n" for w in ("sat", "ran", "ate", "saw")))
    cfg = quick("files")
    cfg.task.train_file = str(train)
    cfg.init_from, cfg.model.size = TINY_HF, ""
    cfg.data.vocab_size = 8000
    recipe = Seq2SeqRecipe(cfg, str(tmp_path / "w"), parallel.make_mesh(cfg.mesh))
    from flax import nnx
    fresh = nnx.to_pure_dict(nnx.state(recipe.model(nnx.Rngs(0))))
    params = jax.device_get(recipe.init_params(jax.device_put(fresh)))
    bert = pretrained.load_encoder(TINY_HF, cfg.model).params
    for half in ("bert", "decoder"):
        np.testing.assert_array_equal(params[half]["embeddings"]["word_embeddings"]["embedding"],
                                      bert["embeddings"]["word_embeddings"]["embedding"])
        np.testing.assert_array_equal(params[half]["layers"][1]["output"]["kernel"],
                                      bert["layers"][1]["output"]["kernel"])
    # The cross-attention is new: as initialised.
    np.testing.assert_array_equal(params["decoder"]["layers"][0]["cross_attention"]["query"]["kernel"],
                                  fresh["decoder"]["layers"][0]["cross_attention"]["query"]["kernel"])
    assert recipe.tokenizer.vocab_size == 39   # the checkpoint's WordPiece vocabulary
