"""Two processes (one CPU device each, gloo collectives) train exactly like one process with two
devices and the same global batch: the multi-host path of run.py, tested on one machine, with a
preemption (SIGTERM to one process) in the middle."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
    "--config", "configs/pretrain.py:tiny", "--config.data.max_documents=300",
    "--config.data.vocab_size=4000", "--config.data.max_seq_len=64", "--config.data.max_predictions=10",
    "--config.train.batch_size=8", "--config.train.eval_batches=2", "--config.train.num_steps=60",
    "--config.train.log_every=1", "--config.train.eval_every=30", "--config.train.checkpoint_every=30",
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


def _start_two(workdir, *args, stdout=subprocess.PIPE):
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, "run.py", *args, "--workdir", workdir,
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=_env(1), stdout=stdout, stderr=subprocess.PIPE, text=True)
        for i in range(2)]


def _two_processes(workdir, *args):
    procs = _start_two(workdir, *args)
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return outs[0][1]


def _assert_same_rows(one, two, keys=("loss", "mlm_loss", "nsp_loss", "masked_lm_accuracy")):
    assert [(r["step"], r["split"]) for r in two] == [(r["step"], r["split"]) for r in one]
    for a, b in zip(one, two):
        for key in keys:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


def test_two_processes_match_one_process_through_a_preemption(tmp_path):
    single = subprocess.run([sys.executable, "run.py", *ARGS, "--workdir", str(tmp_path / "one")],
                            cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    one = _rows(tmp_path / "one")

    # SIGTERM to process 1 alone: JAX's preemption service takes it, and Orbax's sync point
    # makes both processes save the same step and stop.
    workdir = tmp_path / "two"
    procs = _start_two(str(workdir), *ARGS, stdout=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (os.path.exists(workdir / "metrics.jsonl")
               and '"train"' in open(workdir / "metrics.jsonl").read()):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    stops = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
        stops.append(err.strip().splitlines()[-1].split("at step ")[1].split(";")[0])
    assert stops[0] == stops[1] and stops[0] in os.listdir(workdir / "checkpoints")
    # The same command again: both continue to exactly the single process's figures.
    log = _two_processes(str(workdir), *ARGS)
    assert "on 2 process(es)" in log and "1 step(s) per call" in log
    _assert_same_rows(one, _rows(workdir))

    # Logging every 2 steps lets the trainer run 2 steps per call (stacked batches, each
    # process feeding its rows of both): the same losses at every second step.
    log = _two_processes(str(tmp_path / "two-scan"), *ARGS, "--config.train.log_every=2")
    assert "2 step(s) per call" in log
    _assert_same_rows([r for r in one if r["split"] != "train" or r["step"] % 2 == 0],
                      _rows(tmp_path / "two-scan"))


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
    _two_processes(str(tmp_path / "two"), *args)
    _assert_same_rows(_rows(tmp_path / "one"), _rows(tmp_path / "two"),
                      ("loss", "token_accuracy", "entity_f1", "entity_precision"))
    with open(tmp_path / "one" / "predictions" / "ner_test.jsonl") as f1, \
            open(tmp_path / "two" / "predictions" / "ner_test.jsonl") as f2:
        assert f1.read() == f2.read()
