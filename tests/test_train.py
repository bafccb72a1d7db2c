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
from mininsnn.config import ConfigError, check_same_config, make_config, validate_config
from mininsnn.data import load_data
from mininsnn.progress import Progress
from mininsnn.runs import check_new_run_dir, load_run
from mininsnn.train import Trainer, make_schedule_of, replay_schedule

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


@pytest.mark.slow
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


@pytest.mark.slow
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
                "rate_lif1", "rate_lif2", "rate_lif3", "zero_conv1", "zero_conv2", "zero_fc1"):
        assert all(key in r for r in rows), key
    for layer in t.net.layers:
        if layer.name in ("conv1", "conv2", "fc1"):
            q = np.rint(layer.params["weight"] / (np.abs(layer.params["weight"]).max() / 7))
            assert rows[-1]["zero_" + layer.name] == np.mean(q == 0)
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


@pytest.mark.slow
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
    (tmp_path / "metrics.jsonl").write_text("")        # the remains of a start killed early
    with pytest.raises(ConfigError, match="no run to resume.*delete the folder"):
        check_new_run_dir(tmp_path)
    with pytest.raises(ConfigError, match="no run to resume.*delete the folder"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{}")
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


def test_progress_off_a_terminal_writes_a_line_per_interval_and_on_one_a_bar(monkeypatch):
    off = io.StringIO()
    p = Progress(100, "epoch 1/1", off)
    p.update(50, 0.5)
    p.close()
    assert off.getvalue() == ""                     # a short epoch leaves the log alone

    now = [1000.0]
    monkeypatch.setattr("mininsnn.progress.time.perf_counter", lambda: now[0])
    off = io.StringIO()
    p = Progress(100, "epoch 3/20", off, every=60)
    for t, n in [(30, 20), (61, 20), (90, 20), (122, 20), (150, 20)]:
        now[0] = 1000.0 + t
        p.update(n, 0.125)
    p.close()
    lines = off.getvalue().splitlines()
    assert lines == ["  epoch 3/20: 40/100  loss 0.1250  1 samples/s  ETA 1:31",
                     "  epoch 3/20: 80/100  loss 0.1250  1 samples/s  ETA 0:30"]
    monkeypatch.undo()

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


# -- branches: a new run continued from another run's checkpoint with another schedule ------------

def straight_and_branch(tmp_path, data, first: dict, second: dict, at: int, epochs: int):
    """Run ``second`` straight for ``epochs``; run ``first`` for ``at`` epochs, branch it into
    ``second`` and finish. Returns (straight trainer, branch trainer)."""
    train, test = data
    quiet = lambda m: None  # noqa: E731
    straight = Trainer({**second, "epochs": epochs}, train, test, run_dir=tmp_path / "straight",
                       log=quiet)
    straight.prepare_run_dir("straight")
    straight.fit()
    src = Trainer({**first, "epochs": at}, train, test, run_dir=tmp_path / "src", log=quiet)
    src.prepare_run_dir("src")
    src.fit()
    br = Trainer({**second, "epochs": epochs}, train, test, run_dir=tmp_path / "branch", log=quiet)
    br.load_branch(load_run(tmp_path / "src"))
    br.prepare_branch_dir("branch", tmp_path / "src" / "last.h5")
    assert load_checkpoint(tmp_path / "branch" / "last.h5")["epoch"] == at   # resumable at once
    br.fit()
    return straight, br


@pytest.mark.slow
def test_branch_from_cosine_into_warm_restarts_equals_the_straight_run(tmp_path, data):
    # 3 batches per epoch, T_max = T_0 = 4: both give the same lr on batches 0..3, so a branch
    # after epoch 1 is allowed and must be bit-identical to warm restarts trained from the start
    straight, br = straight_and_branch(tmp_path, data, tiny_config(schedule="cosine"),
                                       tiny_config(schedule="warm_restarts"), at=1, epochs=3)
    assert_same_state(straight.state(), br.state())
    assert (tmp_path / "straight" / "steps.csv").read_text() == \
           (tmp_path / "branch" / "steps.csv").read_text()
    assert (tmp_path / "branch" / "command.txt").read_text().startswith("# branched from ")


@pytest.mark.slow
def test_branch_from_constant_into_halve_on_rise_replays_its_state(tmp_path, data):
    straight, br = straight_and_branch(tmp_path, data, tiny_config(schedule="constant"),
                                       tiny_config(schedule="halve_on_rise"), at=2, epochs=3)
    assert_same_state(straight.state(), br.state())
    assert br.schedule.prev_loss == straight.history[-1]["train_loss"]


@pytest.mark.slow
def test_keep_epochs_saves_every_epoch_and_a_kept_epoch_branches_like_last_h5(tmp_path, data):
    train, test = data
    quiet = lambda m: None  # noqa: E731
    src = Trainer(tiny_config(schedule="constant", epochs=3), train, test,
                  run_dir=tmp_path / "src", log=quiet, keep_epochs=True)
    src.prepare_run_dir("src")
    src.fit()
    kept = sorted(p.name for p in (tmp_path / "src" / "epochs").iterdir())
    assert kept == ["epoch001.h5", "epoch002.h5", "epoch003.h5"]
    assert [load_checkpoint(src.run.epoch_checkpoint(e))["epoch"] for e in (1, 2, 3)] == [1, 2, 3]
    assert_same_state(load_checkpoint(src.run.epoch_checkpoint(3)), load_run(tmp_path / "src"))

    straight = Trainer(tiny_config(schedule="halve_on_rise", epochs=3), train, test, log=quiet)
    straight.fit()
    br = Trainer(tiny_config(schedule="halve_on_rise", epochs=3), train, test, log=quiet)
    br.load_branch(load_checkpoint(src.run.epoch_checkpoint(2)))
    assert br.epoch == 2
    br.fit()
    assert_same_state(straight.state(), br.state())
    # without keep_epochs there is no epochs/ folder
    plain = Trainer(tiny_config(epochs=1), train, test, run_dir=tmp_path / "plain", log=quiet)
    plain.prepare_run_dir("plain")
    plain.fit()
    assert not (tmp_path / "plain" / "epochs").exists()


@pytest.mark.slow
def test_branch_is_refused_where_the_schedules_already_differ(tmp_path, data):
    train, test = data
    src = Trainer(tiny_config(schedule="cosine"), train, test, run_dir=tmp_path, log=lambda m: None)
    src.prepare_run_dir("src")
    src.fit(2)                              # batch 4 had lr 0 under cosine, lr0 under restarts
    br = Trainer(tiny_config(schedule="warm_restarts", epochs=3), train, test)
    with pytest.raises(ConfigError, match="batch 4 .epoch 2.*epoch 1 or earlier"):
        br.load_branch(load_run(tmp_path))
    with pytest.raises(ConfigError, match="lr="):              # the model may not change
        Trainer(tiny_config(schedule="cosine", lr=1e-3, epochs=3), train,
                test).load_branch(load_run(tmp_path))


def fake_tree(schedule: str, losses: list[float], steps_per_epoch: int = 10) -> dict:
    """A checkpoint tree's config, history and schedule state, as replay_schedule reads them."""
    cfg = make_config("mnist-4bit", schedule=schedule)
    sched = make_schedule_of(cfg)
    history = []
    for e, loss in enumerate(losses, 1):
        sched.end_epoch(loss)
        history.append({"epoch": e, "step": e * steps_per_epoch, "train_loss": loss})
    return {"config": cfg, "history": history, "step": len(losses) * steps_per_epoch,
            "schedule": sched.state_dict()}


def test_replay_schedule_follows_the_recorded_losses():
    cfg = make_config("mnist-4bit", schedule="halve_on_rise")
    # constant for two epochs whose loss rose: halve_on_rise would now halve (state lr0 / 2) ...
    s = replay_schedule(fake_tree("constant", [1.0, 2.0]), cfg)
    assert s.current_lr == cfg["lr"] / 2 and s.prev_loss == 2.0
    # ... but had it driven a third epoch it would have trained it at lr0 / 2, not lr0
    with pytest.raises(ConfigError, match="batch 20 .epoch 3."):
        replay_schedule(fake_tree("constant", [1.0, 2.0, 1.5]), cfg)
    # halve_on_rise -> constant is the same question from the other side
    with pytest.raises(ConfigError, match="batch 20"):
        replay_schedule(fake_tree("halve_on_rise", [1.0, 2.0, 1.5]),
                        make_config("mnist-4bit", schedule="constant"))
    # a history that does not lead to the saved schedule state is refused
    tree = fake_tree("halve_on_rise", [1.0, 2.0])
    tree["schedule"]["current_lr"] = cfg["lr"]
    with pytest.raises(ConfigError, match="does not replay"):
        replay_schedule(tree, cfg)


def one_epoch_run(folder, data, **kw):
    """The checkpoint tree of a tiny one-epoch run trained in ``folder``."""
    train, test = data
    t = Trainer(tiny_config(epochs=1, **kw), train, test, run_dir=folder, log=lambda m: None)
    t.prepare_run_dir("first")
    t.fit()
    return load_run(folder)


def test_checkpoints_from_before_quant_grad_still_resume_as_ste(tmp_path, data):
    train, test = data
    tree = one_epoch_run(tmp_path, data, quant_grad="ste")
    del tree["config"]["quant_grad"]              # as written before the key existed
    assert validate_config(tree["config"])["quant_grad"] == "ste"
    r = Trainer(tiny_config(epochs=2, quant_grad="ste"), train, test, log=lambda m: None)
    r.load_state(tree)
    with pytest.raises(ConfigError, match="quant_grad"):     # ste+scale is today's default
        Trainer(tiny_config(epochs=2), train, test).load_state(tree)
    with pytest.raises(ConfigError, match="quant_grad"):
        make_config("mnist-4bit", quant_grad="brevitas")


@pytest.mark.slow
def test_metrics_csv_takes_columns_that_older_rows_lack(tmp_path, data):
    train, test = data
    tree = one_epoch_run(tmp_path, data)
    tree["history"] = [{k: v for k, v in r.items() if not k.startswith("zero_")}
                       for r in tree["history"]]          # as written by an older version
    r = Trainer(tiny_config(epochs=2), train, test, run_dir=tmp_path, log=lambda m: None)
    r.load_state(tree)
    r.prepare_run_dir("resume")
    r.fit()
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["zero_fc1"] == "" and 0.0 <= float(rows[1]["zero_fc1"]) <= 1.0


# -- divergence: NaN or inf anywhere in the state stops the run; no bad checkpoint is written ----

def _poison(where: str, step: int, t: Trainer):
    """Wrap the part of the trainer that produces ``where`` so that batch ``step`` puts an inf
    into it, as a diverging run would."""
    net, opt = t.net, t.opt
    if where == "bn":
        real = net.forward

        def forward(*a, **k):
            out = real(*a, **k)
            if t.step == step:
                net.buffers["bn2.running_var"][5] = np.inf
            return out
        net.forward = forward
    elif where == "grad":
        real = net.backward

        def backward(d):
            out = real(d)
            if t.step == step:
                net.grads["conv1.weight"][0, 0, 1, 2] = np.nan
            return out
        net.backward = backward
    else:
        real = opt.step

        def step_(grads, lr=None):
            real(grads, lr)
            if t.step == step:
                (net.params if where == "weight" else opt.exp_avg_sq)["fc1.weight"][3, 7] = -np.inf
        opt.step = step_


@pytest.mark.parametrize("where, problem", [
    ("bn", "BatchNorm statistic bn2.running_var holds NaN or inf"),
    ("grad", "the gradient of conv1.weight holds NaN or inf"),
    ("weight", "weight fc1.weight holds NaN or inf"),
    ("adam", "Adam's second moment of fc1.weight holds NaN or inf"),
])
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data, where, problem):
    from mininsnn.train import TrainingError
    train, test = data
    cfg = tiny_config(epochs=3)                       # 3 batches per epoch
    t = Trainer(cfg, train, test, run_dir=tmp_path, log=lambda m: None)
    t.prepare_run_dir("test")
    _poison(where, 4, t)                              # batch 4: the second of epoch 2
    with pytest.raises(TrainingError) as e:
        t.fit()
    assert str(e.value) == (f"the run diverged at batch 4 (epoch 2): {problem}; epoch 1 is in "
                            f"{tmp_path / 'last.h5'}; start a new run with a smaller --lr than 0.0054")
    tree = load_run(tmp_path)                          # loads: finite, complete
    assert tree["epoch"] == 1 and load_checkpoint(tmp_path / "best.h5")["epoch"] == 1
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_state_with_nan_is_never_saved(tmp_path, data, monkeypatch):
    # with the per-batch checks off, the check before saving still refuses the state
    from mininsnn.train import TrainingError
    train, test = data
    t = Trainer(tiny_config(epochs=2), train, test, run_dir=tmp_path, log=lambda m: None)
    t.prepare_run_dir("test")
    t.fit(1)
    before = (tmp_path / "last.h5").read_bytes()
    monkeypatch.setattr(Trainer, "_check_finite", lambda self, what, arrays: None)
    _poison("adam", 5, t)                             # the last batch of epoch 2
    with pytest.raises(TrainingError, match=r"^the run diverged in epoch 2: its state: Adam exp_avg_sq "
                                            r"fc1.weight holds NaN or inf \(a diverged run\?\); epoch 1 is in "):
        t.fit()
    assert (tmp_path / "last.h5").read_bytes() == before


def test_lr_1e30_exits_1_with_one_line_and_writes_no_checkpoint(tmp_path, capsys):
    from mininsnn.cli import main
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--subset", "48", "--test-subset", "32", "--num-steps", "4",
                 "--batch-size", "16", "--lr", "1e30", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the run diverged at batch ") and err.count("\n") == 1
    assert "holds no checkpoint (no epoch had finished); start a new run with a smaller --lr than 1e+30" in err
    assert not (out / "last.h5").exists() and not (out / "best.h5").exists()


@pytest.mark.slow
@pytest.mark.parametrize("lr", ["1e300", "1e20"])
def test_a_diverged_run_prints_its_error_and_nothing_else(tmp_path, lr):
    """In a process of its own (pytest would catch NumPy's RuntimeWarnings), with every warning
    shown each time it occurs: the one-line error is all of stderr."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-W", "always", "-m", "mininsnn.cli", "train",
                          "--epochs", "2", "--subset", "48", "--test-subset", "32",
                          "--num-steps", "4", "--batch-size", "16", "--lr", lr,
                          "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith("error: the run diverged at batch ")
    assert out.stderr.count("\n") == 1, out.stderr
