"""The command line (mininsnn.cli) and the example scripts: a smoke run, resume, eval, plot, and
bad input that must exit with code 2 without writing anything."""
import hashlib
import json
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from mininsnn import data
from mininsnn.checkpoint import load_checkpoint
from mininsnn.cli import main
from mininsnn.runs import machine

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--subset", "256", "--test-subset", "256", "--num-steps", "8", "--batch-size", "32"]
TINY = ["--subset", "64", "--test-subset", "32", "--num-steps", "4", "--batch-size", "16"]


def snapshot(folder: Path) -> dict:
    """path -> bytes of every file below ``folder``."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One 2-epoch CLI run shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    rc = main(["train", "--config", "mnist-4bit", "--epochs", "2", *SMOKE, "--out", str(out)])
    return rc, out


@pytest.mark.slow
def test_smoke_run_trains_and_writes_its_files(smoke_run):
    rc, out = smoke_run
    assert rc == 0
    for f in ("config.json", "command.txt", "metrics.jsonl", "metrics.csv", "steps.csv",
              "last.h5", "best.h5"):
        assert (out / f).is_file(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]          # the loss falls
    steps = (out / "steps.csv").read_text().splitlines()
    assert len(steps) == 1 + 2 * 8                                 # header + 2 epochs x 8 batches
    first, last = (float(s.split(",")[3]) for s in (steps[1], steps[-1]))
    assert last < first
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"] == "mnist-4bit" and cfg["subset"] == 256 and cfg["num_steps"] == 8
    assert "mininsnn train --config mnist-4bit --epochs 2" in (out / "command.txt").read_text()
    assert f"numpy {np.__version__}" in machine()            # the host each command ran on
    assert f"  on {machine()}  invoked as: " in (out / "command.txt").read_text()
    assert load_checkpoint(out / "last.h5")["epoch"] == 2


@pytest.mark.slow
def test_progress_is_quiet_when_stdout_is_not_a_terminal(tmp_path, capsys):
    rc = main(["train", "--epochs", "2", *TINY, "--out", str(tmp_path / "r")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert len(lines) == 4                          # header, one line per epoch, summary


@pytest.mark.slow
def test_resume_through_the_cli_is_bit_identical(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", "--epochs", "2", *TINY, "--out", str(straight)]) == 0
    assert main(["train", "--epochs", "1", *TINY, "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "2"]) == 0
    a, b = load_checkpoint(straight / "last.h5"), load_checkpoint(split / "last.h5")
    for k in a["model"]:
        np.testing.assert_array_equal(a["model"][k], b["model"][k], err_msg=k)
    assert a["rng"] == b["rng"] and a["step"] == b["step"] == 8
    assert len((split / "command.txt").read_text().strip().splitlines()) == 4   # 2 commands


@pytest.mark.slow
def test_a_run_stopped_in_its_first_epoch_resumes_from_scratch(tmp_path, capsys):
    # a crash before epoch 1 ends leaves config.json, command.txt and part of steps.csv but no
    # checkpoint: --resume must start it over with its saved config, not send the user in circles
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert main(["train", "--epochs", "1", *TINY, "--lr", "0.01", "--out", str(straight)]) == 0
    assert main(["train", "--epochs", "1", *TINY, "--lr", "0.01", "--out", str(crashed)]) == 0
    for f in ("last.h5", "best.h5", "metrics.jsonl", "metrics.csv"):
        (crashed / f).unlink()
    steps = (crashed / "steps.csv").read_text().splitlines()
    (crashed / "steps.csv").write_text("\n".join(steps[:3]) + "\n")        # 2 batches logged
    assert main(["train", "--epochs", "1", *TINY, "--out", str(crashed)]) == 2   # no overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(crashed), "--epochs", "1"]) == 0
    assert "resuming after epoch 0" in capsys.readouterr().out
    a, b = load_checkpoint(straight / "last.h5"), load_checkpoint(crashed / "last.h5")
    assert b["config"]["lr"] == 0.01                                   # the saved config
    for k in a["model"]:
        np.testing.assert_array_equal(a["model"][k], b["model"][k], err_msg=k)
    assert (straight / "steps.csv").read_text() == (crashed / "steps.csv").read_text()


@pytest.mark.slow
def test_eval_and_plot(smoke_run, tmp_path, capsys):
    rc, out = smoke_run
    assert rc == 0
    assert main(["eval", str(out), "--test-subset", "64"]) == 0
    text = capsys.readouterr().out
    assert "best.h5" in text and "last.h5" in text and "test accuracy" in text
    assert main(["eval", str(out / "last.h5"), "--test-subset", "64"]) == 0
    pytest.importorskip("matplotlib")
    assert main(["plot", str(out), "--out", str(tmp_path / "plots")]) == 0
    for f in ("curves.png", "lr.png", "raster.png"):
        assert (tmp_path / "plots" / f).read_bytes()[:4] == b"\x89PNG", f


BAD = [
    ["train", "--bogus"],
    ["train", "--epochs", "-1"],
    ["train", "--epochs", "0"],
    ["train", "--batch-size", "0"],
    ["train", "--num-steps", "0"],
    ["train", "--bits", "1"],
    ["train", "--lr", "nan"],
    ["train", "--schedule", "step"],
    ["train", "--config", "nope"],
    ["train", "--subset", "0"],
    ["train", "--loss", "hinge"],
    ["train", "--correct-rate", "1.5"],
    ["train", "--correct-rate", "0.1"],                # below the incorrect rate 0.2
    ["train", "--loss", "ce_count", "--incorrect-rate", "0.1"],   # rates are mse_count's
    ["train", "--data-dir", "does/not/exist"],
    ["train", "--data-dir", "."],                    # a folder without the MNIST files
    ["train", "--resume", "no/such/run"],
    ["train", "--branch", "no/such/run", "--out", "new"],
    ["eval", "no/such/run"],
    ["plot", "no/such/run"],
    ["compare", "no/such/run", "--out", "c.png"],
    ["compare", ".", "--out", "c.png"],
    ["frobnicate"],
    [],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) or "empty" for a in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                      # the default run folder would land here
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_resume_with_another_config_is_refused_and_changes_nothing(smoke_run, capsys):
    rc, out = smoke_run
    assert rc == 0
    before = snapshot(out)
    for argv in (["--batch-size", "64", "--epochs", "3"], ["--bits", "none", "--epochs", "3"],
                 ["--config", "mnist-fp", "--epochs", "3"], ["--epochs", "2"],
                 ["--loss", "ce_count", "--epochs", "3"], ["--correct-rate", "0.9", "--epochs", "3"],
                 ["--out", str(out.parent / "elsewhere"), "--epochs", "3"]):
        assert main(["train", "--resume", str(out), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert snapshot(out) == before


@pytest.mark.slow
def test_existing_run_is_never_overwritten(smoke_run, capsys):
    rc, out = smoke_run
    before = snapshot(out)
    assert main(["train", *TINY, "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert snapshot(out) == before


@pytest.mark.slow
def test_damaged_checkpoint_is_reported_and_kept(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--epochs", "1", *TINY, "--out", str(run)]) == 0
    data = (run / "last.h5").read_bytes()
    (run / "last.h5").write_bytes(data[: len(data) // 3])
    before = snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    assert "last.h5" in capsys.readouterr().err
    assert main(["eval", str(run / "last.h5")]) == 2
    assert snapshot(run) == before


def run_example(name, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "examples" / name), run_name="__main__")
    return e.value.code


@pytest.mark.slow
def test_example_mnist_runs_the_reference_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_example("train_mnist.py", ["--epochs", "1", *TINY], monkeypatch) == 0
    run = tmp_path / "runs" / "mnist-4bit-seed0"                  # the default run folder
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"] == "mnist-4bit" and cfg["bits"] == 4 and cfg["lr"] == 5.4e-3
    assert run_example("train_mnist.py", ["--epochs", "x"], monkeypatch) == 2


def test_example_fmnist_uses_its_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.mkdir("empty")
    # whatever this machine holds, every other place Fashion-MNIST could come from is empty
    monkeypatch.setenv("MININSNN_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "empty",))
    assert run_example("train_fmnist.py", ["--data-dir", "empty"], monkeypatch) == 2
    assert "Fashion-MNIST" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["empty"]


def test_a_named_data_dir_is_the_only_place_looked_at(tmp_path, monkeypatch, capsys):
    """A system copy of Fashion-MNIST (here four files with the official names) is not used
    when --data-dir names a folder, even an empty one."""
    system = tmp_path / "system"
    system.mkdir()
    for stem in data.FASHION_MNIST_SHA256:
        (system / (stem + ".gz")).write_bytes(b"not the official file")
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", (system,))
    monkeypatch.setenv("MININSNN_DATA", str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    assert main(["train", "--config", "fmnist-4bit", "--data-dir", str(tmp_path / "empty"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and f"in {tmp_path / 'empty'} (" in err
    assert not out.exists()


@pytest.mark.slow
def test_the_run_records_its_data_files(smoke_run):
    _, out = smoke_run
    record = json.loads((out / "data.json").read_text())["data_files"]
    assert sorted(record) == ["test", "train"]
    mnist = REPO / "datasets" / "mnist"
    for split, stem in (("train", "train"), ("test", "t10k")):
        files = [mnist / f"{stem}-images-idx3-ubyte.gz", mnist / f"{stem}-labels-idx1-ubyte.gz"]
        assert record[split] == [{"path": str(f.resolve()), "bytes": f.stat().st_size,
                                  "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
                                 for f in files]


@pytest.mark.slow
def test_keep_epochs_flag(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", "mnist-4bit", "--epochs", "1", *SMOKE, "--keep-epochs",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "epochs").iterdir()) == ["epoch001.h5"]
    assert load_checkpoint(out / "epochs" / "epoch001.h5")["epoch"] == 1


@pytest.mark.slow
def test_branch_through_the_cli(smoke_run, tmp_path, capsys):
    rc, src = smoke_run
    before = snapshot(src)
    new = tmp_path / "wr"
    for argv in (["--schedule", "warm_restarts", "--epochs", "3"],              # no --out
                 ["--schedule", "constant", "--epochs", "3", "--out", str(new)],  # lr differs
                 ["--schedule", "warm_restarts", "--lr", "1e-3", "--epochs", "3", "--out",
                  str(new)],
                 ["--schedule", "warm_restarts", "--epochs", "1", "--out", str(new)],
                 ["--resume", str(src), "--epochs", "3", "--out", str(new)]):
        assert main(["train", "--branch", str(src / "best.h5"), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    assert not new.exists()
    assert main(["train", "--branch", str(src / "best.h5"), "--schedule", "warm_restarts",
                 "--epochs", "3", "--out", str(new)]) == 0
    assert snapshot(src) == before
    rows = [json.loads(line) for line in (new / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert len((new / "steps.csv").read_text().splitlines()) == 1 + 3 * 8
    assert json.loads((new / "config.json").read_text())["schedule"] == "warm_restarts"
    assert (new / "command.txt").read_text().startswith("# branched from ")
    assert load_checkpoint(new / "last.h5")["epoch"] == 3


@pytest.mark.slow
def test_compare_draws_several_runs(smoke_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc, out = smoke_run
    png = tmp_path / "cmp" / "c.png"
    assert main(["compare", str(out), str(out), "--labels", "a,b", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", str(out), "--labels", "a,b", "--out", str(tmp_path / "x.png")]) == 2
    assert "label" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_loss_flags_reach_the_run(tmp_path, capsys):
    """--loss and the mse_count target rates are saved in the run's config and used: the loss
    logged for the first batch is the chosen loss of that batch's first forward pass."""
    from mininsnn import loss as L
    from mininsnn.data import BatchIterator
    from mininsnn.config import validate_config
    from mininsnn.data import load_data
    from mininsnn.train import build_net, forward

    runs = {"ce": (["--loss", "ce_count"], lambda s, y: L.ce_count_loss(s, y)[0]),
            "mse": (["--correct-rate", "0.9", "--incorrect-rate", "0.05"],
                    lambda s, y: L.mse_count_loss(s, y, 0.9, 0.05)[0])}
    logged = {}
    for name, (flags, loss_fn) in runs.items():
        out = tmp_path / name
        assert main(["train", "--epochs", "1", *TINY, *flags, "--out", str(out)]) == 0
        cfg = validate_config(json.loads((out / "config.json").read_text()))
        assert cfg["loss"] == {"ce": "ce_count", "mse": "mse_count"}[name]
        if name == "mse":
            assert (cfg["correct_rate"], cfg["incorrect_rate"]) == (0.9, 0.05)
        train_set, _ = load_data(cfg)
        x, y = next(iter(BatchIterator(train_set, cfg["batch_size"], shuffle=True,
                                       seed=cfg["seed"]).epoch(0)))
        net = build_net(cfg)
        net.train()
        expected = loss_fn(forward(net, x, cfg["num_steps"]), y)
        logged[name] = float((out / "steps.csv").read_text().splitlines()[1].split(",")[3])
        assert logged[name] == pytest.approx(expected, rel=1e-12), name
    assert logged["ce"] != pytest.approx(logged["mse"])
    assert "loss ce_count" in capsys.readouterr().out


def test_every_setting_has_a_flag_that_reaches_the_run_config(tmp_path):
    """The train flags are made from mininsnn.config.SETTINGS: each one lands in the run's
    configuration under its own key (so a new setting needs no CLI code)."""
    from mininsnn import cli
    from mininsnn.commands import train
    from mininsnn.config import SETTINGS, make_config

    base = make_config("mnist-4bit")
    for s in SETTINGS:
        if s.help is None:
            continue
        v = base[s.key]
        choices = getattr(s.check, "choices", None)
        if isinstance(v, bool):
            argv, want = [s.flag if not v else "--no-" + s.flag[2:]], not v
        elif choices is not None:
            want = next(c for c in choices() if c != v)
            argv = [s.flag, want]
        elif s.key == "bits":
            argv, want = [s.flag, "none"], None
        elif s.key == "model":                      # a spec: recorded itself, not its name
            from mininsnn.spec import resolve_spec
            argv, want = [s.flag, "qsnn-mnist"], resolve_spec("qsnn-mnist")[0]
        elif isinstance(s.default, float):
            want = v / 2 if v else 0.25
            argv = [s.flag, repr(want)]
        else:
            want = (v or 1) + 1
            argv = [s.flag, str(want)]
        a = cli.build_parser().parse_args(["train", *argv, "--out", str(tmp_path / s.key)])
        cfg, *_ = train.train_config(vars(a))
        assert cfg[s.key] == want, (s.key, argv)
        assert {k for k in cfg if cfg[k] != base[k]} == {s.key}, s.key


# -- --out must be writable: checked before any data is loaded ------------------------------------

@pytest.fixture
def no_data(monkeypatch):
    def load_data(*a, **k):
        raise AssertionError("the data were loaded before the --out check")
    monkeypatch.setattr("mininsnn.data.load_data", load_data)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_out_below_a_file_or_in_a_kernel_folder_exits_2(tmp_path, capsys, no_data):
    (tmp_path / "file").write_text("x")
    for out, msg in [(tmp_path / "file" / "sub" / "run", f"run folder {tmp_path}/file/sub/run lies below "
                                                          f"{tmp_path}/file, which is a file, not a folder"),
                     (tmp_path / "file", "exists and is not a folder"),
                     (Path("/proc/mininsnn-test/run"), "cannot write to /proc (to create run folder "
                                                       "/proc/mininsnn-test/run): ")]:
        assert main(["train", *TINY, "--out", str(out)]) == 2
        assert msg in one_line_error(capsys)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_out_in_a_folder_that_refuses_writes_exits_2(tmp_path, capsys, monkeypatch, no_data):
    # as root chmod does not stop writes: the folder's refusal is simulated at file creation
    def refused(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("mininsnn.runs.tempfile.mkstemp", refused)
    assert main(["train", *TINY, "--out", str(tmp_path / "a" / "run")]) == 2
    assert one_line_error(capsys) == (f"error: cannot write to {tmp_path} (to create run folder "
                                      f"{tmp_path}/a/run): Permission denied; choose another --out or "
                                      "fix its permissions\n")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_read_only_file_system(tmp_path, capsys):
    from tests.runcheck import mount_tmpfs, remount, unmount
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if not mount_tmpfs(mnt, "4m"):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        run = mnt / "run"
        assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
        remount(mnt, "ro")
        before = snapshot(run)
        capsys.readouterr()
        assert main(["train", *TINY, "--epochs", "1", "--out", str(mnt / "new")]) == 2
        assert "Read-only file system" in one_line_error(capsys)
        assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
        assert f"cannot write to {run}: Read-only file system" in one_line_error(capsys)
        assert main(["train", "--resume", str(run), "--epochs", "1"]) == 2    # nothing to repair
        assert "already trained 1 epoch(s); pass" in one_line_error(capsys)
        assert main(["eval", str(run), "--test-subset", "16"]) == 0          # reading still works
        assert snapshot(run) == before
    finally:
        unmount(mnt)
