"""Bad input gives a ValueError naming the layer, what was expected and what came."""

import numpy as np
import pytest

from mininsnn.layers import AvgPool2d, BatchNorm2d, Context, Conv2d, Dropout, Linear
from mininsnn.neurons import Leaky
from mininsnn.config import make_config
from mininsnn.models import build_model


def ctx(T=2):
    return Context(T=T, training=True, rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def net():
    return build_model("mnist-4bit", seed=0)


@pytest.mark.parametrize("shape, msg", [((2, 28, 28), r"\(B, 1, 28, 28\)"), ((2, 3, 28, 28), r"got \(2, 3, 28, 28\)"),
                                        ((2, 1, 27, 28), "27"), ((5, 2, 2, 28, 28), "expected input of shape")])
def test_network_wrong_shape(net, shape, msg):
    with pytest.raises(ValueError, match=msg):
        net.forward(np.zeros(shape, np.float32), num_steps=5)


def test_network_wrong_dtype(net):
    with pytest.raises(ValueError, match="float32"):
        net.forward(np.zeros((2, 1, 28, 28), np.float64), num_steps=5)
    with pytest.raises(ValueError, match="uint8"):
        net.forward(np.zeros((2, 1, 28, 28), np.uint8), num_steps=5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_network_non_finite_input(net, bad):
    x = np.zeros((2, 1, 28, 28), np.float32)
    x[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        net.forward(x, num_steps=5)


@pytest.mark.parametrize("T", [0, -1, 2.5, None])
def test_network_bad_num_steps(net, T):
    with pytest.raises(ValueError, match="num_steps"):
        net.forward(np.zeros((2, 1, 28, 28), np.float32), num_steps=T)


def test_network_non_finite_weights():
    net = build_model("mnist-4bit", seed=0)
    net.params["conv2.weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="conv2.*weight.*NaN"):
        net.forward(np.zeros((2, 1, 28, 28), np.float32), num_steps=3)


def test_network_backward_checks(net):
    net.forward(np.zeros((2, 1, 28, 28), np.float32), num_steps=3)
    with pytest.raises(ValueError, match=r"\(3, 2, 10\)"):
        net.backward(np.zeros((3, 2, 11), np.float32))


@pytest.mark.parametrize("bad, dtype", [(np.nan, np.float32), (np.inf, np.float32), (-np.inf, np.float64),
                                        (1e300, np.float64)])   # finite in float64, inf in float32
def test_network_backward_refuses_non_finite_gradients_and_changes_nothing(bad, dtype):
    net = build_model("mnist-4bit", seed=0)
    net.forward(np.zeros((2, 1, 28, 28), np.float32), num_steps=3)
    net.zero_grad()
    d = np.zeros((3, 2, 10), dtype)
    d[2, 1, 7] = bad
    with pytest.raises(ValueError, match=r"Network.backward: the gradient dL/d\(output\) holds NaN or inf \(in float32\)"):
        net.backward(d)
    assert all(not g.any() for g in net.grads.values())


def test_layer_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"Conv2d: expected input of shape \(T, B, 3, 8, 8\), got \(2, 1, 2, 8, 8\)"):
        Conv2d(3, 4, 3).forward(np.zeros((2, 1, 2, 8, 8), np.float32), ctx())
    with pytest.raises(ValueError, match="Conv2d: .*smaller than the 3x3 kernel"):
        Conv2d(1, 4, 3).forward(np.zeros((2, 1, 1, 2, 2), np.float32), ctx())
    with pytest.raises(ValueError, match="Conv2d: expected dtype"):
        Conv2d(1, 4, 3).forward(np.zeros((2, 1, 1, 5, 5), np.int32), ctx())
    with pytest.raises(ValueError, match=r"Linear: expected input of shape \(T, B, 4\)"):
        Linear(4, 2).forward(np.zeros((2, 1, 5), np.float32), ctx())
    with pytest.raises(ValueError, match="BatchNorm2d: expected input of shape"):
        BatchNorm2d(3).forward(np.zeros((2, 2, 4, 2, 2), np.float32), ctx())
    with pytest.raises(ValueError, match="BatchNorm2d: training needs more than one value"):
        BatchNorm2d(3).forward(np.zeros((2, 1, 3, 1, 1), np.float32), ctx())
    with pytest.raises(ValueError, match="Leaky: expected 2 time steps"):
        Leaky(0.5).forward(np.zeros((3, 1, 4), np.float32), ctx())
    with pytest.raises(ValueError, match="Leaky: input contains NaN"):
        Leaky(0.5).forward(np.full((2, 1, 4), np.nan, np.float32), ctx())
    with pytest.raises(ValueError, match="AvgPool2d: .*smaller"):
        AvgPool2d(3).forward(np.zeros((2, 1, 1, 2, 2), np.float32), ctx())
    with pytest.raises(ValueError, match="Dropout: expected p"):
        Dropout(1.0)


@pytest.mark.parametrize("kw, msg", [(dict(in_channels=0), "in_channels"), (dict(kernel_size=2.5), "kernel_size"),
                                     (dict(stride=0), "stride"), (dict(padding=-1), "padding"), (dict(bits=1), "bits")])
def test_conv_constructor_errors(kw, msg):
    args = dict(in_channels=1, out_channels=2, kernel_size=3)
    args.update(kw)
    with pytest.raises(ValueError, match=f"Conv2d: expected {msg}"):
        Conv2d(**args)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown config"):
        make_config("cifar")
    with pytest.raises(ValueError, match="unknown config key .learning_rate."):
        make_config("mnist-4bit", learning_rate=0.1)
    with pytest.raises(ValueError, match="beta"):
        build_model("mnist-4bit", beta=1.2)
    with pytest.raises(ValueError, match="2..16"):
        build_model("mnist-4bit", bits=20)
