"""snnTorch side of examples/nir_export.py (NIR files as snnTorch reads them): run a NIR file with snnTorch's ``import_from_nir``.

    python nir_snntorch_side.py MODEL.nir X.npy T COUNTS.npy

Runs with an interpreter that has torch, snntorch and nirtorch (never imported by mininsnn). X.npy
holds static images (N, C, H, W) float32, fed at each of T steps; COUNTS.npy receives the output
spike counts (N, classes) as int64.

NIR's Flatten counts the dimensions of one sample (start_dim 0 flattens it all); snnTorch maps it
to ``torch.nn.Flatten(0, -1)``, which would also flatten a batch dimension. So batches run with
``start_dim=1`` here, and the first images also one at a time, without a batch dimension, as NIR
describes them, to check that the two agree.
"""
import sys

import nir
import numpy as np
import torch
from snntorch import utils
from snntorch.import_nir import import_from_nir


def run(net, x, T):
    """Output spike counts of T steps of the static input x."""
    utils.reset(net)                     # every Leaky's membrane back to zero
    count = 0
    with torch.no_grad():
        for _ in range(T):
            spikes, _ = net(x)
            count = count + spikes
    return count.to(torch.int64).numpy()


def main(path, inputs, T, out):
    T = int(T)
    x = torch.from_numpy(np.load(inputs))
    net = import_from_nir(nir.read(path))
    single = [run(net, x[i], T) for i in range(min(8, len(x)))]     # one sample, NIR's shapes
    for m in net.modules():
        if isinstance(m, torch.nn.Flatten):
            m.start_dim = 1                                          # keep the batch dimension
    counts = np.concatenate([run(net, x[i:i + 100], T) for i in range(0, len(x), 100)])
    for i, c in enumerate(single):
        assert np.array_equal(c, counts[i]), f"image {i}: batched {counts[i]} != single {c}"
    np.save(out, counts)


if __name__ == "__main__":
    main(*sys.argv[1:])
