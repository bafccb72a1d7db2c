"""mininsnn.sources: every kind of model source turns into one record; a run stands for its best.h5,
else its last.h5; a source of no kind is one line naming it."""
import shutil

import numpy as np
import pytest

from mininsnn import pretrained
from mininsnn.checkpoint import save_checkpoint
from mininsnn.config import make_config
from mininsnn.deploy import save_integer_model
from mininsnn.sources import SourceError, resolve, run_checkpoint, run_checkpoints
from mininsnn.train import Trainer


@pytest.fixture(scope="module")
def tree():
    return Trainer(make_config("mnist-4bit", seed=3), None, None).state()


def test_a_run_stands_for_best_h5_else_last_h5(tmp_path, tree):
    run = tmp_path / "run"
    run.mkdir()
    assert run_checkpoint(run) is None and run_checkpoints(run) == []
    save_checkpoint(run / "last.h5", tree)
    assert run_checkpoint(run) == run / "last.h5"
    save_checkpoint(run / "best.h5", tree)
    assert run_checkpoint(run) == run / "best.h5"
    assert run_checkpoints(run) == [run / "best.h5", run / "last.h5"]
    found = resolve(run)
    assert (found.kind, found.label, found.path) == ("float", "run", run / "best.h5")
    assert found.config["seed"] == 3
    assert all(np.array_equal(found.model[k], v) for k, v in tree["model"].items())
    assert resolve(run / "last.h5").path == run / "last.h5"


def test_names_and_files_of_each_kind(tmp_path):
    found = resolve("mnist-4bit")
    assert (found.kind, found.label, found.path) == ("float", "mnist-4bit",
                                                     pretrained.path_of("mnist-4bit"))
    state, config, _ = pretrained.read("mnist-4bit")
    assert found.config == config and found.model.keys() == state.keys()
    copy = tmp_path / "copy.npz"
    shutil.copy(pretrained.path_of("fmnist-4bit"), copy)
    found = resolve(copy)
    assert (found.kind, found.label, found.path) == ("float", "copy", copy)
    save_integer_model(pretrained.load_integer("mnist-4bit"), tmp_path / "int.npz")
    found = resolve(tmp_path / "int.npz")
    assert (found.kind, found.config, found.label) == ("int", None, "int")
    assert found.model.describe() == pretrained.load_integer("mnist-4bit").describe()


def test_a_nir_file_is_read_by_the_reader_passed_in(tmp_path):
    (tmp_path / "g.nir").write_bytes(b"")
    calls = []

    def read_nir(path, dt):
        calls.append((path, dt))
        return "net"
    found = resolve(tmp_path / "g.nir", dt=1e-3, read_nir=read_nir)
    assert found == ("network", "net", None, "g", tmp_path / "g.nir")
    assert calls == [(tmp_path / "g.nir", 1e-3)]


def test_a_source_of_no_kind_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for src, hint, message in (
            ("nosuch", None, "nosuch is not a run folder, a checkpoint file or a pretrained "
                             "model (mnist-4bit, fmnist-4bit)"),
            (tmp_path / "nosuch", "a run folder or a checkpoint file",
             f"{tmp_path / 'nosuch'} does not exist; pass a run folder or a checkpoint file"),
            (tmp_path / "empty", None, f"{tmp_path / 'empty'} has no best.h5 or last.h5; pass a "
                                       "run folder, a checkpoint file or a pretrained model name")):
        with pytest.raises(SourceError) as e:
            resolve(src, hint=hint)
        assert str(e.value) == message
