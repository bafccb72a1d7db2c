"""The study example examples/mnist_loop.py (the training loop written out) trains exactly what
the Trainer trains, and the library's suite stays apart from the lab's (experiments/tests/)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mininsnn.config import make_config
from mininsnn.data import load_mnist
from mininsnn.train import Trainer

REPO = Path(__file__).resolve().parents[1]
LOOP = REPO / "examples" / "mnist_loop.py"


def test_the_study_example_stays_short():
    assert len(LOOP.read_text().splitlines()) <= 80


@pytest.mark.slow
def test_the_study_example_trains_what_the_trainer_trains():
    """On a small subset, the written-out loop and Trainer.fit (same configuration, seed and
    data) classify the same number of test images right after each epoch."""
    n_train, n_test, epochs = 256, 200, 2
    out = subprocess.run([sys.executable, str(LOOP), "--limit-train", str(n_train),
                          "--limit-test", str(n_test), "--epochs", str(epochs)],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr
    got = [int(c) for c in re.findall(rf"test accuracy (\d+)/{n_test} ", out.stdout)]
    assert len(got) == epochs, out.stdout
    cfg = make_config("mnist-4bit", subset=n_train, test_subset=n_test, epochs=epochs)
    trainer = Trainer(cfg, load_mnist("train").subset(n_train), load_mnist("test").subset(n_test),
                      log=lambda msg: None)
    history = trainer.fit()
    assert got == [round(row["test_acc"] * n_test) for row in history]


def test_the_library_suite_does_not_import_the_lab():
    """experiments/ has its own tests (experiments/tests/, a CI step of their own)."""
    importing = [p.name for p in Path(__file__).parent.glob("*.py")
                 if re.search(r"^\s*(from|import) experiments\b", p.read_text(), re.M)]
    assert importing == []
