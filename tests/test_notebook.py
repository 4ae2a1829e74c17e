"""notebooks/quickstart.ipynb runs top to bottom (tiny settings), so it cannot rot."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_runs(tmp_path):
    with open(os.path.join(ROOT, "notebooks", "quickstart.ipynb")) as f:
        cells = [("".join(c["source"])) for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    script = tmp_path / "quickstart.py"
    # Each cell as it would run in a kernel: the value of a cell's last line is shown there, unused here.
    script.write_text("\n\n".join(cells))
    env = {**os.environ, "NLP_JAX_QUICK": "1", "NLP_JAX_RUNS": str(tmp_path / "runs"),
           "MPLBACKEND": "Agg", "XLA_FLAGS": ""}
    out = subprocess.run([sys.executable, str(script)], cwd=os.path.join(ROOT, "notebooks"), env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    predicted = [line for line in out.stdout.splitlines()
                 if line.startswith(("{'label': 'positive'", "{'label': 'negative'"))]
    assert len(predicted) == 3, out.stdout[-2000:]
    assert os.path.exists(tmp_path / "runs" / "sentiment" / "predictions" / "sentiment_test.jsonl")
