"""Studies and sweeps (mininsnn.tune, mininsnn.report) and the validation split they score on.

Real parts only: real worker processes, a real SQLite file, a real PostgreSQL server in a
throwaway cluster, real trainings (a few dozen MNIST images, T = 4, so each trial takes seconds).
Tests that need optuna skip with the reason when it is not installed (pip install -e ".[tune]");
the PostgreSQL test skips when the server binaries or a driver are missing.
"""
import glob
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from mininsnn.checkpoint import load_checkpoint
from mininsnn.cli import main
from mininsnn.config import ConfigError, make_config
from mininsnn.data import SampleRange, hold_out, load_data
from mininsnn.train import Trainer

REPO = Path(__file__).resolve().parents[1]
HAS_OPTUNA = importlib.util.find_spec("optuna") is not None
needs_optuna = pytest.mark.skipif(not HAS_OPTUNA, reason='optuna is not installed: '
                                                         'pip install -e ".[tune]"')
# 64 training images of which the last 32 are held out for validation; thresholds low enough
# that 4 time steps give output spikes, so trials differ from each other
TINY = ["--subset", "32", "--validation", "32", "--test-subset", "32", "--num-steps", "4",
        "--batch-size", "16", "--threshold", "0.5", "--epochs", "2"]
TIMING = ("seconds", "samples_per_s")


def mininsnn(*argv, wait=True, **kw):
    """``python -m mininsnn.cli ARGV`` in a new process, with this tree's package."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH",
                                                                                   "")]))
    cmd = [sys.executable, "-m", "mininsnn.cli", *map(str, argv)]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, **kw)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)


def load(folder: Path, storage=None, name=None):
    import optuna
    return optuna.load_study(study_name=name or folder.name,
                             storage=storage or f"sqlite:///{folder / 'study.db'}")


def states(study) -> dict:
    out = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def metrics(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def check_finished_study(folder: Path, study, n: int, logs: str = ""):
    """n trials COMPLETE or PRUNED, each trained exactly once in its own run folder; every
    failed trial is a surplus one (never trained) unless a worker was killed."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE",
                                                                            "PRUNED")]
    assert len(done) == n
    for t in done:
        run = folder / f"trial-{t.number:04d}"
        assert t.user_attrs["run_dir"] == str(run.resolve())
        commands = [line for line in (run / "command.txt").read_text().splitlines()
                    if line and not line.startswith("#")]
        assert commands == [t.user_attrs["command"]]                  # trained once
        epochs = json.loads((run / "config.json").read_text())["epochs"]
        assert len(metrics(run)) == (epochs if t.state.name == "COMPLETE" else
                                     t.user_attrs["epochs_done"])
        if t.state.name == "COMPLETE":
            assert t.value == max(r["valid_acc"] for r in metrics(run))  # scored on validation
    # run folders: those of the trials above, and of failed ones (killed) that had begun
    folders = {p.name for p in folder.glob("trial-*")}
    assert folders >= {f"trial-{t.number:04d}" for t in done}
    assert folders <= {f"trial-{t.number:04d}" for t in study.get_trials(deepcopy=False)
                       if "run_dir" in t.user_attrs}
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "FAIL" and "run_dir" not in t.user_attrs:
            assert "surplus" in t.user_attrs
    starts = [line.split(":", 1)[0] for line in logs.splitlines() if " -> " in line
              and line.startswith("trial ")]
    assert len(starts) == len(set(starts))                           # no trial started twice


# ---------------------------------------------------------------------------------------------
# optuna stays optional

def test_the_core_never_imports_optuna():
    code = ("import sys, mininsnn, mininsnn.cli, mininsnn.train, mininsnn.data, mininsnn.tune, "
            "mininsnn.report\n"
            "mininsnn.cli.build_parser()\n"
            "assert 'optuna' not in sys.modules, 'optuna imported'\n"
            "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr


def test_tune_without_optuna_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)        # `import optuna` -> ImportError
    assert main(["tune", str(tmp_path / "s"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install -e ".[tune]"' in err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------
# the validation split

@pytest.mark.slow
def test_hold_out_is_the_last_samples_and_never_trained_on():
    (full,) = load_data(make_config("mnist-4bit"), splits=("train",))
    cfg = make_config("mnist-4bit", validation=1000, subset=500)
    train, valid, test = load_data(cfg, splits=("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (500, 1000, 10000)
    np.testing.assert_array_equal(valid.images, full.images[-1000:])
    np.testing.assert_array_equal(train.images, full.images[:500])
    # the same held-out samples whatever the seed and the subset
    for other in (dict(seed=3), dict(subset=None)):
        (v2,) = load_data(make_config("mnist-4bit", validation=1000, **other), splits=("valid",))
        np.testing.assert_array_equal(v2.labels, valid.labels)
    # without a subset, training takes everything before the held-out samples
    (t2,) = load_data(make_config("mnist-4bit", validation=1000), splits=("train",))
    assert len(t2) == len(full) - 1000
    assert set(np.unique(valid.labels)) == set(range(10))            # every class held out
    with pytest.raises(ConfigError, match="no training samples"):
        load_data(make_config("mnist-4bit", validation=60000))
    with pytest.raises(ConfigError, match="--validation N"):
        load_data(make_config("mnist-4bit"), splits=("valid",))


@given(n=st.integers(1, 40), start=st.integers(0, 10), take=st.integers(1, 50))
def test_sample_range_is_a_view_of_its_samples(n, start, take):
    class Numbers:                              # any data set with __len__ and get_batch
        num_classes = 10

        def __len__(self):
            return 60

        def get_batch(self, idx):
            return np.asarray(idx) * 10, np.asarray(idx) % 10

    rest, held = hold_out(Numbers(), n)
    assert (len(rest), len(held)) == (60 - n, n)
    np.testing.assert_array_equal(held.get_batch(np.arange(n))[0], np.arange(60 - n, 60) * 10)
    part = SampleRange(Numbers(), start, 60).subset(take)
    assert len(part) == min(take, 60 - start)
    np.testing.assert_array_equal(part.get_batch(np.arange(len(part)))[0],
                                  (start + np.arange(len(part))) * 10)
    with pytest.raises(IndexError):
        part.get_batch([len(part)])


@pytest.fixture(scope="module")
def valid_data():
    cfg = make_config("mnist-4bit", subset=48, validation=48, test_subset=32, num_steps=4,
                      batch_size=16, threshold=0.5, epochs=3)
    return cfg, load_data(cfg, splits=("train", "valid", "test"))


@pytest.mark.slow
def test_the_trainer_scores_validation_every_epoch_and_best_follows_it(valid_data, tmp_path):
    cfg, (train, valid, test) = valid_data
    rows = []
    trainer = Trainer(cfg, train, test, run_dir=tmp_path / "r", valid_set=valid,
                      log=lambda m: None)
    trainer.prepare_run_dir("test")
    trainer.fit(on_epoch=lambda row: rows.append(dict(row)))
    history = trainer.history
    assert rows == history and [r["epoch"] for r in rows] == [1, 2, 3]
    for r in history:
        assert 0 <= r["valid_acc"] <= 1 and r["valid_loss"] > 0
    best = max(history, key=lambda r: (r["valid_acc"], -r["epoch"]))
    assert trainer.best["epoch"] == best["epoch"]
    assert load_checkpoint(tmp_path / "r" / "best.h5")["epoch"] == best["epoch"]
    # the validation accuracy is that of the held-out samples, evaluated afresh
    from mininsnn.train import evaluate
    assert evaluate(trainer.net, valid, cfg)["acc"] == history[-1]["valid_acc"]
    with pytest.raises(ConfigError, match="validation"):
        Trainer(cfg, train, test)                                    # the split must come along
    with pytest.raises(ConfigError, match="validation"):
        Trainer({**cfg, "validation": None}, train, test, valid_set=valid)


@pytest.mark.slow
def test_an_epoch_callback_stops_a_run_that_can_be_resumed(valid_data, tmp_path):
    cfg, (train, valid, test) = valid_data

    class Stop(Exception):
        pass

    def stop_after_first(row):
        raise Stop()

    t = Trainer(cfg, train, test, run_dir=tmp_path / "r", valid_set=valid, log=lambda m: None)
    t.prepare_run_dir("test")
    with pytest.raises(Stop):
        t.fit(on_epoch=stop_after_first)
    assert [r["epoch"] for r in metrics(tmp_path / "r")] == [1]
    argv = ["train", "--resume", str(tmp_path / "r")]
    assert main(argv) == 0                                           # an ordinary run folder
    straight = Trainer(cfg, train, test, valid_set=valid, log=lambda m: None)
    straight.fit()
    assert without_timing(metrics(tmp_path / "r")) == without_timing(straight.history)


# ---------------------------------------------------------------------------------------------
# search spaces and trial commands (no optuna needed)

from mininsnn import tune as T  # noqa: E402


def test_declarations_from_flags():
    assert T.parse_param("lr=1e-4:1e-2:log") == ("lr", {"low": 1e-4, "high": 1e-2, "log": True})
    assert T.parse_param("num-steps=10:50:10") == ("num_steps", {"low": 10, "high": 50,
                                                                 "step": 10})
    assert T.parse_param("loss=mse_count,ce_rate") == ("loss", {"choices": ["mse_count",
                                                                            "ce_rate"]})
    assert T.parse_param("bits=none,4") == ("bits", {"choices": [None, 4]})
    assert T.parse_param("grad_clip=true,false") == ("grad_clip", {"choices": [True, False]})
    base = make_config("mnist-4bit")
    space = T.check_space(dict([T.parse_param("seed=0:2"), T.parse_param("schedule=cosine,"
                                                                          "constant")]),
                          base, "--grid", grid=True)
    assert T.grid_points(space) == [{"seed": s, "schedule": k} for s in (0, 1, 2)
                                    for k in ("cosine", "constant")]
    assert T.check_space(T.PAPER_SPACE, base, "paper")["lr"] == {"low": 1e-4, "high": 1e-2,
                                                                  "log": True, "step": None}


def test_the_paper_space_encloses_every_paper_configuration():
    from mininsnn.config import CONFIGS
    for name, values in CONFIGS.items():
        for key, spec in T.PAPER_SPACE.items():
            v = make_config(name)[key]
            assert spec["low"] <= v <= spec["high"], (name, key, v)


BAD_SPACES = [
    ({"lrr": [1, 2]}, "unknown setting 'lrr'"),
    ({"beta": {"low": 0.9, "high": 1.5}}, "beta high: must be a finite number in [0, 1]"),
    ({"lr": {"low": 1e-2, "high": 1e-4}}, "low 0.01 must be below high 0.0001"),
    ({"lr": {"low": 0, "high": 1e-2, "log": True}}, "must be a finite number > 0"),
    ({"dropout": {"low": 0.0, "high": 0.5, "log": True}}, "a log range needs low > 0"),
    ({"lr": {"low": 1e-4}}, "expected [A, B, ...]"),
    ({"lr": "fast"}, "expected [A, B, ...]"),
    ({"schedule": {"low": 0, "high": 1}}, "takes one of a list of values"),
    ({"schedule": ["cosine", "sideways"]}, "must be one of"),
    ({"num_steps": {"low": 2.5, "high": 8}}, "low must be an integer"),
    ({"seed": [1, 1]}, "repeat a value"),
    ({"seed": []}, "non-empty list"),
    ({"incorrect_rate": {"low": 0.1, "high": 0.9}}, "must exceed incorrect_rate at every point"),
    ({"validation": [10, 20]}, "every trial must be scored on the same validation set"),
    ({"test_subset": [None, 10]}, "None cannot be given on the command line"),
]


@pytest.mark.parametrize("space, message", BAD_SPACES)
def test_a_bad_space_is_a_one_line_error(space, message):
    with pytest.raises(ConfigError) as e:
        T.check_space(space, make_config("mnist-4bit"), "space.json")
    assert message in str(e.value) and str(e.value).startswith("space.json")
    assert "\n" not in str(e.value)


def test_loss_targets_need_the_mse_count_loss():
    with pytest.raises(ConfigError, match="targets of the mse_count loss"):
        T.check_space({"correct_rate": {"low": 0.6, "high": 1.0}},
                      make_config("mnist-4bit", loss="ce_rate"), "--param")


@pytest.mark.parametrize("text, message", [
    ("lr", "expected KEY=LOW:HIGH"), ("lr=0.1", "one value is not a search"),
    ("lr=a:b", "'a' is not a number"), ("seed=1.5,2", "'1.5' is not an integer"),
    ("lr=1:2:3:4", "a range is LOW:HIGH"), ("nope=1,2", "unknown setting 'nope'")])
def test_a_bad_flag_declaration_is_a_one_line_error(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        T.parse_param(text)


floats01 = st.floats(0, 1, allow_nan=False, exclude_max=True)


@given(beta=st.floats(0, 1), threshold=st.floats(1e-6, 1e3), slope=st.floats(1e-3, 1e3),
       lr=st.floats(1e-9, 1.0), dropout=floats01, incorrect=st.floats(0, 0.5),
       bits=st.sampled_from([None, 2, 4, 8]), grad_clip=st.booleans(),
       schedule=st.sampled_from(["cosine", "constant", "warm_restarts"]),
       seed=st.integers(0, 2**31), steps=st.integers(1, 200))
def test_a_trial_command_parses_back_to_its_configuration(beta, threshold,
                                                          slope, lr, dropout, incorrect, bits,
                                                          grad_clip, schedule, seed, steps):
    cfg = make_config("fmnist-4bit", beta=beta, threshold=threshold, slope=slope, lr=lr,
                      dropout=dropout, incorrect_rate=incorrect, bits=bits,
                      grad_clip=grad_clip, schedule=schedule, seed=seed, num_steps=steps,
                      validation=100)
    argv = T.train_argv(cfg, "runs/x", data_dir="/data/fmnist")
    assert argv[:3] == ["train", "--config", "fmnist-4bit"] and argv[-2:] == ["--data-dir",
                                                                             "/data/fmnist"]
    # parse the command as a shell would split it, through the real command line
    from mininsnn.cli import build_parser
    from mininsnn.config import SETTINGS
    a = vars(build_parser().parse_args(shlex.split(shlex.join(argv))))
    assert make_config("fmnist-4bit", **{s.key: a[s.key] for s in SETTINGS if s.key in a}) == cfg


# ---------------------------------------------------------------------------------------------
# studies on real storages (need optuna)

@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory):
    """6 trials by 2 local worker processes (--workers 2) on one SQLite study."""
    folder = tmp_path_factory.mktemp("studies") / "two"
    r = mininsnn("tune", folder, *TINY, "--trials", 6, "--workers", 2, "--param",
                 "lr=1e-3:1e-1:log", "--param", "beta=0.5:0.99", "--sampler-seed", 0,
                 "--pruner", "none")
    return folder, r


@needs_optuna
@pytest.mark.slow
def test_two_sqlite_workers_finish_n_trials_each_once(sqlite_study):
    folder, r = sqlite_study
    assert r.returncode == 0, r.stdout + r.stderr
    study = load(folder)
    logs = "".join(p.read_text() for p in sorted((folder / "workers").glob("*.log")))
    check_finished_study(folder, study, 6, logs)
    assert states(study).get("COMPLETE") == 6
    workers = {t.user_attrs["worker"] for t in study.get_trials(deepcopy=False)
               if "worker" in t.user_attrs}
    assert len(workers) == 2                                    # both processes ran trials
    assert "6 of 6 trials finished" in r.stdout and "best: trial" in r.stdout
    values = [t.value for t in study.get_trials(deepcopy=False) if t.value is not None]
    losses = {metrics(folder / f"trial-{t.number:04d}")[-1]["train_loss"]
              for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}
    assert len(losses) > 1 and all(0 <= v <= 1 for v in values)    # the trials differ
    with sqlite3.connect(folder / "study.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@needs_optuna
@pytest.mark.slow
def test_a_trial_reruns_from_its_command_bit_for_bit(sqlite_study, tmp_path):
    folder, r = sqlite_study
    assert r.returncode == 0
    trial = folder / "trial-0001"
    command = [line for line in (trial / "command.txt").read_text().splitlines()
               if line.startswith("mininsnn train ")][0]
    argv = shlex.split(command)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert main(argv) == 0                     # in this process, with its Numba thread count
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == \
        json.loads((trial / "config.json").read_text())
    assert without_timing(metrics(tmp_path / "again")) == without_timing(metrics(trial))
    for f in ("last.h5", "best.h5"):
        a, b = load_checkpoint(trial / f), load_checkpoint(tmp_path / "again" / f)
        for k in a["model"]:
            np.testing.assert_array_equal(a["model"][k], b["model"][k], err_msg=k)


@needs_optuna
@pytest.mark.slow
def test_a_finished_study_given_more_trials_goes_on(sqlite_study, tmp_path):
    # rerunning the command continues the same study (here: in a copy, 6 -> 7 trials)
    folder, r = sqlite_study
    assert r.returncode == 0
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    r2 = mininsnn("tune", copy, *TINY, "--trials", 7, "--param", "lr=1e-3:1e-1:log",
                  "--param", "beta=0.5:0.99", "--pruner", "none")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert states(load(copy)) == {"COMPLETE": 7} and "trial-0006" in r2.stdout


@pytest.mark.slow
@needs_optuna
def test_a_trial_below_the_median_after_an_epoch_is_pruned(tmp_path):
    # five identical trials (same seed) that learn, then one that cannot (lr 1e-9): after its
    # first epoch its validation accuracy is below their median, so the median pruner stops it
    base = make_config("mnist-4bit", subset=32, validation=32, test_subset=32, num_steps=4,
                       batch_size=16, threshold=0.5, epochs=2)
    space = T.check_space({"lr": {"low": 1e-9, "high": 0.1, "log": True}}, base, "test")
    spec = T.StudySpec(kind="tune", folder=tmp_path / "p", name="p",
                       storage=T.default_storage(tmp_path / "p"), base=base, space=space,
                       trials=6, pruner="median", log=lambda m: None)
    study = T.open_study(spec)
    for lr in [0.05] * 5 + [1e-9]:
        study.enqueue_trial({"lr": lr})
    T.run_worker(spec)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5 + ["PRUNED"]
    assert trials[-1].intermediate_values[1] < trials[0].intermediate_values[1]
    assert trials[-1].user_attrs["epochs_done"] == 1
    assert len(metrics(tmp_path / "p" / "trial-0005")) == 1     # stopped with its files written
    check_finished_study(tmp_path / "p", study, 6)


def _pg_bin():
    """The folder of initdb and pg_ctl: Debian's /usr/lib/postgresql/<version>/bin (the newest
    version), else wherever PATH has them."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(x) if x.isdigit() else x
                                  for x in Path(p).parts[-3].split(".")])
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return None if initdb is None else Path(initdb).parent


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster listening on a unix socket in a temporary folder; the URL
    of its database. The server runs as the `postgres` user when the tests run as root
    (initdb refuses root). Removed afterwards."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (initdb, pg_ctl): apt-get install "
                    "postgresql")
    if not any(importlib.util.find_spec(d) for d in ("psycopg", "psycopg2")):
        pytest.skip('no PostgreSQL driver: pip install -e ".[postgres]"')
    as_user, owner = [], None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no 'postgres' user to run the server "
                        "(initdb refuses root)")
        as_user = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else None
        if as_user is None:
            pytest.skip("running as root without runuser to start the server as 'postgres'")
    d = Path(tempfile.mkdtemp(prefix="mininsnn-pg-"))
    if owner is not None:
        os.chown(d, owner.pw_uid, owner.pw_gid)
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], check=True,
                                      capture_output=True, text=True, timeout=120)
    try:
        run(bin_dir / "initdb", "-D", d / "data", "-A", "trust", "-U", "mininsnn", "--no-sync")
        run(bin_dir / "pg_ctl", "-D", d / "data", "-l", d / "server.log", "-w", "-o",
            f"-k {d} -c listen_addresses='' -F", "start")
        yield f"postgresql://mininsnn@/postgres?host={d}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(d / "data"), "-m",
                        "immediate", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(d, ignore_errors=True)


@needs_optuna
@pytest.mark.slow
def test_two_workers_on_postgresql(postgres_url, tmp_path):
    folder = tmp_path / "pg"
    r = mininsnn("tune", folder, *TINY, "--storage", postgres_url, "--trials", 4, "--workers", 2,
                 "--param", "lr=1e-3:1e-1:log", "--pruner", "none")
    assert r.returncode == 0, r.stdout + r.stderr
    study = load(folder, storage=postgres_url.replace("postgresql://", "postgresql+" + next(
        d for d in ("psycopg", "psycopg2") if importlib.util.find_spec(d)) + "://"))
    logs = "".join(p.read_text() for p in sorted((folder / "workers").glob("*.log")))
    check_finished_study(folder, study, 4, logs)
    assert not (folder / "study.db").exists()              # nothing went to a SQLite file
    assert json.loads((folder / "study.json").read_text())["storage"].startswith("postgresql")


def test_the_postgres_fixture_prefers_the_debian_layout():
    debian = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not debian:
        pytest.skip("no Debian PostgreSQL package here (/usr/lib/postgresql/<version>/bin)")
    assert _pg_bin().parent.parent == Path("/usr/lib/postgresql")


def _wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = pred()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@needs_optuna
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tune", "sweep"])
def test_a_killed_worker_s_trial_fails_and_the_study_goes_on(tmp_path, kind):
    import optuna
    folder = tmp_path / kind
    n = 4
    # epochs of ~0.5 s (TINY's take ~10 ms): the victim cannot finish its trial between the
    # poll that sees its first epoch done and the kill
    args = [kind, folder, *TINY, "--subset", 384, "--num-steps", 40, "--epochs", 3,
            "--heartbeat", 2]
    args += (["--trials", n, "--param", "lr=1e-3:1e-1:log", "--pruner", "none"]
             if kind == "tune" else ["--grid", "seed=0:3"])
    victim = mininsnn(*args, wait=False)
    survivor = None
    try:
        study = _wait(lambda: (folder / "study.json").exists() and load(folder), 120, "study")

        def victims_trial():             # running, with its first epoch done
            for t in study.get_trials(deepcopy=False):
                if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(
                        f":{victim.pid}") and t.user_attrs.get("epochs_done", 0) >= 1:
                    return t
        t = _wait(victims_trial, 180, "a trial of the victim")
        victim.send_signal(signal.SIGKILL)                 # mid-trial: no chance to tell
        victim.wait()
        survivor = mininsnn(*args, "--sampler-seed", 1, wait=False)
        out, _ = survivor.communicate(timeout=300)
    finally:
        for p in (victim, survivor):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert survivor.returncode == 0, out
    study = load(folder)
    killed = next(x for x in study.get_trials(deepcopy=False) if x.number == t.number)
    assert killed.state == optuna.trial.TrialState.FAIL and "surplus" not in killed.user_attrs
    # its run folder stays as it was: an ordinary run stopped after an epoch (resumable)
    assert 1 <= len(metrics(folder / f"trial-{t.number:04d}")) < 3
    check_finished_study(folder, study, n)
    if kind == "sweep":                                    # every grid point done once
        points = sorted(x.params["seed"] for x in study.get_trials(deepcopy=False)
                        if x.state.name == "COMPLETE")
        assert points == [0, 1, 2, 3]
    with sqlite3.connect(folder / "study.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2

def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@needs_optuna
@pytest.mark.parametrize("storage, message", [
    ("mongodb://localhost/x", "unknown database kind 'mongodb'"),
    ("not a url", "is not a database URL"),
    ("sqlite:////nonexistent/folder/study.db", "does not exist"),
])
def test_a_bad_storage_is_a_one_line_error(tmp_path, capsys, storage, message):
    err = _one_line_error(["tune", str(tmp_path / "s"), *TINY, "--storage", storage], capsys)
    assert message in err


@needs_optuna
def test_an_unreachable_database_is_a_one_line_error(tmp_path, capsys):
    if not any(importlib.util.find_spec(d) for d in ("psycopg", "psycopg2")):
        pytest.skip('no PostgreSQL driver: pip install -e ".[postgres]"')
    # port 1 on this machine: nothing listens there, the connection is refused at once
    err = _one_line_error(["tune", str(tmp_path / "s"), *TINY, "--storage",
                           "postgresql://someone:secret@127.0.0.1:1/nodb"], capsys)
    assert "cannot use the database" in err and "secret" not in err


@needs_optuna
def test_a_malformed_space_file_is_a_one_line_error(tmp_path, capsys):
    f = tmp_path / "space.json"
    f.write_text('{"lr": {"low": 1e-4, "high": 1e-2,}}')
    err = _one_line_error(["tune", str(tmp_path / "s"), *TINY, "--space", str(f)], capsys)
    assert f"search space {f}: not valid JSON" in err
    f.write_text('{"lr": {"low": 1e-4, "high": 1e-2}, "beta": {"high": 2}}')
    err = _one_line_error(["tune", str(tmp_path / "s"), *TINY, "--space", str(f)], capsys)
    assert "beta: expected" in err
    err = _one_line_error(["tune", str(tmp_path / "s"), *TINY, "--space", str(tmp_path / "no")],
                          capsys)
    assert "cannot read it" in err
    assert not (tmp_path / "s").exists()                    # nothing written


@needs_optuna
def test_other_bad_study_input_is_a_one_line_error(tmp_path, capsys):
    i = TINY.index("--validation")
    no_valid = TINY[:i] + TINY[i + 2:]
    assert "--validation N" in _one_line_error(["tune", str(tmp_path / "s"), *no_valid], capsys)
    assert "--lr fixes lr" in _one_line_error(["tune", str(tmp_path / "s"), *TINY, "--lr",
                                               "0.01", "--param", "lr=1e-4:1e-2"], capsys)
    assert "declare the grid" in _one_line_error(["sweep", str(tmp_path / "s"), *TINY], capsys)
    assert "--workers must be >= 1" in _one_line_error(["tune", str(tmp_path / "s"), *TINY,
                                                        "--workers", "0"], capsys)
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
@needs_optuna
def test_a_study_name_with_another_space_is_refused(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = ["tune", str(tmp_path / "a"), *TINY, "--trials", "1", "--storage", storage,
             "--study", "s", "--param", "lr=1e-3:1e-2:log"]
    assert main(first) == 0
    capsys.readouterr()
    other = ["tune", str(tmp_path / "b"), *TINY, "--trials", "1", "--storage", storage,
             "--study", "s", "--param", "lr=1e-3:1e-1:log"]
    err = _one_line_error(other, capsys)
    assert "study 's' in sqlite" in err and "another search space" in err and "lr.high" in err
    err = _one_line_error([*first[:-1], "lr=1e-3:1e-2:log", "--epochs", "3"], capsys)
    assert "another base configuration" in err and "epochs" in err
    # a study folder belongs to its study
    err = _one_line_error(["tune", str(tmp_path / "a"), *TINY, "--study", "t"], capsys)
    assert "holds study 's'" in err
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------
# sweeps and their report

@pytest.mark.slow
@needs_optuna
def test_a_sweep_trains_each_grid_point_once_and_reports_mean_and_sd(tmp_path, capsys):
    folder = tmp_path / "sweep"
    argv = ["sweep", str(folder), *TINY, "--grid", "seed=0,1,2", "--grid",
            "incorrect_rate=0,0.2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    study = load(folder)
    check_finished_study(folder, study, 6, out)
    points = sorted((t.params["seed"], t.params["incorrect_rate"])
                    for t in study.get_trials(deepcopy=False))
    assert points == [(s, r) for s in (0, 1, 2) for r in (0.0, 0.2)]
    assert main(argv) == 0                                  # done: a rerun trains nothing
    assert len(study.get_trials(deepcopy=False)) == 6
    capsys.readouterr()

    assert main(["report", str(folder)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split("  ")[0] == "setting" and "best valid" in table[0]
    for rate in (0.0, 0.2):
        runs = [folder / f"trial-{t.number:04d}" for t in study.get_trials(deepcopy=False)
                if t.params["incorrect_rate"] == rate]
        best = [100 * max(r["valid_acc"] for r in metrics(run)) for run in runs]
        final_test = [100 * metrics(run)[-1]["test_acc"] for run in runs]
        line = next(x for x in table if x.startswith(f"incorrect_rate={rate:.4g} "))
        assert f"{statistics.mean(best):.2f} ± {statistics.stdev(best):.2f}" in line
        assert line.rstrip().endswith(f"{statistics.mean(final_test):.2f} ± "
                                      f"{statistics.stdev(final_test):.2f}")
        assert "3 (0, 1, 2)" in line
    assert any(x.startswith("wrote ") for x in table)
    assert (folder / "report.png").stat().st_size > 0
