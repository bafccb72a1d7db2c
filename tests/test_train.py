"""The trainer (mininsnn.train): exact resume, the per-batch recipe, run-folder files, config checks.

Runs are tiny (a few dozen MNIST images, a handful of time steps) so the whole file stays fast.
"""
import csv
import io
import json
import math

import numpy as np
import pytest

from mininsnn.checkpoint import load_checkpoint
from mininsnn.schedule import cosine
from mininsnn.train import (ConfigError, Progress, Trainer, check_new_run_dir, check_same_config,
                            load_data, load_run, make_config, validate_config)

TINY = dict(subset=48, test_subset=32, num_steps=4, batch_size=16)


@pytest.fixture(scope="module")
def data():
    cfg = make_config("mnist-4bit", **TINY)
    return load_data(cfg)


def tiny_config(**kw):
    # dropout 0.5 so that the dropout RNG visibly matters; T_max 4 so the cosine moves every batch
    return make_config("mnist-4bit", **{**TINY, "dropout": 0.5, "T_max": 4, "epochs": 2, **kw})


def assert_same_state(a: dict, b: dict):
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    for k in a["model"]:
        np.testing.assert_array_equal(a["model"][k], b["model"][k], err_msg=k)
    for m in ("exp_avg", "exp_avg_sq"):
        for k in a["optimizer"][m]:
            np.testing.assert_array_equal(a["optimizer"][m][k], b["optimizer"][m][k], err_msg=k)
    assert a["rng"] == b["rng"]
    assert a["schedule"] == b["schedule"]
    timing = ("seconds", "samples_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in a["history"]] == \
           [{k: v for k, v in r.items() if k not in timing} for r in b["history"]]


@pytest.mark.parametrize("schedule", ["cosine", "halve_on_rise"])
def test_resume_is_bit_identical(tmp_path, data, schedule):
    train, test = data
    cfg = tiny_config(schedule=schedule)
    straight = Trainer(cfg, train, test, run_dir=tmp_path / "straight", log=lambda m: None)
    straight.prepare_run_dir("test")
    straight.fit(2)

    first = Trainer({**cfg, "epochs": 1}, train, test, run_dir=tmp_path / "split",
                    log=lambda m: None)
    first.prepare_run_dir("test")
    first.fit()
    tree = load_run(tmp_path / "split")
    assert tree["epoch"] == 1
    resumed = Trainer(cfg, train, test, run_dir=tmp_path / "split", log=lambda m: None)
    resumed.load_state(tree)
    resumed.prepare_run_dir("test resume")
    resumed.fit()
    assert_same_state(straight.state(), resumed.state())
    assert_same_state(load_checkpoint(tmp_path / "straight" / "last.h5"),
                      load_checkpoint(tmp_path / "split" / "last.h5"))
    assert (tmp_path / "straight" / "steps.csv").read_text().splitlines() == \
           (tmp_path / "split" / "steps.csv").read_text().splitlines()


def test_resume_test_is_sensitive_to_the_dropout_rng(data):
    # the bit-identity above is not vacuous: a different dropout stream changes the weights
    train, test = data
    cfg = tiny_config()
    a = Trainer({**cfg, "epochs": 1}, train, test, log=lambda m: None)
    a.fit()
    tree = a.state()
    b = Trainer(cfg, train, test, log=lambda m: None)
    b.load_state(tree)
    c = Trainer(cfg, train, test, log=lambda m: None)
    c.load_state(tree)
    c.net.rng.random()                                    # one draw off the saved stream
    b.fit()
    c.fit()
    assert any(not np.array_equal(b.net.params[k], c.net.params[k]) for k in b.net.params)


def test_lr_of_batch_k_follows_the_schedule(tmp_path, data):
    train, test = data
    cfg = tiny_config()
    t = Trainer(cfg, train, test, run_dir=tmp_path, log=lambda m: None)
    t.prepare_run_dir("test")
    t.fit()
    with open(tmp_path / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(6))        # 48 / 16 = 3 batches x 2
    assert [int(r["epoch"]) for r in rows] == [1, 1, 1, 2, 2, 2]
    for r in rows:
        assert float(r["lr"]) == cosine(int(r["step"]), cfg["lr"], 4)
    assert t.opt.lr == cosine(5, cfg["lr"], 4)
    assert t.opt.step_count == 6


def test_last_partial_batch_is_kept(data):
    train, test = data
    t = Trainer(make_config("mnist-4bit", **{**TINY, "batch_size": 20}), train, test,
                log=lambda m: None)
    assert len(t.batches) == 3                                     # 20 + 20 + 8
    t.fit()
    assert t.step == 3


def test_weight_clip_happens_before_the_adam_step(data):
    # mnist-fp clips weights to [-1, 1] BEFORE the step: a weight at 5 ends one Adam step (of size
    # ~lr) away from 1, not at 1 (clip after the step) nor near 5 (no clip)
    train, test = data
    t = Trainer(make_config("mnist-fp", **TINY), train, test, log=lambda m: None)
    assert t.config["weight_clip"] and t.config["grad_clip"]
    t.net.params["conv1.weight"][0, 0, 2, 2] = 5.0
    x, y = train.get_batch(np.arange(16))
    t.train_step(x, y)
    w = float(t.net.params["conv1.weight"][0, 0, 2, 2])
    lr = t.config["lr"]
    assert w != 1.0
    assert abs(w - 1.0) <= 1.001 * lr
    assert np.abs(t.net.params["fc1.weight"]).max() <= 1.0 + 1.001 * lr


def test_grad_clip_bounds_the_norm_given_to_adam(data):
    train, test = data
    t = Trainer(make_config("mnist-fp", **TINY, lr=1.0), train, test, log=lambda m: None)
    seen = []
    step = t.opt.step

    def spy(grads, lr=None):
        seen.append(math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values())))
        return step(grads, lr)

    t.opt.step = spy
    t.net.params["fc1.weight"][...] *= 50                 # large weights -> large gradients
    x, y = train.get_batch(np.arange(16))
    t.train_step(x, y)
    assert seen and seen[0] <= 1.0 + 1e-5


def test_evaluate_restores_mode_and_leaves_the_rng_alone(data):
    train, test = data
    t = Trainer(tiny_config(), train, test, log=lambda m: None)
    t.net.train()
    before = t.net.rng.bit_generator.state
    r = t.evaluate()
    assert t.net.training is True
    assert t.net.rng.bit_generator.state == before
    assert r["n"] == 32 and 0.0 <= r["acc"] <= 1.0
    assert set(r["rates"]) == {"lif1", "lif2", "lif3"}


def test_run_folder_files(tmp_path, data):
    train, test = data
    cfg = tiny_config()
    logged = []
    t = Trainer(cfg, train, test, run_dir=tmp_path, log=logged.append)
    t.prepare_run_dir("mininsnn train --epochs 2")
    t.fit()
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(json.dumps(t.config))
    assert (tmp_path / "command.txt").read_text() == "mininsnn train --epochs 2\n"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_acc", "test_acc", "test_loss", "lr", "seconds",
                "rate_lif1", "rate_lif2", "rate_lif3"):
        assert all(key in r for r in rows), key
    with open(tmp_path / "metrics.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["test_acc"]) for r in csv_rows] == [r["test_acc"] for r in rows]
    assert len(logged) == 2 and logged[0].startswith("epoch 1/2")
    best = load_checkpoint(tmp_path / "best.h5")
    best_epoch = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))["epoch"]
    assert best["epoch"] == best_epoch and best["best"]["epoch"] == best_epoch
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["config.json", "command.txt", "metrics.jsonl", "metrics.csv", "steps.csv", "last.h5",
         "best.h5"])


def test_resume_drops_rows_written_after_the_checkpoint(tmp_path, data):
    # a crash after some steps of epoch 2 leaves steps.csv / metrics ahead of last.h5
    train, test = data
    cfg = tiny_config(epochs=1)
    t = Trainer(cfg, train, test, run_dir=tmp_path, log=lambda m: None)
    t.prepare_run_dir("first")
    t.fit()
    with open(tmp_path / "steps.csv", "a") as f:
        f.write("3,2,0.1,9.9,0.0\n4,2,0.1,9.9,0.0\n")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2}\n')
    r = Trainer({**cfg, "epochs": 2}, train, test, run_dir=tmp_path, log=lambda m: None)
    r.load_state(load_run(tmp_path))
    r.prepare_run_dir("resume")
    steps = (tmp_path / "steps.csv").read_text().splitlines()
    assert len(steps) == 1 + 3 and "9.9" not in "".join(steps)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "command.txt").read_text() == "first\nresume\n"


def test_config_checks():
    with pytest.raises(ConfigError, match="unknown config key 'betta'"):
        make_config("mnist-4bit", betta=0.9)
    with pytest.raises(ConfigError, match="unknown config 'mnist'"):
        make_config("mnist")
    for key, bad in [("epochs", -1), ("epochs", 0), ("batch_size", 0), ("num_steps", 0),
                     ("lr", float("nan")), ("lr", 0.0), ("bits", 1), ("bits", 4.0),
                     ("schedule", "step"), ("subset", 0), ("seed", -1), ("T_max", 0),
                     ("eta_min", -1.0), ("loss", "hinge")]:
        with pytest.raises(ConfigError, match=key):
            make_config("mnist-4bit", **{key: bad})
    cfg = make_config("mnist-4bit", bits=None)
    assert cfg["bits"] is None and cfg["batch_size"] == 128 and cfg["num_steps"] == 100
    assert validate_config(json.loads(json.dumps(cfg))) == cfg          # lists back to tuples
    check_same_config(cfg, {**cfg, "epochs": 7}, "run")                 # epochs may change
    with pytest.raises(ConfigError, match="lr=0.0054"):
        check_same_config(make_config("mnist-4bit"), make_config("mnist-4bit", lr=1e-3), "run")


def test_run_dir_guards(tmp_path):
    check_new_run_dir(tmp_path / "new")                 # absent: fine
    check_new_run_dir(tmp_path)                         # empty: fine
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match="--resume"):
        check_new_run_dir(tmp_path)
    with pytest.raises(ConfigError, match="no last.h5"):
        load_run(tmp_path)
    (tmp_path / "last.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ConfigError, match="last.h5"):
        load_run(tmp_path)


def test_missing_data_dir_is_a_config_error(tmp_path):
    cfg = make_config("mnist-4bit")
    with pytest.raises(ConfigError, match="does not exist"):
        load_data(cfg, tmp_path / "nope")
    with pytest.raises(ConfigError, match="MNIST"):
        load_data(cfg, tmp_path)


def test_progress_is_silent_off_a_terminal_and_shows_rate_and_eta_on_one(monkeypatch):
    off = io.StringIO()
    p = Progress(100, "epoch 1/1", off)
    p.update(50, 0.5)
    p.close()
    assert off.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)     # the built-in bar
    on = Tty()
    p = Progress(100, "epoch 1/1", on)
    p.update(50, 0.25)
    assert "50/100" in on.getvalue() and "loss 0.2500" in on.getvalue()
    assert "samples/s" in on.getvalue() and "ETA" in on.getvalue()
    p.close()
