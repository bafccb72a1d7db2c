#!/usr/bin/env python
"""The training loop written out: the paper's 4-bit QSNN on MNIST, one library call per step.

    python examples/mnist_loop.py                                   # 1 epoch: >= 97 % test accuracy
    python examples/mnist_loop.py --limit-train 512 --limit-test 500   # a look in a minute

`mininsnn train` (mininsnn/train.py, Trainer) runs the same steps and adds run folders,
checkpoints, divergence checks and progress bars; this script is the loop alone.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a clone without installing

from mininsnn.config import make_config  # noqa: E402
from mininsnn.data import BatchIterator, load_mnist  # noqa: E402
from mininsnn.loss import accuracy, mse_count_loss, predict  # noqa: E402
from mininsnn.models import build_from_config  # noqa: E402
from mininsnn.optim import Adam  # noqa: E402
from mininsnn.schedule import make_schedule  # noqa: E402

parser = argparse.ArgumentParser(description="the training loop of mininsnn on MNIST")
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--limit-train", type=int, metavar="N", help="train on the first N images only")
parser.add_argument("--limit-test", type=int, metavar="N", help="test on the first N images only")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

# 1. The settings, the network and the data.
cfg = make_config("mnist-4bit", seed=args.seed)     # mininsnn/config.py: the paper's settings
net = build_from_config(cfg)      # conv-pool-bn-lif x2, fc-dropout-lif, 4-bit weights (models.py)
train_set, test_set = load_mnist("train"), load_mnist("test")        # from datasets/mnist/
if args.limit_train:
    train_set = train_set.subset(args.limit_train)
if args.limit_test:
    test_set = test_set.subset(args.limit_test)
T = cfg["num_steps"]                                 # each image is shown for T time steps

# 2. The pieces of one optimisation step.
batches = BatchIterator(train_set, cfg["batch_size"], shuffle=True, seed=cfg["seed"])
optimizer = Adam(net.params, lr=cfg["lr"], betas=cfg["betas"])      # updates net.params in place
schedule = make_schedule("cosine", cfg["lr"], T_max=cfg["T_max"])   # lr of batch k


def evaluate(dataset):
    """How many images of ``dataset`` the network classifies right, in eval mode."""
    net.eval()                    # BatchNorm uses its running statistics, Dropout is off
    correct = 0
    for x, y in BatchIterator(dataset, cfg["batch_size"], shuffle=False).epoch(0):
        spikes = net.forward(x, num_steps=T)                          # (T, B, 10)
        correct += int((predict(spikes) == y).sum())    # predicted: the most spikes
    net.train()
    return correct


# 3. The loop.
k = 0                                                 # batches trained so far
for epoch in range(args.epochs):
    t0 = time.perf_counter()
    for x, y in batches.epoch(epoch):                 # x (B, 1, 28, 28) float32, y (B,) int64
        spikes = net.forward(x, num_steps=T)          # (T, B, 10) output spikes
        loss, dspikes = mse_count_loss(spikes, y, cfg["correct_rate"], cfg["incorrect_rate"])
        net.zero_grad()
        net.backward(dspikes)     # BPTT through every layer, in reverse: fills net.grads
        optimizer.step(net.grads, lr=schedule.lr(k))
        k += 1
        if k % 50 == 0:
            print(f"batch {k}  loss {float(loss):.4f}  train acc {100 * accuracy(spikes, y):.1f} %",
                  flush=True)
    seconds = time.perf_counter() - t0
    correct = evaluate(test_set)
    print(f"epoch {epoch + 1}: test accuracy {correct}/{len(test_set)} = "
          f"{100 * correct / len(test_set):.2f} %  ({seconds:.0f} s of training)", flush=True)
