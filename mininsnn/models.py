"""The reference networks of the paper, with the reference hyperparameters as defaults.

Parameter names and layouts are those of the reference PyTorch model (``conv1.weight`` as
(out, in, kh, kw), ``bn1.weight``/``bias``/``running_mean``/``running_var``, ``fc1.weight`` as
(out, in), ``fc1.bias`` in full precision), so state dicts move between mininsnn and PyTorch.

MNIST / FashionMNIST ("QSNN-conv"), per time step:
    conv1 1->16 5x5 -> avgpool 2 -> bn1 -> lif1 -> conv2 16->64 5x5 -> avgpool 2 -> bn2 -> lif2
    -> flatten 1024 -> fc1 1024->10 -> dropout -> lif3
DVS128 Gesture: conv1 2->16 5x5 on 2x32x32 -> pool -> (bn1) -> lif1 -> conv2 16->32 -> pool -> (bn2)
    -> lif2 -> fc1 800->11 -> dropout -> lif3.   No BatchNorm in the 4-bit DVS config.
"""

import copy

import numpy as np

from mininsnn import surrogate as sg
from mininsnn.layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Leaky, Linear
from mininsnn.network import Network
from mininsnn.quant import check_bits

__all__ = ["CONFIGS", "build_model", "make_config", "build_from_config", "reference_network"]

_COMMON = dict(num_steps=100, surrogate="fast_sigmoid", loss="mse_count", correct_rate=0.8,
               incorrect_rate=0.2, reset="subtract", betas=(0.9, 0.999), weight_decay=0.0, schedule="cosine",
               eta_min=0.0, quant_grad="ste")

#: REFERENCE.md "Configurations" (batch 128 unless noted; T = 100; Adam; mse_count 0.8/0.2).
CONFIGS = {
    "mnist-4bit": dict(dataset="mnist", bits=4, beta=0.994, threshold=2.915, slope=13.84, lr=5.4e-3,
                       dropout=0.003168, batchnorm=True, grad_clip=False, weight_clip=False, T_max=4690,
                       batch_size=128),
    "fmnist-4bit": dict(dataset="fashion-mnist", bits=4, beta=0.974, threshold=2.473, slope=5.5565, lr=2.908e-3,
                        dropout=0.073556, batchnorm=True, grad_clip=False, weight_clip=False, T_max=4690,
                        batch_size=128),
    "dvs-4bit": dict(dataset="dvsgesture", bits=4, beta=0.614, threshold=0.427, slope=4.413, lr=2.634e-3,
                     dropout=0.203, batchnorm=False, grad_clip=True, weight_clip=True, T_max=735, batch_size=16),
    "mnist-fp": dict(dataset="mnist", bits=None, beta=0.921, threshold=2.04, slope=6.03, lr=1.9e-3, dropout=0.094,
                     batchnorm=True, grad_clip=True, weight_clip=True, T_max=4690, batch_size=128),
    "fmnist-fp": dict(dataset="fashion-mnist", bits=None, beta=0.39, threshold=1.47, slope=7.66, lr=2e-3,
                      dropout=0.13, batchnorm=True, grad_clip=True, weight_clip=True, T_max=4690, batch_size=128),
    "dvs-fp": dict(dataset="dvsgesture", bits=None, beta=0.93, threshold=1.47, slope=9.70, lr=2.4e-3, dropout=0.29,
                   batchnorm=True, grad_clip=True, weight_clip=True, T_max=735, batch_size=16),
}
for _cfg in CONFIGS.values():
    for _k, _v in _COMMON.items():
        _cfg.setdefault(_k, _v)

_ARCH = {  # dataset -> (input shape, conv1 out, conv2 out, number of classes)
    "mnist": ((1, 28, 28), 16, 64, 10),
    "fashion-mnist": ((1, 28, 28), 16, 64, 10),
    "dvsgesture": ((2, 32, 32), 16, 32, 11),
}


def make_config(name, **overrides):
    """A copy of ``CONFIGS[name]`` with ``overrides`` applied; unknown names or keys are ValueErrors."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; expected one of {sorted(CONFIGS)}")
    cfg = copy.deepcopy(CONFIGS[name])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"config {name}: unknown keys {unknown}; valid keys are {sorted(cfg)}")
    cfg.update(overrides)
    cfg["name"] = name
    return cfg


def reference_network(input_shape, channels, num_classes, *, bits, beta, threshold, surrogate, dropout,
                      batchnorm, reset="subtract", seed=0, dtype=np.float32, fuse=True, quant_grad="ste"):
    """The paper's conv-pool-(bn)-lif x2, fc-dropout-lif architecture at any size.

    input_shape (C, H, W); channels (c1, c2); the fc layer has a bias only in full precision.
    ``seed`` fixes the initial weights and the Dropout RNG. ``quant_grad`` is the quantizer's
    backward ("ste" or "ste+scale", see mininsnn.quant).
    """
    bits = check_bits(bits, "reference_network")
    c_in, h, w = input_shape
    c1, c2 = channels
    init_seq, drop_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(init_seq)
    h2, w2 = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    if h2 < 1 or w2 < 1:
        raise ValueError(f"reference_network: input {input_shape} is too small for two 5x5 conv + 2x2 pool stages")

    def lif():
        return Leaky(beta, threshold, surrogate, reset=reset)

    layers = [("conv1", Conv2d(c_in, c1, 5, bias=False, bits=bits, dtype=dtype, rng=rng,
                                       quant_grad=quant_grad)),
              ("pool1", AvgPool2d(2))]
    if batchnorm:
        layers.append(("bn1", BatchNorm2d(c1, dtype=dtype)))
    layers += [("lif1", lif()),
               ("conv2", Conv2d(c1, c2, 5, bias=False, bits=bits, dtype=dtype, rng=rng,
                               quant_grad=quant_grad)),
               ("pool2", AvgPool2d(2))]
    if batchnorm:
        layers.append(("bn2", BatchNorm2d(c2, dtype=dtype)))
    layers += [("lif2", lif()),
               ("flatten", Flatten()),
               ("fc1", Linear(c2 * h2 * w2, num_classes, bias=bits is None, bits=bits, dtype=dtype, rng=rng,
                             quant_grad=quant_grad)),
               ("dropout", Dropout(dropout)),
               ("lif3", lif())]
    return Network(layers, input_shape, dtype=dtype, seed=drop_seq, fuse=fuse)


def build_from_config(cfg, seed=0, dtype=np.float32, fuse=True):
    """Build the network a config (see :func:`make_config`) describes."""
    if cfg["dataset"] not in _ARCH:
        raise ValueError(f"config: unknown dataset {cfg['dataset']!r}; expected one of {sorted(_ARCH)}")
    input_shape, c1, c2, n_cls = _ARCH[cfg["dataset"]]
    net = reference_network(input_shape, (c1, c2), n_cls, bits=cfg["bits"], beta=cfg["beta"],
                            threshold=cfg["threshold"], surrogate=sg.make_surrogate(cfg["surrogate"], cfg["slope"]),
                            dropout=cfg["dropout"], batchnorm=cfg["batchnorm"], reset=cfg["reset"], seed=seed,
                            dtype=dtype, fuse=fuse, quant_grad=cfg["quant_grad"])
    net.config = cfg
    return net


def build_model(name, seed=0, dtype=np.float32, fuse=True, **overrides):
    """The reference network ``name`` (see :data:`CONFIGS`), hyperparameters overridable by keyword.

    >>> net = build_model("mnist-4bit", seed=0)
    >>> spikes = net.forward(np.zeros((2, 1, 28, 28), np.float32), num_steps=100)   # (100, 2, 10)
    """
    return build_from_config(make_config(name, **overrides), seed=seed, dtype=dtype, fuse=fuse)
