"""A golden training run (in the manner of llm.c's test_gpt2): a fixed tiny 4-bit MNIST run whose
per-step losses must match stored values and whose test accuracy must rise. Gradient checks prove
each backward right; this proves the pieces still train together: a change that breaks learning
(a wrong sign in Adam, a schedule off by one batch, a loss target swapped) fails here even while
every gradient still equals its finite differences.

The run is float64, so that the rounding differences between CPUs and BLAS kernel sets (1e-16
relative) stay far below the tolerance and never flip a spike. When a change is meant to alter
training, regenerate the stored values and say why in the commit:

    python -m tests.test_golden --write
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mininsnn.config import make_config
from mininsnn.data import load_data
from mininsnn.train import Trainer

GOLDEN = Path(__file__).with_name("golden") / "tiny_mnist_float64.json"
SETTINGS = dict(subset=512, test_subset=256, num_steps=8, batch_size=32, epochs=3, seed=0,
                dtype="float64")


def golden_run(run_dir: Path) -> dict:
    """Train the golden run into ``run_dir``; its per-step losses and per-epoch accuracies."""
    cfg = make_config("mnist-4bit", **SETTINGS)
    train, test = load_data(cfg)
    trainer = Trainer(cfg, train, test, run_dir=run_dir, log=lambda m: None)
    trainer.prepare_run_dir("golden")
    history = trainer.fit()
    rows = (run_dir / "steps.csv").read_text().splitlines()[1:]
    return {"settings": SETTINGS,
            "loss": [float(r.split(",")[3]) for r in rows],
            "test_acc": [r["test_acc"] for r in history],
            "train_acc": [r["train_acc"] for r in history]}


@pytest.mark.slow
def test_golden_run_matches_its_stored_losses_and_learns(tmp_path):
    want = json.loads(GOLDEN.read_text())
    assert want["settings"] == SETTINGS, "the stored run was made with other settings"
    got = golden_run(tmp_path)
    assert len(got["loss"]) == len(want["loss"]) == 3 * 512 // 32
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-9, atol=0)
    assert got["test_acc"] == want["test_acc"]            # counts of right answers: exact
    # and it learns: the loss falls and the test accuracy rises well above chance (10 %)
    first, last = np.mean(got["loss"][:4]), np.mean(got["loss"][-4:])
    assert last < 0.8 * first, (first, last)
    assert got["test_acc"][-1] > got["test_acc"][0] and got["test_acc"][-1] > 0.5


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.test_golden --write   (rewrites " + str(GOLDEN) + ")")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        result = golden_run(Path(d))
    GOLDEN.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {GOLDEN}: final loss {result['loss'][-1]:.6f}, test accuracy by epoch "
          f"{result['test_acc']}")
