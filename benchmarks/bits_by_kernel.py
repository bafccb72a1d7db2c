#!/usr/bin/env python
"""Which compiled kernels decide the bits of a trained model: one short training run per
setting, compared by a hash of the weights it ends with.

    python benchmarks/bits_by_kernel.py                     # OpenBLAS kernel sets
    python benchmarks/bits_by_kernel.py --numba-generic     # plus Numba compiled for a generic CPU (slow: recompiles)

Resuming is bit-exact on one machine, but the same command on another CPU can end with other
weights (RESULTS.md: 85.63 vs 85.81 % after one Fashion-MNIST epoch, same seed, an Intel and an
AMD host). This looks for the cause on the machine at hand: every setting trains the same tiny
run (4-bit MNIST, 256 images, T = 10, batch 32, one epoch, ste+scale) in its own process, and
the run's final weights are hashed. OpenBLAS (NumPy's BLAS) picks its kernels by CPU
(OPENBLAS_CORETYPE forces a set); Numba compiles for the host CPU (NUMBA_CPU_NAME=generic
compiles for any x86-64). A kernel set the CPU cannot run is reported as such.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mininsnn.runs import machine

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--subset", "256", "--test-subset", "64", "--num-steps", "10", "--batch-size", "32",
       "--epochs", "1", "--quant-grad", "ste+scale", "--seed", "0"]


def weights_hash(checkpoint: Path) -> str:
    """sha256 (first 16 hex digits) of every model array of a checkpoint, in name order."""
    from mininsnn.checkpoint import load_checkpoint
    model = load_checkpoint(checkpoint)["model"]
    h = hashlib.sha256()
    for name in sorted(model):
        h.update(name.encode())
        h.update(np.ascontiguousarray(model[name]).tobytes())
    return h.hexdigest()[:16]


def train(env: dict, out: Path) -> str:
    """Train the tiny run under ``env`` into ``out``; its weights' hash, or why it failed."""
    full = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **env}
    p = subprocess.run([sys.executable, "-m", "mininsnn.cli", "train", *RUN, "--out", str(out)],
                       env=full, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        if p.returncode == -4:
            return "cannot run on this CPU (illegal instruction)"
        return f"failed (exit {p.returncode}): {(p.stderr or p.stdout).strip().splitlines()[-1]}"
    return weights_hash(out / "last.h5")


def main(argv=None):
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--numba-generic", action="store_true",
                   help="also compile Numba for a generic x86-64 CPU (recompiles every kernel)")
    a.add_argument("--coretypes", default="Haswell,Sandybridge,Prescott,SkylakeX",
                   help="comma-separated OPENBLAS_CORETYPE values to try")
    args = a.parse_args(argv)

    settings = [("default", {}), ("default, again", {})]
    settings += [(f"OPENBLAS_CORETYPE={c}", {"OPENBLAS_CORETYPE": c})
                 for c in args.coretypes.split(",") if c]
    if args.numba_generic:
        settings.append(("NUMBA_CPU_NAME=generic", {"NUMBA_CPU_NAME": "generic"}))
    print(f"# {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        for i, (name, env) in enumerate(settings):
            h = train(env, Path(tmp) / f"run{i}")
            base = base or h
            same = "" if len(h) != 16 else ("  same as default" if h == base else "  DIFFERENT")
            print(f"{name:32s} {h}{same}", flush=True)


if __name__ == "__main__":
    main()
