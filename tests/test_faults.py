"""The trainer under faults: signals, non-finite losses, damaged checkpoints, a busy workdir, and
bad input that must end in one line. Each resumed or repeated run is compared with an
uninterrupted one, figure for figure."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import finetune_cls, pretrain
from nlp_jax.train.checkpoint import Checkpointer
from nlp_jax.train.trainer import NonFiniteError, Stopped, train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HF = os.path.join(ROOT, "tests", "data", "tiny_bert_pretraining")


def pretrain_config(**train):
    c = pretrain.get_config("tiny")
    c.data.max_documents, c.data.vocab_size, c.data.max_seq_len = 300, 4000, 64
    c.data.max_predictions = 10
    c.train.batch_size, c.train.eval_batches, c.train.progress_bar = 8, 2, False
    c.train.warmup_steps, c.train.log_every = 2, 1
    c.train.update(train)
    return c


def rows(workdir, split=None):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if split is None or r["split"] == split]


def without_timing(rs):
    return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in rs]


STRAIGHT = dict(num_steps=8, eval_every=8, checkpoint_every=4)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted pretraining run (checkpoints at 4 and 8) that faulted runs must match."""
    workdir = tmp_path_factory.mktemp("straight")
    train_and_evaluate(pretrain_config(**STRAIGHT), str(workdir))
    return workdir


def test_sigterm_saves_at_the_current_step_and_the_rerun_equals_an_uninterrupted_run(tmp_path,
                                                                                   straight):
    cfg = pretrain_config(**STRAIGHT)

    def preempt_at_6(step, state):
        if step == 6:
            os.kill(os.getpid(), signal.SIGTERM)   # what a preempted VM gets
    with pytest.raises(Stopped) as stopped:
        train_and_evaluate(cfg, str(tmp_path / "resumed"), hooks=[preempt_at_6])
    assert stopped.value.step == 6 and stopped.value.signum == signal.SIGTERM
    # Step 6 is saved although checkpoint_every is 4; the handler is gone after the run.
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["4", "6"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    train_and_evaluate(cfg, str(tmp_path / "resumed"))
    assert without_timing(rows(tmp_path / "resumed")) == without_timing(rows(straight))


def run_py(*args, wait=True):
    cmd = [sys.executable, "run.py", *args]
    env = {**os.environ, "XLA_FLAGS": ""}
    if wait:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_for_train_row(workdir, proc, timeout=300):
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        if os.path.exists(path) and any('"train"' in line for line in open(path)):
            return
        time.sleep(0.05)
    raise TimeoutError(path)


FINETUNE = ["--config", "configs/finetune_cls.py", f"--config.init_from={TINY_HF}",
            "--config.data.max_seq_len=24", "--config.tasks.sentiment.max_examples=40",
            "--config.train.batch_size=8", "--config.train.num_steps=300",
            "--config.train.eval_every=100", "--config.train.log_every=1",
            "--config.train.warmup_steps=2", "--config.train.progress_bar=False"]


def test_fine_tuning_stopped_by_a_real_sigterm_resumes_to_the_same_figures(tmp_path):
    straight = run_py(*FINETUNE, "--workdir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]

    workdir = str(tmp_path / "resumed")
    proc = run_py(*FINETUNE, "--workdir", workdir, wait=False)
    wait_for_train_row(workdir, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "stopped by SIGTERM at step" in last and "rerun" in last, last
    stop = int(last.split("at step ")[1].split(";")[0])
    assert str(stop) in os.listdir(os.path.join(workdir, "checkpoints"))

    again = run_py(*FINETUNE, "--workdir", workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = rows(tmp_path / "straight"), rows(workdir)
    assert [(r["step"], r["split"]) for r in b] == [(r["step"], r["split"]) for r in a]
    assert without_timing(b) == without_timing(a)    # train, dev and test rows, bit for bit
    with open(tmp_path / "straight" / "predictions" / "sentiment_test.jsonl") as f1, \
            open(os.path.join(workdir, "predictions", "sentiment_test.jsonl")) as f2:
        assert f1.read() == f2.read()


def test_a_non_finite_loss_stops_the_run_at_that_step_and_nothing_of_it_is_saved(tmp_path):
    cfg = pretrain_config(num_steps=40, eval_every=40, checkpoint_every=1, max_checkpoints=40,
                          learning_rate=1e4, warmup_steps=0)
    with pytest.raises(NonFiniteError) as error:
        train_and_evaluate(cfg, str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and "not finite" in message and "mlm_loss=" in message
    step = int(message.split()[1].rstrip(":"))
    logged = rows(tmp_path, "train")
    assert [r["step"] for r in logged] == list(range(1, step))   # every step before it, no more
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["grad_norm"]) for r in logged)
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
    assert ckpt.manager.all_steps() == list(range(1, step))
    state = ckpt.manager.restore(step - 1)["state"]
    ckpt.close()
    import jax
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def _damage_missing(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _damage_truncated(step_dir):
    data = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs
            if os.sep + "d" + os.sep in os.path.join(d, f)]
    biggest = max(data, key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(os.path.getsize(biggest) // 2)


@pytest.mark.parametrize("damage", [_damage_missing, _damage_truncated])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog,
                                                                    straight):
    cfg = pretrain_config(**STRAIGHT)
    shutil.copytree(straight, tmp_path / "damaged")
    damage(str(tmp_path / "damaged" / "checkpoints" / "8"))
    train_and_evaluate(cfg, str(tmp_path / "damaged"))   # the same command again
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "checkpoint 8" in warnings[0], warnings
    assert os.listdir(tmp_path / "damaged" / "damaged_checkpoints")[0].startswith("8-")
    # Steps 5-8 trained again from checkpoint 4: the figures of the uninterrupted run.
    assert without_timing(rows(tmp_path / "damaged")) == without_timing(rows(straight))


def test_a_live_workdir_is_refused_and_a_sigkilled_run_leaves_no_lock(tmp_path):
    args = ["--config", "configs/pretrain.py:tiny", "--workdir", str(tmp_path),
            "--config.data.max_documents=300", "--config.data.vocab_size=4000",
            "--config.data.max_seq_len=64", "--config.data.max_predictions=10",
            "--config.train.batch_size=8", "--config.train.eval_batches=2",
            "--config.train.log_every=1", "--config.train.num_steps=100000",
            "--config.train.checkpoint_every=5", "--config.train.progress_bar=False"]
    proc = run_py(*args, wait=False)
    wait_for_train_row(str(tmp_path), proc)
    second = run_py(*args)
    line = second.stderr.strip().splitlines()[-1]
    assert second.returncode != 0 and "in use by a live run" in line and str(proc.pid) in line, line
    proc.kill()   # SIGKILL: no handler runs
    proc.wait()
    assert not os.path.exists(tmp_path / ".lock") or open(tmp_path / ".lock").read() == str(proc.pid)
    # The same workdir at once: not refused; it resumes from the killed run's last checkpoint,
    # which is past num_steps=2, so it only reports the held-out figures.
    result = train_and_evaluate(pretrain_config(num_steps=2, eval_every=2), str(tmp_path))
    assert result["loss"] > 0


def _one_line(out):
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.stderr.strip().splitlines()[-1]


def test_bad_workdirs_and_inputs_are_refused_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    line = _one_line(run_py("--config", "configs/pretrain.py:tiny", "--workdir",
                            str(tmp_path / "file" / "run")))
    assert "cannot be created" in line and "Errno" not in line, line
    line = _one_line(run_py("--config", "configs/finetune_cls.py", "--mode", "predict",
                            "--workdir", str(tmp_path / "missing")))
    assert "does not exist" in line, line
    pretraining = tmp_path / "pre"
    (pretraining / "checkpoints").mkdir(parents=True)
    (pretraining / "config.json").write_text("{}")
    line = _one_line(run_py("--config", "configs/finetune_cls.py", "--mode", "predict",
                            "--workdir", str(pretraining)))
    assert "pretraining workdir" in line, line


@pytest.mark.parametrize("args, message", [
    (["--config.data.train_files=corpus/*.txt"], "data.corpus=text"),
    (["--config.data.tfds_name=wikipedia"], "data.corpus=tfds"),
    (["--config.data.max_seq_len=2"], "max_seq_len"),
    (["--config.train.steps_per_execution=0"], "steps_per_execution"),
])
def test_pretraining_keys_are_applied_or_refused_before_any_slow_work(tmp_path, args, message):
    line = _one_line(run_py("--config", "configs/pretrain.py:tiny", "--workdir", str(tmp_path),
                            *args))
    assert message in line, line
    assert not os.path.exists(tmp_path / "tokenizer")   # refused before a tokenizer was trained


def test_with_init_from_the_architecture_keys_must_agree_and_the_others_apply(tmp_path):
    c = finetune_cls.get_config()
    c.init_from, c.model.num_layers = TINY_HF, 7
    with pytest.raises(ValueError, match="num_layers=7 disagrees with init_from"):
        train_and_evaluate(c, str(tmp_path / "a"))
    c.model.num_layers, c.model.size = 0, "base"
    with pytest.raises(ValueError, match="model.size=base disagrees"):
        train_and_evaluate(c, str(tmp_path / "b"))
    c.model.size, c.model.remat, c.model.dropout_rate = "", True, 0.25
    c.data.max_seq_len, c.train.num_steps, c.train.progress_bar = 24, 1, False
    c.tasks.sentiment.max_examples = 8
    train_and_evaluate(c, str(tmp_path / "c"))
    encoder = json.load(open(tmp_path / "c" / "encoder.json"))
    assert encoder["remat"] is True and encoder["dropout_rate"] == 0.25


def test_an_empty_dev_file_is_named_with_its_split(tmp_path):
    (tmp_path / "train.tsv").write_text("好\tpositive\n差\tnegative\n")
    (tmp_path / "dev.tsv").write_text("")
    c = finetune_cls.get_config("files")
    c.tasks.files.train_file, c.tasks.files.dev_file = str(tmp_path / "train.tsv"), str(
        tmp_path / "dev.tsv")
    with pytest.raises(ValueError) as error:
        train_and_evaluate(c, str(tmp_path / "run"))
    assert "dev.tsv" in str(error.value) and "dev" in str(error.value).split("dev.tsv")[-1]


@pytest.mark.parametrize("override, message", [
    ({"tasks.sentiment.tfds_name": "glue/sst2"}, "source=tfds only"),
    ({"tasks.sentiment.train_file": "x.tsv"}, "source=files only"),
    ({"train.best_metric": "acuracy"}, "not a dev metric"),
    ({"train.steps_per_execution": 4, "tasks.ner": "ner"}, "several tasks"),
    ({"data.tokenizer_path": "spm.model", "init_from": TINY_HF}, "tokenizer is the checkpoint's"),
])
def test_fine_tuning_keys_are_applied_or_refused_before_any_slow_work(tmp_path, override,
                                                                       message):
    from configs import finetune_common
    c = finetune_cls.get_config()
    for key, value in override.items():
        if key == "tasks.ner":
            c.tasks.ner = finetune_common.task("ner")
            continue
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(c, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")   # refused before the workdir was made
