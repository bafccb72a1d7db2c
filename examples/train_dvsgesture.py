#!/usr/bin/env python
"""Train the paper's 4-bit QSNN on DVS128 Gesture (reference config "dvs-4bit", batch 16).

    python examples/train_dvsgesture.py --data-dir /data/DvsGesture          # IBM release or tonic's
    python examples/train_dvsgesture.py --data-dir /data/DvsGesture --epochs 5 --subset 256
    python examples/train_dvsgesture.py --synthetic --epochs 1                # no data needed

The data set is not shipped (see datasets/README.md): --data-dir is the IBM `DvsGesture` folder
(userNN_<lighting>.aedat, *_labels.csv, trials_to_train.txt, trials_to_test.txt), its parent, or a
folder with tonic's `ibmGestureTrain/` and `ibmGestureTest/`; without it, datasets/dvsgesture/.
The first run preprocesses every sample (3 ms bins, 32x32, T = 100 train / 600 test) into an HDF5
cache in <data-dir>/cache/; later runs start at once.

--synthetic writes a tiny DvsGesture folder (one training user, one test user, 12 gestures each,
AEDAT 3.1 files made by mininsnn.aedat.write_aedat31) to a temporary folder and trains on it, so the
whole pipeline (reader -> cache -> batches -> mininsnn.models.build_model("dvs-4bit") -> trainer)
runs end to end without the real data; its accuracy means nothing.

Every other flag of `mininsnn train` works here as well (--lr, --seed, --num-steps, --test-subset,
--resume, ...; see --help); this script fixes --config dvs-4bit and hands the rest to
mininsnn.cli.main, which builds the network with build_model and trains it with mininsnn.train.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a clone without installing


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False, add_help=False)
    p.add_argument("--synthetic", action="store_true",
                   help="train on a tiny synthetic DvsGesture folder written to a temporary folder")
    p.add_argument("--data-dir", help="DvsGesture folder (IBM or tonic layout)")
    p.add_argument("--epochs", help="number of epochs (default 1)")
    p.add_argument("--subset", help="train on the first N training samples")
    p.add_argument("--out", help="run folder (default runs/dvs-4bit-seed0, or runs/dvs-4bit-synthetic)")
    p.add_argument("-h", "--help", action="store_true")
    return p.parse_known_args(argv)


def main(argv=None) -> int:
    from mininsnn.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    known, rest = parse(argv)
    if known.help:
        print(__doc__)
        return cli_main(["train", "--help"])
    forwarded = ["train", "--config", "dvs-4bit"]
    for flag, value in (("--epochs", known.epochs), ("--subset", known.subset)):
        if value is not None:
            forwarded += [flag, value]
    if not known.synthetic:
        if known.data_dir is not None:
            forwarded += ["--data-dir", known.data_dir]
        if known.out is not None:
            forwarded += ["--out", known.out]
        return cli_main(forwarded + rest)
    if known.data_dir is not None:
        print("train_dvsgesture.py: --synthetic and --data-dir exclude each other", file=sys.stderr)
        return 2
    from mininsnn.dvs import make_synthetic_dvsgesture

    with tempfile.TemporaryDirectory(prefix="mininsnn-dvs-synthetic-") as tmp:
        folder = make_synthetic_dvsgesture(tmp, train_users=(1,), test_users=(24,))
        print(f"synthetic DvsGesture folder: {folder}", flush=True)
        out = known.out if known.out is not None else "runs/dvs-4bit-synthetic"
        return cli_main(forwarded + ["--data-dir", str(folder), "--out", out] + rest)


if __name__ == "__main__":
    sys.exit(main())
