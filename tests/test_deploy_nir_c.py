"""NIR to C: a float graph another tool wrote, quantized after training, converted, proven and
exported as C99 that gives the integer engine's counts (``mininsnn export g.nir --format c``)."""
import re

import numpy as np
import pytest

from mininsnn.cli import main
from mininsnn.deploy import engine as npe
from mininsnn.deploy.modelfile import load_integer_model
from tests.test_deploy_c import needs_cc, run_c

nir = pytest.importorskip("nir", reason="NIR needs the optional extra 'nir'")


def _lif_mlp(rng, n_in=16, h=12, k=4):
    """Affine -> LIF -> Linear -> LIF, NIR's LIF (tau, r, v_leak, v_threshold, v_reset)."""
    def lif(n):
        return nir.LIF(tau=np.full(n, 2e-3), r=np.full(n, 20.0), v_leak=np.full(n, 0.1),
                       v_threshold=np.full(n, 1.0), v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type=np.array([n_in])),
             "fc1": nir.Affine(weight=rng.normal(0.1, 0.5, (h, n_in)), bias=rng.normal(0, 0.1, h)),
             "lif1": lif(h), "fc2": nir.Linear(weight=rng.normal(0.1, 0.5, (k, h))),
             "lif2": lif(k), "output": nir.Output(output_type=np.array([k]))}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False)


def _if_cnn(rng):
    """Sinabs' form: Conv2d stride 2 padding 1 (bias), IF, SumPool2d, Flatten, Affine, IF."""
    def if_(shape, th):
        return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, th), v_reset=np.zeros(shape))
    nodes = {"input": nir.Input(input_type=np.array([2, 8, 8])),
             "conv": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0.3, 0.6, (4, 2, 3, 3)),
                                stride=np.array([2, 2]), padding=np.array([1, 1]),
                                dilation=np.array([1, 1]), groups=1, bias=rng.normal(0, 0.1, 4)),
             "if1": if_((4, 4, 4), 1.0),
             "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                   padding=np.array([0, 0])),
             "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(weight=rng.normal(0.2, 0.5, (5, 16)), bias=rng.normal(0, 0.1, 5)),
             "if2": if_((5,), 1.5), "output": nir.Output(output_type=np.array([5]))}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False)


@needs_cc
@pytest.mark.parametrize("kind", ["lif_mlp", "if_cnn"])
def test_nir_graph_exports_to_c_with_its_agreement(tmp_path, capsys, kind):
    rng = np.random.default_rng(3)
    graph = _lif_mlp(rng) if kind == "lif_mlp" else _if_cnn(rng)
    nir.write(tmp_path / "g.nir", graph)
    args = ["export", str(tmp_path / "g.nir"), "--bits", "12", "--num-steps", "20", "--input-max",
            "1"]
    assert main(args + ["--format", "c", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    m = re.search(r"identical output spike counts ([\d.]+)%, identical predicted class ([\d.]+)%",
                  out)
    assert m and float(m.group(2)) >= 90.0, out          # 12-bit weights: nearly the float graph
    assert main(args + ["--format", "npz", "--out", str(tmp_path / "n")]) == 0
    model = load_integer_model(tmp_path / "n" / "g.npz")
    assert not model.static and not model.delay          # frames; NIR's reset in the same step
    x = (rng.random((20, 6) + model.input_shape) < 0.3).astype(np.uint8)
    (tmp_path / "c2").mkdir()
    _, counts, _, _ = run_c(model, x, 20, tmp_path / "c2", "g")
    ref = npe.predict(model, x, 20)
    assert np.array_equal(counts, ref) and ref.sum() > 0


def _cuba_mlp(n_in=8, n=6, k=3):
    """Affine -> CubaLIF -> Affine -> CubaLIF (snnTorch's Synaptic as NIR writes it)."""
    def cuba(m):
        return nir.CubaLIF(tau_syn=np.full(m, 5e-4), tau_mem=np.full(m, 1e-3), r=np.full(m, 2.0),
                           v_leak=np.zeros(m), v_threshold=np.full(m, 0.5), v_reset=np.zeros(m),
                           w_in=np.full(m, 1.5))
    rng = np.random.default_rng(8)
    nodes = {"input": nir.Input(input_type=np.array([n_in])),
             "fc1": nir.Affine(weight=rng.normal(0.2, 0.6, (n, n_in)), bias=np.zeros(n)),
             "cuba1": cuba(n), "fc2": nir.Affine(weight=rng.normal(0.2, 0.6, (k, n)),
                                                 bias=np.zeros(k)),
             "cuba2": cuba(k), "output": nir.Output(output_type=np.array([k]))}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False)


@needs_cc
def test_cubalif_graph_exports_to_c(tmp_path, capsys):
    nir.write(tmp_path / "g.nir", _cuba_mlp())
    args = ["export", str(tmp_path / "g.nir"), "--bits", "12", "--input-max", "1"]
    assert main(args + ["--format", "c", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert float(re.search(r"identical predicted class ([\d.]+)%", out).group(1)) >= 90.0, out
    assert main(args + ["--format", "npz", "--out", str(tmp_path / "n")]) == 0
    model = load_integer_model(tmp_path / "n" / "g.npz")
    assert model.alpha_leak is not None and all(L.drive is not None for L in model.layers)
    x = (np.random.default_rng(1).random((30, 6, 8)) < 0.4).astype(np.uint8)
    (tmp_path / "c2").mkdir()
    _, counts, _, _ = run_c(model, x, 30, tmp_path / "c2", "g")
    ref = npe.predict(model, x, 30)
    assert np.array_equal(counts, ref) and ref.sum() > 0


def test_a_recurrent_nir_graph_exports_to_c_with_its_agreement(tmp_path, capsys):
    """A recurrent graph (lif <-> w_rec reads as RLeaky) converts (it was refused before the
    integer engine had a feedback term) and prints its agreement."""
    n = 3
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([4])),
        "fc": nir.Affine(weight=np.ones((n, 4)), bias=np.zeros(n)),
        "lif": nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n)),
        "w_rec": nir.Linear(weight=np.eye(n) * 0.5),
        "output": nir.Output(output_type=np.array([n]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "w_rec"), ("w_rec", "lif"),
               ("lif", "output")], type_check=False)
    nir.write(tmp_path / "g.nir", graph)
    assert main(["export", str(tmp_path / "g.nir"), "--bits", "8", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "identical output spike counts 100.0%" in out, out
    assert "rec_add(" in (tmp_path / "o" / "g.c").read_text()


def test_infer_runs_a_nir_graph_on_the_integer_engines(tmp_path, capsys):
    """(N, T, 16) event frames of a 1-D input; labels = the integer model's own classes."""
    rng = np.random.default_rng(5)
    nir.write(tmp_path / "g.nir", _lif_mlp(rng))
    rep = ["--bits", "12", "--input-max", "1"]
    assert main(["export", str(tmp_path / "g.nir"), "--format", "npz", "--out", str(tmp_path)]
                + rep) == 0
    model = load_integer_model(tmp_path / "g.npz")
    x = (rng.random((30, 20, 16)) < 0.3).astype(np.uint8)
    y = npe.predict(model, np.moveaxis(x, 1, 0), 20).argmax(axis=1)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    capsys.readouterr()
    for engine in ("int", "int-numpy"):
        assert main(["infer", str(tmp_path / "g.nir"), "--input", str(tmp_path / "x.npy"),
                     "--labels", str(tmp_path / "y.npy"), "--engine", engine] + rep) == 0
        assert "accuracy 100.00%" in capsys.readouterr().out


def test_the_paper_s_model_through_nir_exports_the_same_c(tmp_path, capsys):
    """mnist-4bit -> .nir -> C equals mnist-4bit -> C: the layer-list converter reads the graph's
    network (weights bit for bit from the metadata) into the integers of the name-based one."""
    assert main(["export", "mnist-4bit", "--format", "nir", "--out", str(tmp_path)]) == 0
    assert main(["export", str(tmp_path / "mnist-4bit.nir"), "--format", "c", "--name", "m",
                 "--out", str(tmp_path / "a")]) == 0
    assert "identical output spike counts 100.0%" in capsys.readouterr().out
    assert main(["export", "mnist-4bit", "--format", "c", "--name", "m", "--out",
                 str(tmp_path / "b")]) == 0
    for f in ("m.c", "m.h"):
        assert (tmp_path / "a" / f).read_text() == (tmp_path / "b" / f).read_text()
