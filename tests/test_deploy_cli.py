"""mininsnn export / infer: what they write and print, and bad input (one line, exit 2, nothing
written)."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from mininsnn import pretrained
from mininsnn.checkpoint import save_checkpoint
from mininsnn.cli import main
from mininsnn.deploy.modelfile import load_integer_model

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "datasets" / "mnist" / "t10k-images-idx3-ubyte.gz"
LABELS = REPO / "datasets" / "mnist" / "t10k-labels-idx1-ubyte.gz"


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fp_checkpoint(folder: Path) -> Path:
    """A full-precision training checkpoint (untrained weights) as `mininsnn train` writes it."""
    from mininsnn.config import make_config
    from mininsnn.train import Trainer
    path = folder / "fp.h5"
    save_checkpoint(path, Trainer(make_config("mnist-fp"), None, None).state())
    return path


def test_export_c_writes_the_pair_and_prints_the_sizes(tmp_path, capsys):
    assert main(["export", "mnist-4bit", "--format", "c", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["mnist_4bit.c", "mnist_4bit.h"]
    assert "weights and parameters 48490 bytes (const), state 30044 bytes (RAM)" in out
    assert "conv1: conv (16, 1, 6, 6)" in out


def test_export_npz_round_trips_and_infer_reads_it(tmp_path, capsys):
    assert main(["export", "fmnist-4bit", "--format", "npz", "--frac-bits", "4", "--out",
                 str(tmp_path), "--name", "f4"]) == 0
    model = load_integer_model(tmp_path / "f4.npz")
    assert [L.frac_bits for L in model.layers] == [4, 4, 4]
    capsys.readouterr()
    x = np.zeros((3, 28, 28), np.uint8)
    np.save(tmp_path / "x.npy", x)
    assert main(["infer", str(tmp_path / "f4.npz"), "--input", str(tmp_path / "x.npy"),
                 "--engine", "int-numpy", "--num-steps", "10"]) == 0
    assert "3 samples, T=10, engine int-numpy" in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["float", "int", "int-numpy"])
def test_infer_prints_accuracy_and_speed(engine, capsys):
    assert main(["infer", "mnist-4bit", "--input", str(IMAGES), "--labels", str(LABELS),
                 "--limit", "16", "--num-steps", "100", "--engine", engine]) == 0
    out = capsys.readouterr().out
    assert f"16 samples, T=100, engine {engine}: " in out and "accuracy 100.00%" in out


def bad(argv, capsys, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "out"
    fp = fp_checkpoint(tmp_path)
    before = snapshot(tmp_path)
    bad(["export", str(fp), "--out", str(out)], capsys, "full-precision model: pass bits")
    bad(["export", "mnist-4bit", "--frac-bits", "20", "--out", str(out)], capsys,
        "conv1: the shifted accumulator can reach 66044559360 > 2147483647")
    bad(["export", "mnist-4bit", "--frac-bits", "1,2", "--out", str(out)], capsys, "three integers")
    bad(["export", "nosuchmodel", "--out", str(out)], capsys, "not a run folder, a checkpoint")
    raw = pretrained.path_of("mnist-4bit").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 3])
    before = snapshot(tmp_path)
    bad(["export", str(tmp_path / "cut.npz"), "--out", str(out)], capsys, "cut.npz: not a readable")
    bad(["export", "mnist-4bit", "--name", "My-Net", "--out", str(out)], capsys, "C identifier")
    x = tmp_path / "x.npy"
    for arr, msg in ((np.zeros((2, 27, 28), np.uint8), "expected images (N, 28, 28)"),
                     (np.zeros((2, 28, 28), np.float32), "got dtype float32"),
                     (np.full((2, 28, 28), 256, np.int32), "values must lie in 0..255, got 256..256")):
        np.save(x, arr)
        bad(["infer", "mnist-4bit", "--input", str(x)], capsys, msg)
    x.unlink()
    bad(["infer", "mnist-4bit", "--input", str(tmp_path / "none.npy")], capsys, "no such file")
    bad(["infer", "mnist-4bit", "--input", str(IMAGES), "--labels", str(IMAGES), "--limit", "4"],
        capsys, "integer labels")
    bad(["infer", "mnist-4bit", "--input", str(IMAGES), "--engine", "float", "--frac-bits", "3"],
        capsys, "the float engine takes none")
    assert not out.exists()
    assert snapshot(tmp_path) == before


def test_export_full_precision_with_bits(tmp_path, capsys):
    fp = fp_checkpoint(tmp_path)
    assert main(["export", str(fp), "--bits", "8", "--out", str(tmp_path / "o"), "--name", "fp"]) == 0
    assert (tmp_path / "o" / "fp.c").is_file()
    shutil.rmtree(tmp_path / "o")


def test_infer_event_frames_with_each_engine(tmp_path, capsys):
    """A DVS-shaped model (no BatchNorm, counts as input): samples (N, T, 2, 32, 32)."""
    from mininsnn.config import make_config
    from mininsnn.train import Trainer
    save_checkpoint(tmp_path / "dvs.h5", Trainer(make_config("dvs-4bit"), None, None).state())
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (3, 12, 2, 32, 32)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2]))
    counts = {}
    for engine in ("float", "int", "int-numpy"):
        assert main(["infer", str(tmp_path / "dvs.h5"), "--input", str(tmp_path / "x.npy"),
                     "--labels", str(tmp_path / "y.npy"), "--engine", engine]) == 0
        out = capsys.readouterr().out
        assert f"3 samples, T=12, engine {engine}: " in out and "accuracy" in out
        counts[engine] = out
    np.save(tmp_path / "x.npy", x[:, :, :1])
    bad(["infer", str(tmp_path / "dvs.h5"), "--input", str(tmp_path / "x.npy")], capsys,
        "expected event counts (N, T, 2, 32, 32), got (3, 12, 1, 32, 32)")


def test_export_nir_writes_the_float_network_that_reads_back(tmp_path, capsys):
    pytest.importorskip("nir", reason="NIR export needs the optional extra 'nir'")
    from mininsnn import pretrained
    from mininsnn.nir import read_nir
    assert main(["export", "mnist-4bit", "--format", "nir", "--out", str(tmp_path)]) == 0
    assert f"wrote {tmp_path / 'mnist-4bit.nir'}" in capsys.readouterr().out
    x = (np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28)) / np.float32(255)).astype(
        np.float32)
    np.testing.assert_array_equal(read_nir(tmp_path / "mnist-4bit.nir").forward(x, num_steps=20),
                                  pretrained.load("mnist-4bit").forward(x, num_steps=20))
    bad(["export", "mnist-4bit", "--format", "nir", "--bits", "4", "--out", str(tmp_path / "b")],
        capsys, "takes none")
    assert not (tmp_path / "b").exists()


def test_a_same_step_reset_has_no_integer_engine_yet():
    from mininsnn.deploy.conversion import ConversionError, convert
    from mininsnn import pretrained
    state, config, _ = pretrained.read("mnist-4bit")
    with pytest.raises(ConversionError, match="reset_delay=False .* --format nir"):
        convert(state, {**config, "reset_delay": False})


def test_infer_reads_a_nir_graph(tmp_path, capsys):
    """A .nir SRC runs on the float engine: a mininsnn graph as its model would (pixels), a
    foreign one on any numbers, static (N, ...) or per step (N, T, ...), with --dt."""
    nir = pytest.importorskip("nir", reason="NIR needs the optional extra 'nir'")
    assert main(["export", "mnist-4bit", "--format", "nir", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["infer", str(tmp_path / "mnist-4bit.nir"), "--input", str(IMAGES), "--labels",
                 str(LABELS), "--limit", "16", "--engine", "float"]) == 0
    out = capsys.readouterr().out
    assert "16 samples, T=100, engine float: " in out and "accuracy 100.00%" in out
    W = np.eye(3, 4, dtype=np.float32) * 2                   # class k fires on input k
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([4])), "fc": nir.Affine(weight=W, bias=np.zeros(3)),
        "lif": nir.LIF(tau=np.full(3, 1e-3), r=np.full(3, 10.0), v_leak=np.zeros(3),
                       v_threshold=np.ones(3)),
        "output": nir.Output(output_type=np.array([3]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    nir.write(tmp_path / "f.nir", graph)                     # gain r dt / tau = 1 at dt = 1e-4
    y = np.array([0, 1, 2, 1])
    np.save(tmp_path / "y.npy", y)
    for name, x in (("static", np.eye(4, dtype=np.float32)[y]),
                    ("steps", np.repeat(np.eye(4, dtype=np.float32)[y][:, None], 6, axis=1))):
        np.save(tmp_path / f"{name}.npy", x)
        assert main(["infer", str(tmp_path / "f.nir"), "--input", str(tmp_path / f"{name}.npy"),
                     "--labels", str(tmp_path / "y.npy"), "--engine", "float"]) == 0
        out = capsys.readouterr().out
        assert f"4 samples, T={100 if name == 'static' else 6}, engine float" in out
        assert "accuracy 100.00%" in out
    bad(["infer", str(tmp_path / "f.nir"), "--input", str(tmp_path / "y.npy"), "--engine",
         "float"], capsys, "expected numbers (N, 4) or (N, T, 4)")
    bad(["infer", str(tmp_path / "f.nir"), "--input", str(tmp_path / "steps.npy"), "--engine",
         "float", "--dt", "1e-3"], capsys, "f.nir: ")       # gain 10: refused
