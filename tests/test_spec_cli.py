"""A network described as data through the command line: ``--model SPEC`` on train, tune and
sweep; the run folder alone rebuilds its network (eval, plot, resume, export, infer); a bad spec
is one line naming the file, the layer and the field, exit 2, with nothing written."""
import json
import shlex
from pathlib import Path

import pytest

from mininsnn.checkpoint import load_checkpoint
from mininsnn.cli import build_parser, main
from mininsnn.config import SETTINGS, make_config
from mininsnn.spec import read_spec, resolve_spec

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO / "datasets" / "mnist"
TINY = ["--subset", "64", "--test-subset", "32", "--num-steps", "4", "--batch-size", "16"]
SMALL_MLP = {"name": "small-mlp", "input_shape": [1, 28, 28],
             "layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 32},
                        {"type": "Leaky"}, {"type": "Linear", "out_features": 10},
                        {"type": "Leaky", "beta": 0.95}]}
ROWS = {"name": "small-rows", "input_shape": [1, 28, 28], "input": "rows",
        "layers": [{"type": "Linear", "out_features": 16}, {"type": "RSynaptic", "alpha": 0.8},
                   {"type": "Linear", "out_features": 10}, {"type": "Leaky"}]}


def write(folder: Path, name: str, spec) -> Path:
    path = folder / name
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A 1-epoch run of a spec file, whose file is then deleted: the run must not need it."""
    folder = tmp_path_factory.mktemp("spec")
    path = write(folder, "mlp.json", SMALL_MLP)
    expected, _ = resolve_spec(str(path))
    out = folder / "run"
    rc = main(["train", "--config", "mnist-4bit", "--model", str(path), *TINY, "--out", str(out)])
    path.unlink()
    return rc, out, expected


def test_the_run_records_the_checked_spec_itself(mlp_run):
    rc, out, expected = mlp_run
    assert rc == 0
    cfg = load_checkpoint(out / "last.h5")["config"]
    assert cfg["model"] == expected and cfg["model"]["layers"][1]["shape"] == [32]
    assert json.loads((out / "config.json").read_text())["model"] == expected
    state = load_checkpoint(out / "last.h5")["model"]
    assert state["fc2.weight"].shape == (10, 32) and "conv1.weight" not in state


def test_the_run_folder_alone_rebuilds_its_network(mlp_run, tmp_path, capsys):
    rc, out, _ = mlp_run
    assert rc == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--test-subset", "32"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["infer", str(out), "--engine", "float", "--limit", "16", "--input",
                 str(MNIST / "t10k-images-idx3-ubyte.gz"), "--labels",
                 str(MNIST / "t10k-labels-idx1-ubyte.gz")]) == 0
    assert "16 samples, T=4, engine float" in capsys.readouterr().out
    assert main(["plot", str(out), "--no-raster", "--out", str(tmp_path / "plots")]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    assert load_checkpoint(out / "last.h5")["epoch"] == 2


def test_export_nir_of_a_spec_run_reads_back_to_the_same_spikes(mlp_run, tmp_path):
    pytest.importorskip("nir")
    import numpy as np

    from mininsnn.nir import read_nir
    from mininsnn.sources import resolve
    from mininsnn.train import build_net
    rc, out, _ = mlp_run
    assert main(["export", str(out), "--format", "nir", "--out", str(tmp_path)]) == 0
    (written,) = tmp_path.glob("*.nir")
    found = resolve(str(out))
    net = build_net(found.config)
    net.load_state_dict(found.model)
    back = read_nir(written)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    assert np.array_equal(net.eval().forward(x, num_steps=6), back.eval().forward(x, num_steps=6))


def test_a_recurrent_spec_reading_rows_trains_and_evaluates(tmp_path, capsys):
    path = write(tmp_path, "rows.json", ROWS)
    out = tmp_path / "run"
    tiny = ["--subset", "32", "--test-subset", "16", "--batch-size", "16", "--num-steps", "28"]
    assert main(["train", "--model", str(path), *tiny, "--out", str(out)]) == 0
    assert "small-rows-mnist-4bit" in capsys.readouterr().out
    state = load_checkpoint(out / "last.h5")["model"]
    assert state["rsyn1.W_rec"].shape == (16, 16)
    assert main(["eval", str(out), "--test-subset", "16"]) == 0
    assert "on 16 samples" in capsys.readouterr().out
    assert main(["plot", str(out), "--out", str(tmp_path / "plots")]) == 0    # raster by rows
    assert (tmp_path / "plots" / "raster.png").is_file()


def _with(layer: int, **fields) -> dict:
    layers = [dict(x) for x in SMALL_MLP["layers"]]
    layers[layer - 1].update(fields)
    return {**SMALL_MLP, "layers": layers}


BAD = [
    # (spec, extra flags, what the one line must say after the file name)
    (_with(2, type="Dense"), [], r"layer 2 (Dense): field 'type': unknown layer type 'Dense'"),
    ({**SMALL_MLP, "layers": SMALL_MLP["layers"][1:]}, [],
     "layer 1 (Linear): field 'type': expects a flat input"),
    (_with(3, beta=1.5), [], "layer 3 (Leaky): field 'beta': must be a finite number in [0, 1]"),
    (_with(2, out_features=0), [], "layer 2 (Linear): field 'out_features': must be an integer"),
    (_with(4, bits=40), [], "layer 4 (Linear): field 'bits': must be an integer in 2..16"),
    ({**SMALL_MLP, "input_shape": [2, 32, 32]}, [],
     "field 'input_shape': [2, 32, 32] does not match the mnist samples [1, 28, 28]"),
    (_with(4, out_features=11), [],
     "layer fc2 (Linear): field 'out_features': the network has 11 outputs, mnist 10 classes"),
    (ROWS, ["--num-steps", "8"], "field 'input': 'rows' feeds the 28 rows of an image as 28 "
                                 "time steps; num_steps must be 28, got 8"),
    ('{"input_shape": [1, 28, 28], "layers": [', [], "not JSON"),
]


@pytest.mark.parametrize("spec, flags, message", BAD)
def test_a_bad_spec_is_one_line_naming_file_layer_and_field_before_anything_is_written(
        tmp_path, capsys, spec, flags, message):
    path = write(tmp_path, "my.json", spec)
    out = tmp_path / "run"
    rc = main(["train", "--model", str(path), *TINY, *flags, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and f"{path}: " in err and message in err, err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.json"]


def test_a_missing_spec_file_or_unknown_name_is_one_line(tmp_path, capsys):
    assert main(["train", "--model", "qsnn-mnits", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qsnn-mnits: no such spec file, and not a built-in spec " \
                                    "(qsnn-mnist, qsnn-dvs)" in err
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_model(mlp_run, capsys):
    _, out, _ = mlp_run
    assert main(["train", "--resume", str(out), "--epochs", "9", "--model", "qsnn-mnist"]) == 2
    assert "drop --model" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["sweep", "tune"])
def test_studies_refuse_a_spec_that_does_not_fit_before_anything_is_written(tmp_path, capsys,
                                                                            kind):
    pytest.importorskip("optuna")
    path = write(tmp_path, "my.json", _with(4, out_features=11))
    extra = ["--grid", "seed=0,1"] if kind == "sweep" else ["--validation", "32"]
    assert main([kind, str(tmp_path / "study"), "--model", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: layer fc2 (Linear): field 'out_features'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.json"]


def test_a_trial_command_with_a_spec_parses_back_to_its_configuration(tmp_path):
    from mininsnn import tune
    spec, _ = resolve_spec(str(write(tmp_path, "rows.json", ROWS)))
    cfg = make_config("mnist-4bit", model=spec, num_steps=28, validation=100, lr=1e-3)
    argv = tune.train_argv(cfg, "runs/x")
    assert argv[argv.index("--model") + 1].startswith('{"name":"small-rows"')
    a = vars(build_parser().parse_args(shlex.split(shlex.join(argv))))
    assert make_config("mnist-4bit", **{s.key: a[s.key] for s in SETTINGS if s.key in a}) == cfg


def test_a_shipped_spec_trains_through_the_cli(tmp_path, capsys):
    """Every shipped example (examples/specs) fits its dataset's samples; mlp-mnist trains."""
    for path in sorted((REPO / "examples" / "specs").glob("*.json")):
        spec = read_spec(path)
        assert spec["input_shape"] == [1, 28, 28] and spec["layers"][-1]["shape"] == (10,)
    out = tmp_path / "run"
    assert main(["train", "--model", str(REPO / "examples" / "specs" / "mlp-mnist.json"),
                 *TINY, "--out", str(out)]) == 0
    assert (out / "best.h5").is_file()


def test_init_fine_tunes_a_nir_graph_from_its_weights(mlp_run, tmp_path, capsys):
    """--init model.nir: the graph becomes the run's spec, its weights the starting point."""
    pytest.importorskip("nir")
    import numpy as np

    from mininsnn.nir import read_nir
    rc, out, expected = mlp_run
    assert main(["export", str(out), "--format", "nir", "--out", str(tmp_path),
                 "--name", "g"]) == 0
    graph = read_nir(tmp_path / "g.nir")
    run = tmp_path / "tuned"
    assert main(["train", "--init", str(tmp_path / "g.nir"), *TINY, "--lr", "1e-12",
                 "--out", str(run)]) == 0
    tree = load_checkpoint(run / "last.h5")
    spec = tree["config"]["model"]
    assert spec["name"] == "g" and [l["name"] for l in spec["layers"]] == \
        [l["name"] for l in expected["layers"]]
    for k, v in graph.state_dict().items():                    # lr 1e-12: still the graph's
        np.testing.assert_allclose(tree["model"][k], v, atol=1e-8, err_msg=k)
    assert "--init" in (run / "command.txt").read_text()
    capsys.readouterr()
    assert main(["train", "--init", str(tmp_path / "g.nir"), "--model", "qsnn-mnist",
                 "--out", str(tmp_path / "x")]) == 2
    assert "drop --model" in capsys.readouterr().err
    assert main(["train", "--init", str(tmp_path / "g.nir"), "--config", "dvs-4bit",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'g.nir'}: field 'input_shape': [1, 28, 28] does not match the " \
           "dvsgesture samples [2, 32, 32]" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_integer_export_of_a_spec_run(mlp_run, tmp_path, capsys):
    """A spec run converts layer by layer (mininsnn.deploy.chain) to an integer model and C; the
    paper's layout as a built-in spec converts as before."""
    _, out, _ = mlp_run
    assert main(["export", str(out), "--format", "npz", "--out", str(tmp_path / "int")]) == 0
    assert main(["export", str(out), "--format", "c", "--out", str(tmp_path / "c")]) == 0
    assert "wrote" in capsys.readouterr().out
    paper = tmp_path / "paper"
    assert main(["train", "--model", "qsnn-mnist", *TINY, "--out", str(paper)]) == 0
    assert main(["export", str(paper), "--format", "npz", "--out", str(tmp_path / "int")]) == 0
    assert (tmp_path / "int" / "paper.npz").is_file()
