#!/usr/bin/env python
"""Integer deploy of networks other than the paper's: train briefly, convert, compare, export C.

    python benchmarks/deploy_any.py                       # MLP on MNIST, 3-conv on Fashion-MNIST
    python benchmarks/deploy_any.py --steps 300 --test 10000 --num-steps 25

For each network: a short training run (Adam, mse_count_loss, 8-bit weights), the float test
accuracy, the integer model (mininsnn.deploy.chain.convert_layers), the share of test images whose
output spike counts and predicted class are identical float vs integer, and the C export compiled
with -std=c99 -Wall -Wextra -Werror -pedantic and checked count for count against the integer
engine on a batch; const and RAM bytes. Results go to stdout (and --json).
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mininsnn.data import load_fashion_mnist, load_mnist  # noqa: E402
from mininsnn.deploy import engine as npe  # noqa: E402
from mininsnn.deploy.cexport import export_c  # noqa: E402
from mininsnn.deploy.chain import agreement, convert_layers  # noqa: E402
from mininsnn.layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear  # noqa: E402
from mininsnn.loss import mse_count_loss  # noqa: E402
from mininsnn.network import Network  # noqa: E402
from mininsnn.neurons import Leaky  # noqa: E402
from mininsnn.optim import Adam  # noqa: E402

def mlp(bits, seed=0):
    rng = np.random.default_rng(seed)
    return Network([("flat", Flatten()), ("fc1", Linear(784, 128, bits=bits, rng=rng)),
                    ("lif1", Leaky(0.9)), ("fc2", Linear(128, 10, bits=bits, rng=rng)),
                    ("drop", Dropout(0.1)), ("lif2", Leaky(0.9))], (1, 28, 28), seed=seed)


def conv3(bits, seed=0):
    """28 -> conv 3x3 pad 1 + pool 2 (14) -> conv 3x3 stride 2 pad 1 (7) -> conv 3x3 pad 1 +
    pool 2 (3) -> fc 288 -> 10; BatchNorm after the first two."""
    rng = np.random.default_rng(seed)
    return Network([
        ("conv1", Conv2d(1, 8, 3, padding=1, bits=bits, rng=rng)), ("pool1", AvgPool2d(2)),
        ("bn1", BatchNorm2d(8)), ("lif1", Leaky(0.9)),
        ("conv2", Conv2d(8, 16, 3, stride=2, padding=1, bits=bits, rng=rng)), ("bn2", BatchNorm2d(16)),
        ("lif2", Leaky(0.9)),
        ("conv3", Conv2d(16, 32, 3, padding=1, bits=bits, rng=rng)), ("pool3", AvgPool2d(2)),
        ("lif3", Leaky(0.9)),
        ("flat", Flatten()), ("fc", Linear(32 * 3 * 3, 10, bits=bits, rng=rng)), ("lif4", Leaky(0.9))],
        (1, 28, 28), seed=seed)


def train(net, data, steps, T, batch=128, lr=2e-3, seed=0):
    opt = Adam(net.params, lr)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        idx = rng.integers(0, len(data.labels), batch)
        x = (data.images[idx][:, None] / np.float32(255)).astype(np.float32)
        spk = net.forward(x, num_steps=T)
        _, d = mse_count_loss(spk, data.labels[idx])
        net.zero_grad()
        net.backward(d)
        opt.step(net.grads)
    return net.eval()


def c_check(model, x, T):
    """Compile the export with strict flags, run it on x; (counts equal, const, state)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    with tempfile.TemporaryDirectory() as tmp:
        paths, const, state = export_c(model, tmp, "net")
        main = Path(tmp) / "main.c"
        main.write_text(
            '#include <stdio.h>\n#include "net.h"\nint main(void){static net_state st; static uint8_t '
            'x[NET_IN_C*NET_IN_H*NET_IN_W]; uint16_t c[NET_CLASSES]; int k;\n'
            'while (fread(x, 1, sizeof x, stdin) == sizeof x) { net_predict(x, %d, &st, c);\n'
            'for (k = 0; k < NET_CLASSES; ++k) { printf("%%u ", (unsigned)c[k]); }\n'
            'printf("\\n"); }\n'
            'return 0;}\n' % T)
        exe = Path(tmp) / "a.out"
        subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-o",
                        str(exe), str(main), paths[1]], check=True)
        out = subprocess.run([str(exe)], input=x.tobytes(), capture_output=True, check=True).stdout
    counts = np.array([[int(v) for v in line.split()] for line in out.decode().splitlines()])
    return bool(np.array_equal(counts, npe.predict(model, x, T))), const, state


def run(name, net, data, test, a):
    t0 = time.perf_counter()
    train(net, data, a.steps, a.num_steps)
    t_train = time.perf_counter() - t0
    model = convert_layers(net)
    x, y = test.images[:a.test][:, None], test.labels[:a.test]
    T = a.num_steps
    same, cls, acc_f, acc_i = [], [], [], []
    for lo in range(0, len(y), 500):
        xb = x[lo:lo + 500]
        s, c = agreement(net, model, xb, T)
        same.append(s * len(xb))
        cls.append(c * len(xb))
        acc_i.append((npe.predict(model, xb, T).argmax(1) == y[lo:lo + 500]).sum())
        fc = net.forward(xb / np.float32(255), num_steps=T).sum(axis=0)
        acc_f.append((fc.argmax(1) == y[lo:lo + 500]).sum())
    ok, const, state = c_check(model, x[:64], T)
    n = len(y)
    res = {"network": name, "train_steps": a.steps, "train_s": round(t_train, 1),
           "test_images": n, "T": T, "float_acc": float(sum(acc_f) / n),
           "int_acc": float(sum(acc_i) / n), "identical_counts": float(sum(same) / n),
           "identical_class": float(sum(cls) / n), "c_matches_engine_on_64": ok,
           "c_const_bytes": const, "c_ram_bytes": state,
           "F": [L.frac_bits for L in model.layers]}
    print(json.dumps(res), flush=True)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--num-steps", type=int, default=25, dest="num_steps")
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--json")
    p.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/")
    a = p.parse_args()
    d = Path(a.data_dir) if a.data_dir else None
    out = [run("mlp-mnist", mlp(a.bits), load_mnist("train", d and d / "mnist"),
               load_mnist("test", d and d / "mnist"), a),
           run("conv3-fmnist", conv3(a.bits), load_fashion_mnist("train", d and d / "fashion-mnist"),
               load_fashion_mnist("test", d and d / "fashion-mnist"), a)]
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
