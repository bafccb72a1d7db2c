#!/usr/bin/env python
"""Build mininsnn/pretrained/{mnist,fmnist}-4bit.npz from training checkpoints.

    python benchmarks/make_pretrained.py --fmnist-dir ../shared/data/fashion-mnist

The source runs are the best seeds of RESULTS.md's recipe, whose records are in experiments/runs/.
Checkpoints are no longer tracked, so the script takes each best.h5 from the git history
(commit SOURCE_COMMIT, where they were still tracked under results/), or from --checkpoint-dir
(a folder holding <run>/best.h5).

For each run: write the file, read it back and check that the rebuilt float network quantizes to
exactly the checkpoint's scales and codes and gives the checkpoint's output spikes bit for bit,
then measure the test accuracy of the float engine and of the integer engine (default
representation) from the file itself and store both in its provenance.
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import datetime  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mininsnn import pretrained  # noqa: E402
from mininsnn.checkpoint import load_checkpoint  # noqa: E402
from mininsnn.deploy import numba_engine  # noqa: E402
from mininsnn.quant import quantize_forward  # noqa: E402
from mininsnn.config import validate_config  # noqa: E402
from mininsnn.data import load_data  # noqa: E402
from mininsnn.train import build_net, evaluate  # noqa: E402

RUNS = {"mnist-4bit": "mnist-4bit-cosine20-inc0-scalegrad-seed2",     # name -> run
        "fmnist-4bit": "fmnist-4bit-cosine20-inc0-scalegrad-seed2"}
SOURCE_COMMIT = "095aa4a"      # the last commit that tracked the checkpoints (results/<run>/)


def source_checkpoint(run: str, checkpoint_dir, tmp: Path) -> Path:
    """<checkpoint_dir>/<run>/best.h5, or that file from the git history written to ``tmp``."""
    import subprocess
    if checkpoint_dir is not None:
        return Path(checkpoint_dir) / run / "best.h5"
    out = tmp / f"{run}.h5"
    blob = subprocess.run(["git", "-C", str(REPO), "show", f"{SOURCE_COMMIT}:results/{run}/best.h5"],
                          check=True, capture_output=True).stdout
    out.write_bytes(blob)
    return out


def main():
    import argparse
    import tempfile
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint-dir", help="folder with <run>/best.h5 (default: the git history)")
    p.add_argument("--fmnist-dir", help="folder of the Fashion-MNIST files")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="make-pretrained-"))
    for name, run_name in RUNS.items():
        run = REPO / "experiments" / "runs" / run_name          # the run record
        ckpt_name = "best.h5"
        ckpt = source_checkpoint(run_name, a.checkpoint_dir, tmp)
        data_dir = a.fmnist_dir if name.startswith("fmnist") else None
        tree = load_checkpoint(ckpt)
        cfg = validate_config(tree["config"])
        command = [ln for ln in (Path(run) / "command.txt").read_text().splitlines()
                   if ln.startswith("mininsnn ")]
        metrics = [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        row = next(r for r in metrics if r["epoch"] == tree["epoch"])
        out = REPO / "mininsnn" / "pretrained" / f"{name}.npz"
        prov = {"run": Path(run).name, "checkpoint": ckpt_name, "epoch": tree["epoch"],
                "seed": cfg["seed"], "command": command,
                "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                "test_acc_recorded_in_run": row["test_acc"], "made": datetime.date.today().isoformat()}
        pretrained.save_pretrained(out, tree["model"], tree["config"], prov)
        state, config, _ = pretrained.read_file(out)
        for k in pretrained.QUANTIZED:     # same scale and codes as the checkpoint, bit for bit
            a, sa = quantize_forward(tree["model"][k], cfg["bits"])
            b, sb = quantize_forward(state[k], cfg["bits"])
            assert sa == sb and np.array_equal(a, b), k
        (test,) = load_data(cfg, data_dir, splits=("test",))
        ref = build_net(cfg)
        ref.load_state_dict(tree["model"])
        ref.eval()
        net = pretrained.load(out)
        x = (test.images[:256][:, None] / np.float32(255)).astype(np.float32)
        assert np.array_equal(ref.forward(x, num_steps=100), net.forward(x, num_steps=100))
        t0 = time.perf_counter()
        f = evaluate(net, test, cfg, batch_size=256)
        model = pretrained.load_integer(out)
        correct = 0
        for lo in range(0, len(test), 256):
            counts = numba_engine.predict(model, test.images[lo:lo + 256][:, None], 100)
            correct += int((counts.argmax(axis=1) == test.labels[lo:lo + 256]).sum())
        prov.update(test_acc_float=f["acc"], test_acc_int=correct / len(test),
                    test_samples=len(test), int_representation="convert() defaults: F = max per "
                    "layer (" + "/".join(str(L.frac_bits) for L in model.layers) + "), multiply "
                    "leak Q = 30, subtract reset")
        pretrained.save_pretrained(out, tree["model"], tree["config"], prov)
        print(f"{out}: {out.stat().st_size} bytes, float {100 * f['acc']:.2f} %, integer "
              f"{100 * correct / len(test):.2f} % ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
