"""Two processes (one CPU device each, gloo collectives) train exactly like one process with two
devices and the same global batch: the multi-host path of run.py, tested on one machine."""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
    "--config", "configs/pretrain.py:tiny", "--config.data.max_documents=300",
    "--config.data.vocab_size=4000", "--config.data.max_seq_len=64", "--config.data.max_predictions=10",
    "--config.train.batch_size=8", "--config.train.eval_batches=2", "--config.train.num_steps=4",
    "--config.train.log_every=1", "--config.train.eval_every=4", "--config.train.checkpoint_every=2",
    "--config.train.progress_bar=False",
]


def _env(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_PLATFORMS": "cpu"}


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir, *args):
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "run.py", *ARGS, *args, "--workdir", workdir,
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs[0][1]


def _assert_same_rows(one, two):
    assert [(r["step"], r["split"]) for r in two] == [(r["step"], r["split"]) for r in one]
    for a, b in zip(one, two):
        for key in ("loss", "mlm_loss", "nsp_loss", "masked_lm_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    single = subprocess.run([sys.executable, "run.py", *ARGS, "--workdir", str(tmp_path / "one")],
                            cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    workdir = str(tmp_path / "two")
    log = _two_processes(workdir)
    assert "on 2 process(es)" in log and "1 step(s) per call" in log
    one = _rows(tmp_path / "one")
    _assert_same_rows(one, _rows(workdir))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]

    # Logging every 2 steps lets the trainer run 2 steps per call (stacked batches, each
    # process feeding its rows of both): the same losses at steps 2 and 4.
    log = _two_processes(str(tmp_path / "two-scan"), "--config.train.log_every=2")
    assert "2 step(s) per call" in log
    _assert_same_rows([r for r in one if r["step"] % 2 == 0], _rows(tmp_path / "two-scan"))


def test_two_processes_fine_tune_like_one_process(tmp_path):
    tiny_hf = os.path.join(ROOT, "tests", "data", "tiny_bert_pretraining")
    args = ["--config", "configs/finetune_ner.py", f"--config.init_from={tiny_hf}",
            "--config.data.max_seq_len=24", "--config.tasks.ner.max_examples=40",
            "--config.train.batch_size=8", "--config.train.num_steps=6",
            "--config.train.eval_every=3", "--config.train.log_every=1",
            "--config.train.progress_bar=False"]
    single = subprocess.run([sys.executable, "run.py", *args, "--workdir", str(tmp_path / "one")],
                            cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "run.py", *args, "--workdir", str(tmp_path / "two"),
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [(r["step"], r["split"]) for r in two] == [(r["step"], r["split"]) for r in one]
    for a, b in zip(one, two):
        for key in ("loss", "token_accuracy", "entity_f1", "entity_precision"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    with open(tmp_path / "one" / "predictions" / "ner_test.jsonl") as f1, \
            open(tmp_path / "two" / "predictions" / "ner_test.jsonl") as f2:
        assert f1.read() == f2.read()
