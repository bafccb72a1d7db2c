"""The pretrained models shipped in mininsnn/pretrained: files, latent weights, accuracies."""
import numpy as np
import pytest

from mininsnn import pretrained
from mininsnn.data import load_mnist
from mininsnn.deploy import numba_engine as nbe
from mininsnn.deploy.modelfile import ModelFileError
from mininsnn.models import build_model
from mininsnn.quant import quantize_forward


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_files_are_small_and_carry_their_provenance(name):
    path = pretrained.path_of(name)
    assert path.stat().st_size < 200_000
    state, config, info = pretrained.read(name)
    assert config["bits"] == 4 and config["config"] == name
    for key in ("command", "seed", "epoch", "test_acc_float", "test_acc_int", "run"):
        assert key in info
    assert info["command"][0].startswith(f"mininsnn train --config {name}")
    for k in pretrained.QUANTIZED:
        assert state[k].dtype == np.float32


@pytest.mark.parametrize("seed,bits", [(0, 4), (1, 2), (2, 8), (3, 16)])
def test_rebuilt_latent_weights_give_the_same_forward_bit_for_bit(tmp_path, seed, bits):
    net = build_model("mnist-4bit", seed=seed, bits=bits)
    rng = np.random.default_rng(seed)
    for k in ("bn1.running_mean", "bn2.running_mean"):
        net.buffers[k][...] = rng.normal(0, 0.1, net.buffers[k].shape)
    cfg = dict(net.config, config="mnist-4bit", seed=seed)
    pretrained.save_pretrained(tmp_path / "m.npz", net.state_dict(), cfg, {"note": "test"})
    state, _, info = pretrained.read_file(tmp_path / "m.npz")
    assert info == {"note": "test"}
    for k in pretrained.QUANTIZED:
        a, sa = quantize_forward(net.params[k], bits)
        b, sb = quantize_forward(state[k], bits)
        assert sa == sb and np.array_equal(a, b)
    other = build_model("mnist-4bit", seed=seed + 100, bits=bits)
    other.load_state_dict(state)
    x = rng.random((4, 1, 28, 28)).astype(np.float32)
    net.eval(), other.eval()
    assert np.array_equal(net.forward(x, num_steps=30), other.forward(x, num_steps=30))


def test_damaged_pretrained_files_are_refused_in_one_line(tmp_path):
    raw = pretrained.path_of("mnist-4bit").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:5000])
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x55
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    for f in ("cut.npz", "flip.npz"):
        with pytest.raises(ModelFileError, match=f) as e:
            pretrained.read_file(tmp_path / f)
        assert "\n" not in str(e.value)
    with pytest.raises(ModelFileError, match="unknown pretrained model 'cifar'"):
        pretrained.read("cifar")


@pytest.mark.slow
def test_shipped_mnist_model_reproduces_its_recorded_accuracies():
    """Float and integer engines on the MNIST test set that ships in datasets/mnist (10k, T=100)."""
    _, _, info = pretrained.read("mnist-4bit")
    test = load_mnist("test")
    net = pretrained.load("mnist-4bit")
    model = pretrained.load_integer("mnist-4bit")
    correct_f = correct_i = 0
    for lo in range(0, len(test), 500):
        x = test.images[lo:lo + 500][:, None]
        y = test.labels[lo:lo + 500]
        f = net.forward((x / np.float32(255)).astype(np.float32), num_steps=100).sum(axis=0)
        correct_f += int((f.argmax(axis=1) == y).sum())
        correct_i += int((nbe.predict(model, x, 100).argmax(axis=1) == y).sum())
    assert correct_f / len(test) == info["test_acc_float"]
    assert correct_i / len(test) == info["test_acc_int"]


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_shipped_model_equals_its_source_checkpoint(name, tmp_path):
    """The training checkpoint it was made from (no longer tracked; taken from the git history,
    as benchmarks/make_pretrained.py does): same scales, codes, BatchNorm and forward, bit for
    bit, and the checkpoint's sha256 is the one the file records."""
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    from mininsnn.checkpoint import load_checkpoint
    from mininsnn.config import validate_config
    from mininsnn.train import build_net
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "benchmarks"))
    try:
        import make_pretrained
    finally:
        sys.path.pop(0)
    try:
        ckpt = make_pretrained.source_checkpoint(make_pretrained.RUNS[name], None, tmp_path)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip(f"the source checkpoint is not in this clone's git history (commit "
                    f"{make_pretrained.SOURCE_COMMIT}; a shallow clone lacks it)")
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == \
        pretrained.read(name)[2]["checkpoint_sha256"]
    tree = load_checkpoint(ckpt)
    state, config, info = pretrained.read(name)
    assert info["epoch"] == tree["epoch"] and config == {**tree["config"], "betas": list(
        tree["config"]["betas"])}
    for k, v in tree["model"].items():
        if k in pretrained.QUANTIZED:
            assert [np.array_equal(a, b) for a, b in zip(quantize_forward(v, 4),
                                                         quantize_forward(state[k], 4))] == [True] * 2
        else:
            assert np.array_equal(v, state[k]), k
    ref = build_net(validate_config(tree["config"]))
    ref.load_state_dict(tree["model"])
    x = (load_mnist("test").images[:32][:, None] / np.float32(255)).astype(np.float32)
    assert np.array_equal(ref.eval().forward(x, num_steps=30),
                          pretrained.load(name).forward(x, num_steps=30))
