"""Fine-tuning end to end: from our pretraining, from a Hugging Face directory, strategies,
multi-task, predict, and bad input."""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from configs import finetune_cls, finetune_common, finetune_ner, pretrain
from nlp_jax.predict import predict_lines
from nlp_jax.train.trainer import train_and_evaluate
from crash import Crash, crash_after

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HF = os.path.join(ROOT, "tests", "data", "tiny_bert_pretraining")


def rows(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny pretraining workdir (a few steps: enough to be a real checkpoint to start from)."""
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    c = pretrain.get_config("tiny")
    c.data.max_documents, c.data.vocab_size, c.data.max_seq_len = 300, 4000, 64
    c.data.max_predictions, c.train.batch_size, c.train.num_steps = 10, 8, 3
    c.train.progress_bar, c.train.eval_batches = False, 1
    train_and_evaluate(c, workdir)
    return workdir


def quick(config, **train):
    config.data.max_seq_len = 48
    config.train.batch_size, config.train.epochs, config.train.warmup_steps = 8, 1, 2
    config.train.progress_bar = False
    config.train.update(train)
    for t in config.tasks.values():
        t.max_examples = 40
    return config


def test_sentiment_from_our_pretraining_keeps_the_encoder_and_writes_everything(pretrained, tmp_path):
    from nlp_jax.train.pretrained import load_workdir
    c = quick(finetune_cls.get_config(), num_steps=4, eval_every=2, learning_rate=0.0)
    c.init_from = pretrained
    result = train_and_evaluate(c, str(tmp_path))
    # learning_rate 0: the encoder is exactly the pretrained one.
    pre = encoder_params(load_workdir(pretrained)[0])
    np.testing.assert_array_equal(saved_params(tmp_path, 4)["bert"]["pooler"]["kernel"],
                                  pre["pooler"]["kernel"])
    assert [r["step"] for r in rows(tmp_path, "dev")] == [2, 4]
    (test,) = rows(tmp_path, "test")
    assert {"accuracy", "f1_macro", "precision_macro", "recall_macro"} <= set(test)
    assert test["accuracy"] == pytest.approx(result["sentiment"]["accuracy"])
    with open(tmp_path / "predictions" / "sentiment_test.jsonl") as f:
        preds = [json.loads(line) for line in f]
    assert len(preds) == 40 and {p["label"] for p in preds} <= {"negative", "positive"}
    assert np.mean([p["label"] == p["gold"] for p in preds]) == pytest.approx(test["accuracy"])


def test_ner_from_a_hugging_face_directory_and_predict(tmp_path):
    c = quick(finetune_ner.get_config(), num_steps=3)
    c.init_from, c.data.max_seq_len = TINY_HF, 24   # the tiny checkpoint has 24 positions
    result = train_and_evaluate(c, str(tmp_path))
    assert {"entity_precision", "entity_recall", "entity_f1"} <= set(result["ner"])
    assert os.path.exists(tmp_path / "tokenizer" / "vocab.txt")
    out = list(predict_lines(str(tmp_path), ["江泽民在北京会见了新华社记者。", "今天天气很好。"]))
    assert len(out) == 2 and all(set(o) == {"entities"} for o in out)
    for o, text in zip(out, ["江泽民在北京会见了新华社记者。", "今天天气很好。"]):
        for e in o["entities"]:
            assert text[e["start"]:e["end"]] == e["text"] and e["type"] in ("PER", "LOC", "ORG")


def saved_params(workdir, step):
    from nlp_jax.train.checkpoint import Checkpointer
    ckpt = Checkpointer(str(workdir / "checkpoints"))
    params = ckpt.manager.restore(step)["state"]["params"]
    ckpt.close()
    return params


def encoder_params(model):
    from flax import nnx
    return jax.device_get(nnx.to_pure_dict(nnx.state(model.bert)))


def test_frozen_encoder_trains_only_the_head(pretrained, tmp_path):
    from nlp_jax.train.pretrained import load_workdir
    c = quick(finetune_cls.get_config(), num_steps=2, freeze="encoder", learning_rate=1e-2,
              warmup_steps=0)
    c.init_from = pretrained
    train_and_evaluate(c, str(tmp_path / "frozen"))
    c.train.freeze = "none"
    train_and_evaluate(c, str(tmp_path / "full"))
    frozen, full = saved_params(tmp_path / "frozen", 2), saved_params(tmp_path / "full", 2)
    pre = encoder_params(load_workdir(pretrained)[0])
    # Weight decay would move a frozen kernel too: it must not.
    np.testing.assert_array_equal(frozen["bert"]["pooler"]["kernel"], pre["pooler"]["kernel"])
    assert not np.allclose(full["bert"]["pooler"]["kernel"], pre["pooler"]["kernel"])


def test_multi_task_trains_both_heads(pretrained, tmp_path):
    c = quick(finetune_cls.get_config(), num_steps=6, log_every=1)
    c.tasks.ner = finetune_common.task("ner")
    c.tasks.ner.max_examples = 40
    c.tasks.ner.weight = 1.0
    c.init_from = pretrained
    c.data.pack = True    # both kinds of packed rows through the whole loop (see test_model.py)
    result = train_and_evaluate(c, str(tmp_path))
    assert set(result) == {"sentiment", "ner"}
    trained = {r["task"] for r in rows(tmp_path, "train")}
    assert trained == {"sentiment", "ner"}
    assert {r["task"] for r in rows(tmp_path, "test")} == {"sentiment", "ner"}


def test_a_task_trains_on_its_own_losses(pretrained, tmp_path, monkeypatch):
    (tmp_path / "my_task_losses.py").write_text(textwrap.dedent("""
        import jax.numpy as jnp
        from nlp_jax.losses import register

        @register("logit_l2")
        def logit_l2(outputs, batch):
            return jnp.mean(outputs["logits"] ** 2), {}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    c = quick(finetune_cls.get_config(), num_steps=3, log_every=1)
    c.init_from, c.loss_modules = pretrained, ("my_task_losses",)
    c.tasks.sentiment.losses = {"classification": 1.0, "logit_l2": 0.5}
    train_and_evaluate(c, str(tmp_path / "run"))
    train = rows(tmp_path / "run", "train")
    assert len(train) == 3
    for r in train:
        assert r["loss"] == pytest.approx(r["classification_loss"] + 0.5 * r["logit_l2_loss"],
                                          rel=1e-5)
        assert r["logit_l2_loss"] > 0


def run_py(*args, stdin=None):
    cmd = [sys.executable, "run.py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, input=stdin,
                          env={**os.environ, "XLA_FLAGS": ""})


def test_run_py_predict_reads_stdin_and_refuses_empty_lines(pretrained, tmp_path):
    c = ["--config", "configs/finetune_cls.py", "--workdir", str(tmp_path),
         f"--config.init_from={pretrained}", "--config.train.num_steps=2",
         "--config.tasks.sentiment.max_examples=24", "--config.data.max_seq_len=48",
         "--config.train.batch_size=8"]
    out = run_py(*c)
    assert out.returncode == 0, out.stderr[-3000:]
    pred = run_py(*c, "--mode", "predict", stdin="很好用\n太差了\n")
    assert pred.returncode == 0, pred.stderr[-3000:]
    lines = [json.loads(line) for line in pred.stdout.splitlines()]
    assert len(lines) == 2 and all(set(r) == {"label", "score"} for r in lines)
    assert all(0.5 <= r["score"] <= 1.0 for r in lines)
    bad = run_py(*c, "--mode", "predict", stdin="很好用\n\n太差了\n")
    assert bad.returncode != 0 and "line 2" in bad.stderr.strip().splitlines()[-1]


def test_init_from_something_else_is_refused_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    out = run_py("--config", "configs/finetune_cls.py", "--workdir", str(tmp_path / "run"),
                 f"--config.init_from={tmp_path}")
    assert out.returncode != 0
    assert "neither" in out.stderr.strip().splitlines()[-1]


def test_layerwise_lr_decay_and_frozen_layers_scale_updates():
    """One AdamW step from equal gradients: update sizes follow decay ** (depth from the top)."""
    from flax import nnx
    from nlp_jax.models.bert import BertConfig
    from nlp_jax.models.heads import BertForTasks
    from nlp_jax.train import optim
    model = BertForTasks(BertConfig.from_preset("tiny", vocab_size=50), {"s": ("classification", 2)},
                         nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model))
    cfg = finetune_common.get_config().train
    cfg.update(dict(learning_rate=1e-3, warmup_steps=0, num_steps=10, decay="constant",
                    weight_decay=0.0, freeze_layers=1, layerwise_lr_decay=0.5))
    tx = optim.make_optimizer(cfg, num_layers=2)
    grads = jax.tree.map(np.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    size = lambda *path: float(np.abs(np.asarray(
        __import__("functools").reduce(lambda d, k: d[k], path, updates))).max())
    assert size("bert", "embeddings", "word_embeddings", "embedding") == 0.0   # frozen
    assert size("bert", "layers", 0, "qkv", "kernel") == 0.0                   # frozen (bottom 1)
    top = size("heads", "s", "dense", "kernel")
    assert top == pytest.approx(1e-3, rel=1e-3)                              # Adam: lr * sign
    assert size("bert", "layers", 1, "qkv", "kernel") == pytest.approx(0.5 * top, rel=1e-3)
    assert size("bert", "pooler", "kernel") == pytest.approx(top, rel=1e-3)


def test_a_checkpoint_that_does_not_fit_is_refused_and_nothing_is_written(tmp_path):
    """A Hugging Face directory whose tensors disagree with its config.json: one line, empty workdir."""
    import shutil
    bad = tmp_path / "bad_bert"
    shutil.copytree(TINY_HF, bad)
    cfg = json.load(open(bad / "config.json"))
    cfg["intermediate_size"] += 1
    json.dump(cfg, open(bad / "config.json", "w"))
    out = run_py("--config", "configs/finetune_cls.py", "--workdir", str(tmp_path / "run"),
                 f"--config.init_from={bad}", "--config.data.max_seq_len=24",
                 "--config.tasks.sentiment.max_examples=8")
    assert out.returncode != 0
    line = out.stderr.strip().splitlines()[-1]
    assert "intermediate" in line and "shape" in line, line
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_glue_config_runs_on_tfds_mock_data(tmp_path):
    """The GLUE command end to end, offline: TFDS's mock data stands in for the download."""
    import tensorflow_datasets as tfds
    from configs import finetune_glue
    c = quick(finetune_glue.get_config("mrpc"), num_steps=2)   # sentence pairs
    c.init_from, c.data.max_seq_len = TINY_HF, 24
    with tfds.testing.mock_data(num_examples=24):
        result = train_and_evaluate(c, str(tmp_path))
    assert {"accuracy", "f1_macro", "f1/equivalent", "f1/not_equivalent"} <= set(result["mrpc"])
    with open(tmp_path / "predictions" / "mrpc_test.jsonl") as f:
        assert len(f.readlines()) == 24   # GLUE's validation split serves as the test split


def test_fine_tuning_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    """Crashed two steps after the step-4 checkpoint, then the same call again: identical train
    losses, dev figures, best checkpoint and test figures."""
    c = quick(finetune_cls.get_config(), num_steps=8, eval_every=4, log_every=1)
    c.init_from, c.data.max_seq_len = TINY_HF, 24
    straight = train_and_evaluate(c, str(tmp_path / "straight"))

    with pytest.raises(Crash):
        train_and_evaluate(c, str(tmp_path / "resumed"), hooks=[crash_after(6)])
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["4"]
    resumed = train_and_evaluate(c, str(tmp_path / "resumed"))
    assert resumed == straight
    timing = lambda rs: [{k: v for k, v in r.items() if k != "examples_per_s"} for r in rs]
    for split in ("train", "dev", "test"):
        assert timing(rows(tmp_path / "resumed", split)) == timing(rows(tmp_path / "straight", split))


def test_fine_tuning_steps_per_execution_and_grad_accumulation(tmp_path):
    """K steps per call with micro-batches give the updates of single steps on whole batches
    (without dropout: micro-batches draw their own dropout keys)."""
    results = {}
    for name, train in {"single": {}, "scan_accum": {"steps_per_execution": 4,
                                                     "grad_accum_steps": 2}}.items():
        c = quick(finetune_cls.get_config(), num_steps=4, eval_every=4, log_every=4, **train)
        c.init_from, c.data.max_seq_len, c.model.dropout_rate = TINY_HF, 24, 0.0
        train_and_evaluate(c, str(tmp_path / name))
        results[name] = rows(tmp_path / name, "train")[-1]
    for key in ("loss", "grad_norm", "learning_rate"):
        assert results["scan_accum"][key] == pytest.approx(results["single"][key], rel=1e-4), key


@pytest.mark.parametrize("task", ["mnli", "stsb"])
def test_glue_completeness_on_tfds_mock_data(tmp_path, task):
    """MNLI scored on both validation splits; STS-B as a regression, its rows against scipy's
    correlations of its own predictions file (CoLA's Matthews correlation: tests/test_metrics.py)."""
    import tensorflow_datasets as tfds
    from scipy import stats
    from configs import finetune_glue
    c = quick(finetune_glue.get_config(task), num_steps=2)
    c.init_from, c.data.max_seq_len = TINY_HF, 24
    with tfds.testing.mock_data(num_examples=24):
        train_and_evaluate(c, str(tmp_path))
    tests = {r.get("split"): r for r in map(json.loads, open(tmp_path / "metrics.jsonl"))
             if r["split"].startswith("test")}
    preds = [json.loads(line) for line in open(tmp_path / "predictions" / f"{task}_test.jsonl")]
    if task == "mnli":
        assert set(tests) == {"test", "test_mismatched"}
        assert os.path.exists(tmp_path / "predictions" / "mnli_mismatched_test.jsonl")
    else:
        gold, pred = [p["gold"] for p in preds], [p["score"] for p in preds]
        assert tests["test"]["pearson"] == pytest.approx(stats.pearsonr(gold, pred)[0], abs=1e-6)
        assert tests["test"]["spearman"] == pytest.approx(stats.spearmanr(gold, pred)[0], abs=1e-6)
        assert json.load(open(tmp_path / "tasks.json"))["stsb"]["kind"] == "regression"
