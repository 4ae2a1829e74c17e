"""What the table scripts (fewshot_table.py, peft_table.py, objectives_table.py) share: each
table cell is an ordinary `run.py` workdir, run unless it is already done, so an interrupted
grid continues where it stopped; the figures are read back from its metrics.jsonl."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"sentiment": "finetune_cls.py", "ner": "finetune_ner.py"}   # built-in task -> config


def rows(workdir: str) -> list[dict]:
    """WORKDIR/metrics.jsonl's rows ([] before the run starts)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def tested(result: list[dict]) -> bool:
    return any(r["split"] == "test" for r in result)


def test_row(result: list[dict]) -> dict:
    return [r for r in result if r["split"] == "test"][-1]


def run(workdir: str, config: str, flags: list[str], done=tested) -> list[dict]:
    """`run.py --config configs/CONFIG --workdir WORKDIR FLAGS` unless done(its rows) holds
    already (default: it has a test row); a rerun of an interrupted one resumes it. -> its rows.
    Ten steps per jitted call: the updates of single steps, ~1.35x faster on CPU (a short run's
    steps that ten would overrun go one at a time)."""
    if not done(rows(workdir)):
        cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--config",
               os.path.join(ROOT, "configs", config), "--workdir", workdir,
               "--config.train.progress_bar=False", "--config.train.steps_per_execution=10",
               *flags]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return rows(workdir)
