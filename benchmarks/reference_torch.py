#!/usr/bin/env python
"""The reference implementation's training step (snnTorch + Brevitas on PyTorch, CPU), for ratios.

Run it with an interpreter that has torch, snntorch and brevitas (never dependencies of mininsnn):

    python -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch==2.13.0 snntorch brevitas
    /tmp/refenv/bin/python benchmarks/reference_torch.py --repeats 5

The network, loss and optimizer follow the paper's 4-bit MNIST config (docs/semantics.md) (the paper's code):
conv-avgpool-BN-Leaky twice, then QuantLinear-Dropout-Leaky, T = 100 steps of the same image,
mse_count_loss(0.8, 0.2), Adam. Prints one JSON line: the step times in seconds.
"""
import argparse
import gzip
import json
import time
from pathlib import Path

import brevitas.nn as qnn
import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import functional as SF
from snntorch import surrogate
from torch import nn

MNIST = Path(__file__).resolve().parents[1] / "datasets" / "mnist" / "train-images-idx3-ubyte.gz"


class QSNN(nn.Module):
    def __init__(self, beta=0.994, threshold=2.915, slope=13.84, p=0.003168):
        super().__init__()
        sg = surrogate.fast_sigmoid(slope=slope)
        self.conv1 = qnn.QuantConv2d(1, 16, 5, bias=False, weight_bit_width=4)
        self.bn1 = nn.BatchNorm2d(16)
        self.lif1 = snn.Leaky(beta=beta, threshold=threshold, spike_grad=sg)
        self.conv2 = qnn.QuantConv2d(16, 64, 5, bias=False, weight_bit_width=4)
        self.bn2 = nn.BatchNorm2d(64)
        self.lif2 = snn.Leaky(beta=beta, threshold=threshold, spike_grad=sg)
        self.fc1 = qnn.QuantLinear(64 * 4 * 4, 10, bias=False, weight_bit_width=4)
        self.drop = nn.Dropout(p)
        self.lif3 = snn.Leaky(beta=beta, threshold=threshold, spike_grad=sg)

    def forward(self, x, num_steps):
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        out = []
        for _ in range(num_steps):
            spk1, mem1 = self.lif1(self.bn1(F.avg_pool2d(self.conv1(x), 2)), mem1)
            spk2, mem2 = self.lif2(self.bn2(F.avg_pool2d(self.conv2(spk1), 2)), mem2)
            spk3, mem3 = self.lif3(self.drop(self.fc1(spk2.flatten(1))), mem3)
            out.append(spk3)
        return torch.stack(out)


def time_step(batch=128, num_steps=100, repeats=5, warmup=1):
    torch.manual_seed(0)
    raw = gzip.open(MNIST).read()
    images = torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(-1, 1, 28, 28)
    net = QSNN()
    opt = torch.optim.Adam(net.parameters(), lr=5.4e-3, betas=(0.9, 0.999))
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)
    times = []
    for k in range(warmup + repeats):
        x = images[k * batch:(k + 1) * batch].float() / 255
        y = torch.randint(0, 10, (batch,))
        t = time.perf_counter()
        spk = net(x, num_steps)
        loss = loss_fn(spk, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= warmup:
            times.append(time.perf_counter() - t)
    return times


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--num-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(json.dumps({"torch": torch.__version__, "snntorch": snn.__version__, "threads": torch.get_num_threads(),
                      "step_s": time_step(a.batch, a.num_steps, a.repeats)}))
