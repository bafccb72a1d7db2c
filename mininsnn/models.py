"""The reference networks of the paper; the settings' defaults are those of mininsnn.config.

Parameter names and layouts are those of the reference PyTorch model (``conv1.weight`` as
(out, in, kh, kw), ``bn1.weight``/``bias``/``running_mean``/``running_var``, ``fc1.weight`` as
(out, in), ``fc1.bias`` in full precision), so state dicts move between mininsnn and PyTorch.

MNIST / FashionMNIST ("QSNN-conv"), per time step:
    conv1 1->16 5x5 -> avgpool 2 -> bn1 -> lif1 -> conv2 16->64 5x5 -> avgpool 2 -> bn2 -> lif2
    -> flatten 1024 -> fc1 1024->10 -> dropout -> lif3
DVS128 Gesture: conv1 2->16 5x5 on 2x32x32 -> pool -> (bn1) -> lif1 -> conv2 16->32 -> pool -> (bn2)
    -> lif2 -> fc1 800->11 -> dropout -> lif3.   No BatchNorm in the 4-bit DVS config.
"""

import numpy as np

from mininsnn import rules
from mininsnn import surrogate as sg
from mininsnn.config import ARCHITECTURES, DEFAULTS, make_config, model_settings
from mininsnn.layers import AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear
from mininsnn.neurons import Leaky
from mininsnn.network import Network
from mininsnn.spec import build_network, check_fits

__all__ = ["ARCHITECTURES", "build_model", "build_from_config", "reference_network"]

def reference_network(input_shape, channels, num_classes, *, bits, beta, threshold, dropout,
                      batchnorm, surrogate=DEFAULTS["surrogate"], slope=DEFAULTS["slope"],
                      reset=DEFAULTS["reset"], reset_delay=DEFAULTS["reset_delay"],
                      quant_grad=DEFAULTS["quant_grad"], sparse_grad=DEFAULTS["sparse_grad"],
                      dtype=DEFAULTS["dtype"], seed=0, fuse=True):
    """The paper's conv-pool-(bn)-lif x2, fc-dropout-lif architecture at any size.

    input_shape (C, H, W); channels (c1, c2); the fc layer has a bias only in full precision.
    The keywords from ``bits`` to ``quant_grad`` are the network's settings in
    mininsnn.config.SETTINGS (``surrogate`` is a name or a Surrogate, ``slope`` its parameter);
    those with a default take the setting's (mininsnn.config.DEFAULTS).
    ``seed`` fixes the initial weights and the Dropout RNG.
    """
    bits = rules.check_bits("reference_network", bits)
    c_in, h, w = input_shape
    c1, c2 = channels
    init_seq, drop_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(init_seq)
    h2, w2 = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    if h2 < 1 or w2 < 1:
        raise ValueError(f"reference_network: input {input_shape} is too small for two 5x5 conv + 2x2 pool stages")

    spike_grad = sg.make_surrogate(surrogate, slope)

    def lif():
        return Leaky(beta, threshold, spike_grad, reset=reset, reset_delay=reset_delay,
                     sparse_grad=sparse_grad)

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


def build_from_config(cfg, seed=None, fuse=True):
    """The network a run configuration (mininsnn.config.make_config) describes; ``seed``
    defaults to the configuration's own. The network is the configuration's spec (``model``,
    mininsnn.spec) when it has one."""
    if cfg.get("model") is not None:
        where = f"spec {cfg['model'].get('name', '')}".rstrip()
        check_fits(cfg["model"], cfg, where)
        net = build_network(cfg["model"], model_settings(cfg), where=where, fuse=fuse,
                            seed=cfg["seed"] if seed is None else seed)
        net.config = cfg
        return net
    input_shape, c1, c2, n_cls = ARCHITECTURES[cfg["dataset"]]
    net = reference_network(input_shape, (c1, c2), n_cls, **model_settings(cfg),
                            seed=cfg["seed"] if seed is None else seed, fuse=fuse)
    net.config = cfg
    return net


def build_model(name, seed=0, dtype=DEFAULTS["dtype"], fuse=True, **overrides):
    """The reference network ``name`` (mininsnn.config.CONFIGS), settings overridable by keyword
    (``dtype`` float32 or float64 is the ``dtype`` setting).

    >>> net = build_model("mnist-4bit", seed=0)
    >>> spikes = net.forward(np.zeros((2, 1, 28, 28), np.float32), num_steps=100)   # (100, 2, 10)
    """
    cfg = make_config(name, seed=seed, dtype=np.dtype(dtype).name, **overrides)
    return build_from_config(cfg, fuse=fuse)
