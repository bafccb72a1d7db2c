#!/usr/bin/env python
"""The reference side of parity/compare.py: snnTorch + Brevitas on PyTorch (CPU).

Never imported by mininsnn; run by parity/compare.py with an interpreter that has torch,
snntorch and brevitas:

    /tmp/refenv/bin/python parity/snntorch_side.py IN.npz OUT.npz

IN.npz holds the network's weights under PyTorch names, a batch (x, y) and the hyperparameters.
The network is the paper's (docs/semantics.md) conv-avgpool-BN-Leaky x 2, Linear-Dropout-Leaky, built from the
public snnTorch and Brevitas classes the paper's code uses, in float64. OUT.npz gets the output
spikes (training mode), the mse_count loss, every weight's gradient, the BatchNorm running
statistics after that forward, and the output spikes of an eval-mode forward that follows it.

Everything is computed twice: "stock." with snnTorch's own fast_sigmoid surrogate, whose spikes
are float32 whatever the membrane's dtype (so dL/dS is rounded to float32 at every step of the
backward), and "f64." with the same H forward and 1/(k|x|+1)^2 backward kept in float64.
"""
import sys

import brevitas.nn as qnn
import numpy as np
import snntorch as snn
import torch
import torch.nn.functional as F
from snntorch import functional as SF
from snntorch import surrogate
from torch import nn


class FastSigmoid64(torch.autograd.Function):
    """snnTorch's fast_sigmoid (forward H(x), backward 1/(k|x|+1)^2) in the input's dtype."""

    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (ctx.slope * torch.abs(x) + 1.0) ** 2, None


class QSNN(nn.Module):
    def __init__(self, c_in, c1, c2, flat, classes, bits, beta, threshold, slope, batchnorm,
                 stock=True):
        super().__init__()
        sg = (surrogate.fast_sigmoid(slope=slope) if stock
              else (lambda x: FastSigmoid64.apply(x, slope)))
        if bits is None:
            self.conv1 = nn.Conv2d(c_in, c1, 5, bias=False)
            self.conv2 = nn.Conv2d(c1, c2, 5, bias=False)
            self.fc1 = nn.Linear(flat, classes, bias=True)
        else:
            self.conv1 = qnn.QuantConv2d(c_in, c1, 5, bias=False, weight_bit_width=bits)
            self.conv2 = qnn.QuantConv2d(c1, c2, 5, bias=False, weight_bit_width=bits)
            self.fc1 = qnn.QuantLinear(flat, classes, bias=False, weight_bit_width=bits)
        self.bn1 = nn.BatchNorm2d(c1) if batchnorm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(c2) if batchnorm else nn.Identity()
        self.lif1 = snn.Leaky(beta=beta, threshold=threshold, spike_grad=sg)
        self.lif2 = snn.Leaky(beta=beta, threshold=threshold, spike_grad=sg)
        self.lif3 = snn.Leaky(beta=beta, threshold=threshold, spike_grad=sg)

    def forward(self, x, num_steps):
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        out = []
        f64 = torch.float64   # snnTorch returns float32 spikes (0/1, exact) whatever the input
        for _ in range(num_steps):
            spk1, mem1 = self.lif1(self.bn1(F.avg_pool2d(self.conv1(x), 2)), mem1)
            spk2, mem2 = self.lif2(self.bn2(F.avg_pool2d(self.conv2(spk1.to(f64)), 2)), mem2)
            spk3, mem3 = self.lif3(self.fc1(spk2.to(f64).flatten(1)), mem3)   # dropout p = 0
            out.append(spk3.to(f64))
        return torch.stack(out)


def run(d, stock):
    bits = int(d["bits"]) if int(d["bits"]) > 0 else None
    w1, w2, wf = d["conv1.weight"], d["conv2.weight"], d["fc1.weight"]
    net = QSNN(w1.shape[1], w1.shape[0], w2.shape[0], wf.shape[1], wf.shape[0], bits,
               float(d["beta"]), float(d["threshold"]), float(d["slope"]), bool(d["batchnorm"]),
               stock)
    net.double()
    own = net.state_dict()
    state = {k: torch.from_numpy(np.asarray(d[k])) for k in own if k in d.files}
    wanted = [k for k in own if k.split(".")[0] in ("conv1", "conv2", "fc1", "bn1", "bn2")
              and "num_batches" not in k]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise SystemExit(f"snntorch_side: no values for {missing}")
    net.load_state_dict(state, strict=False)
    x, y, T = torch.from_numpy(d["x"]), torch.from_numpy(d["y"]), int(d["num_steps"])
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)

    net.train()
    spk = net(x, T)
    loss = loss_fn(spk, y)
    loss.backward()
    out = {"spikes": spk.detach().numpy(), "loss": np.float64(loss.item())}
    for name, p in net.named_parameters():
        out["grad." + name] = p.grad.numpy()
    for name, b in net.named_buffers():
        if "running" in name:
            out["buffer." + name] = b.numpy()
    net.eval()
    with torch.no_grad():
        out["eval_spikes"] = net(x, T).numpy()
    return out


def main(src, dst):
    torch.set_default_dtype(torch.float64)
    d = np.load(src)
    out = {f"{kind}.{k}": v for kind, stock in (("stock", True), ("f64", False))
           for k, v in run(d, stock).items()}
    out["versions"] = np.array(f"torch {torch.__version__}, snntorch {snn.__version__}, "
                               f"brevitas {__import__('brevitas').__version__}")
    np.savez(dst, **out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
