"""The experiments package that turns run records into experiments/REPORT.md and RESULTS.md: the
tables' numbers come from the metrics, their commands reproduce the runs, the JSON records that
stand in for checkpoints say what the checkpoints said, both files are what the records give,
and run artefacts stay out of git."""
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import RUNS, errors, headline, levels, make_report, records, \
    schedule_comparison, schedules, seeds, side_by_side, table
from mininsnn.cli import main
from mininsnn.runs import read_metrics

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"

TINY = ["--subset", "64", "--test-subset", "32", "--num-steps", "4", "--batch-size", "16"]


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip("|").split(" | ")]


def without_seconds(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")}
            for r in read_metrics(run)]


def committed_runs() -> list[Path]:
    return sorted(p.parent for p in RUNS.glob("*/metrics.jsonl"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A cosine run of 1 epoch resumed to 2, and a warm-restart branch of its epoch 1 to 3."""
    d = tmp_path_factory.mktemp("runs")
    assert main(["train", "--epochs", "1", *TINY, "--keep-epochs", "--out", str(d / "cos")]) == 0
    assert main(["train", "--resume", str(d / "cos"), "--epochs", "2"]) == 0
    assert main(["train", "--branch", str(d / "cos" / "epochs" / "epoch001.h5"), "--schedule",
                 "warm_restarts", "--epochs", "3", "--out", str(d / "wr")]) == 0
    return d


def copy_run(src: Path, dst: Path, **changes) -> Path:
    """A copy of run ``src`` at ``dst`` with ``changes`` made to its config.json."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, **changes}))
    return dst


# --- the runs table -------------------------------------------------------------------------

@pytest.mark.slow
def test_row_numbers_come_from_the_metrics_and_list_the_resume(runs):
    rows = read_metrics(runs / "cos")
    c = cells(table.row(runs / "cos"))
    best = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    assert c[0] == "cos" and c[3] == "cosine" and c[5] == "2/2"
    assert c[6] == f"{100 * best['test_acc']:.2f} (ep {best['epoch']})"
    assert c[7] == f"{100 * rows[-1]['test_acc']:.2f}"
    assert c[8] == f"{100 * rows[0]['test_acc']:.2f}"
    assert c[10].startswith("`mininsnn train --epochs 1 ")
    assert f"then `mininsnn train --resume {runs / 'cos'} --epochs 2`" in c[10]


@pytest.mark.slow
def test_a_branch_row_gives_the_straight_command_and_it_reproduces_the_branch(runs, tmp_path):
    c = cells(table.row(runs / "wr"))
    assert c[3] == "warm_restarts" and c[5] == "3/3"
    assert "run as a branch after epoch 1" in c[10]
    cmd = shlex.split(c[10].split("`")[1])
    assert cmd[:2] == ["mininsnn", "train"]
    for flag in ("--schedule", "--subset", "--test-subset", "--num-steps", "--batch-size",
                 "--quant-grad"):
        assert flag in cmd, flag                  # every non-default setting is in the command
    i = cmd.index("--out")
    assert cmd[i + 1] == "experiments/runs/wr"
    cmd[i + 1] = str(tmp_path / "straight")
    assert main(cmd[1:]) == 0
    assert without_seconds(tmp_path / "straight") == without_seconds(runs / "wr")


def test_straight_command_names_every_setting_that_differs():
    cfg = dict(table.run_config(RUNS / "fmnist-4bit-cosine20-scalegrad-seed0"),
               loss="mse_count", correct_rate=0.9, lr=1e-3)
    cmd = table.straight_command(cfg, "x")
    for part in ("--config fmnist-4bit", "--t-max 9380", "--quant-grad ste+scale",
                 "--correct-rate 0.9", "--lr 0.001", "--epochs 20", "--seed 0",
                 "--data-dir ../shared/data/fashion-mnist", "--out experiments/runs/x"):
        assert part in cmd, part
    assert "--loss" not in cmd and "--incorrect-rate" not in cmd and "--schedule" not in cmd
    assert table.schedule_name(cfg) == "cosine, T_max 9380"
    assert table.loss_name(cfg) == "mse_count 0.9/0.2"
    assert table.loss_name({**cfg, "loss": "ce_count"}) == "ce_count"
    fp = table.run_config(RUNS / "mnist-fp-cosine-seed0")
    assert table.straight_command(fp, "y") == \
        "mininsnn train --config mnist-fp --epochs 20 --seed 0 --out experiments/runs/y"
    assert table.loss_name(fp) == ""


def test_a_quantized_run_recorded_before_quant_grad_existed_trained_plain_ste():
    raw = json.loads((RUNS / "mnist-4bit-cosine-seed0" / "config.json").read_text())
    assert "quant_grad" not in raw and raw["bits"] == 4
    cfg = table.run_config(RUNS / "mnist-4bit-cosine-seed0")
    assert cfg["quant_grad"] == "ste"
    assert "--quant-grad ste " in table.straight_command(cfg, "z")
    assert "quant_grad" not in table.run_config(RUNS / "mnist-fp-cosine-seed0")


def test_every_committed_run_has_a_row():
    folders = committed_runs()
    assert folders
    for run in folders:
        assert cells(table.row(run))[0] == run.name


# --- the other tables -----------------------------------------------------------------------

@pytest.mark.slow
def test_schedules_compares_at_equal_epochs(runs, capsys):
    schedules.main([runs / "cos", runs / "wr"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    for line, run in zip(out[2:], ("cos", "wr")):
        c = cells(line)
        assert c[1] == run and c[2] == "2"        # cut at the shorter run's 2 epochs
        assert c[4] == f"{100 * read_metrics(runs / run)[1]['test_acc']:.2f}"


@pytest.mark.slow
def test_side_by_side_gives_each_epoch_of_each_run(runs, capsys):
    for flag, key, fmt in (([], "train_loss", "{:.4f}"), (["--train-acc"], "train_acc", None)):
        side_by_side.main([*flag, str(runs / "cos"), str(runs / "wr")])
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 2 + 3                  # header, rule, epochs 1..3 of the longer run
        cos, wr = read_metrics(runs / "cos"), read_metrics(runs / "wr")
        for e, line in enumerate(out[2:], 1):
            c = cells(line)
            assert c[0] == str(e)
            value = wr[e - 1][key]
            assert c[3] == (fmt.format(value) if fmt else f"{100 * value:.2f}")
            assert c[4] == f"{100 * wr[e - 1]['test_acc']:.2f}"
            if e <= 2:
                assert c[2] == f"{100 * cos[e - 1]['test_acc']:.2f}"
            else:
                assert c[1] == c[2] == ""


@pytest.mark.slow
def test_seeds_averages_the_seeds_that_trained_the_longest_plan(runs, tmp_path, capsys):
    for name, src in (("s-seed0", "wr"), ("s-seed1", "wr"), ("s-seed2", "cos"), ("s-seed1-x", "cos")):
        shutil.copytree(runs / src, tmp_path / name)
    seeds.main([str(tmp_path / "s")])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    c = cells(out[2])
    wr, cos = read_metrics(runs / "wr"), read_metrics(runs / "cos")
    best = 100 * max(r["test_acc"] for r in wr)
    parts = c[1].split("<br>")
    assert [p.split(":")[0] for p in parts] == ["seed 0", "seed 1", "seed 2"]   # not "s-seed1-x"
    assert parts[0].endswith(f"/ {100 * wr[-1]['test_acc']:.2f}")
    assert parts[2].endswith(f"/ {100 * cos[-1]['test_acc']:.2f} (after 2 of 3 epochs, not in the mean)")
    assert c[2] == "2"                            # seed 2 planned 2 epochs, the others 3
    assert c[3] == f"{best:.2f} ± 0.00" and c[4] == f"{100 * wr[-1]['test_acc']:.2f} ± 0.00"


@pytest.mark.slow
def test_epoch1_table_counts_each_first_epoch_once(runs, tmp_path):
    """A branch repeats its parent's epoch 1, a subset run has not seen a whole epoch, and a
    run that repeats another's epoch 1 exactly adds nothing, so none is listed; other loss
    targets get a row of their own."""
    copy_run(runs / "cos", tmp_path / "full", subset=None)
    copy_run(runs / "cos", tmp_path / "full-again", subset=None, schedule="warm_restarts")
    copy_run(runs / "wr", tmp_path / "branch", subset=None)
    copy_run(runs / "cos", tmp_path / "probe")                 # still on its 64-sample subset
    copy_run(runs / "cos", tmp_path / "inc0", subset=None, incorrect_rate=0.0)
    lines = make_report.epoch1_table(tmp_path).splitlines()[2:]
    acc = f"{100 * read_metrics(runs / 'cos')[0]['test_acc']:.2f} (seed 0)"
    qg = table.run_config(runs / "cos")["quant_grad"]
    assert [cells(line)[1:4] for line in lines] == [
        [f"4-bit, {qg}", "98.64", acc],
        [f"4-bit, {qg}, loss mse_count 0.8/0", "98.64", acc]]


# --- the short tables of RESULTS.md ---------------------------------------------------------

@pytest.mark.slow
def test_settings_and_aims_average_the_finished_seeds_and_count_the_aim(runs, tmp_path):
    for name, src in (("s-seed0", "wr"), ("s-seed1", "wr"), ("s-seed2", "cos")):
        shutil.copytree(runs / src, tmp_path / name)
    wr = read_metrics(runs / "wr")
    best, final = 100 * max(r["test_acc"] for r in wr), 100 * wr[-1]["test_acc"]
    within = 100 * max(r["test_acc"] for r in wr[:1])
    c = cells(headline.settings([tmp_path / "s"], first=1).splitlines()[2])
    qg = table.run_config(runs / "wr")["quant_grad"]
    assert c[:6] == ["MNIST", f"4-bit, {qg}", "3.2 / 0.8 spikes (the paper's)",   # T = 4 steps
                     "warm_restarts", "3", "0, 1"]
    assert c[6:] == [f"{best:.2f} ± 0.00", f"{final:.2f} ± 0.00", f"{within:.2f} ± 0.00"]
    at = cells(headline.aims([(tmp_path / "s", round(final, 2))]).splitlines()[2])
    above = cells(headline.aims([(tmp_path / "s", round(final, 2) + 0.01)]).splitlines()[2])
    assert at[-1] == "2 of 2 / 2 of 2"
    assert above[-1] == (f"{2 * (round(best, 2) >= round(final, 2) + 0.01)} of 2 / 0 of 2")
    with pytest.raises(ValueError, match="no such run"):
        headline.settings([tmp_path / "nothing"])


def test_loss_targets_are_named_from_the_config():
    assert headline.targets(table.run_config(RUNS / "mnist-4bit-cosine20-inc0-scalegrad-seed0")) \
        == "80 / 0 spikes"
    assert headline.targets(table.run_config(RUNS / "mnist-4bit-cosine20-scalegrad-seed0")) \
        == "80 / 20 spikes (the paper's)"
    assert headline.targets(table.run_config(RUNS / "fmnist-4bit-cecount-probe-seed0")) == "ce_count"


@pytest.mark.slow
def test_schedules_table_says_when_halve_on_rise_stood_for_constant(runs, tmp_path):
    rows = read_metrics(runs / "cos")
    lr0 = json.loads((runs / "cos" / "config.json").read_text())["lr"]
    hr = copy_run(runs / "cos", tmp_path / "hr", schedule="halve_on_rise")
    with open(hr / "metrics.jsonl", "w") as f:    # an LR that never moved: the loss never rose
        f.writelines(json.dumps({**r, "lr": lr0}) + "\n" for r in rows)
    lines = headline.schedules([runs / "cos", runs / "wr", hr]).splitlines()
    names = [cells(line)[0] for line in lines[2:]]
    assert names == ["cosine", "warm_restarts", "constant", "halve_on_rise"]
    assert cells(lines[4])[1] == "= halve_on_rise (its loss never rose)"
    assert cells(lines[5])[1].endswith(", never halved")
    best = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    assert cells(lines[2])[1] == (f"{100 * best['test_acc']:.2f} (ep {best['epoch']}) / "
                                  f"{100 * rows[-1]['test_acc']:.2f}")


# --- the JSON records that stand in for checkpoints -----------------------------------------

@pytest.mark.slow
def test_errors_counts_the_same_accuracy_as_the_run(runs, capsys):
    errors.main([str(runs / "cos" / "last.h5")])
    out = capsys.readouterr().out.splitlines()
    assert len([line for line in out if line.startswith("| ")]) == 1 + 10   # header + classes
    final = read_metrics(runs / "cos")[-1]
    n = 32                                       # --test-subset of TINY
    assert f"(epoch 2): test accuracy {100 * final['test_acc']:.2f} %, " \
           f"{round(n * (1 - final['test_acc']))} errors" in out[-1]


@pytest.mark.slow
def test_errors_saved_and_read_back_give_the_same_table(runs, tmp_path, capsys):
    run = shutil.copytree(runs / "cos", tmp_path / "cos")
    errors.main([str(run / "last.h5"), "--save"])
    measured = capsys.readouterr().out
    rec = json.loads((run / "errors.json").read_text())
    assert rec["checkpoint"] == "last.h5" and rec["epoch"] == 2
    assert rec["sha256"] == hashlib.sha256((run / "last.h5").read_bytes()).hexdigest()
    assert rec["command"] == f"python -m experiments.errors {run / 'last.h5'} --save"
    assert np.asarray(rec["confusion"]).sum() == 32
    errors.main([str(run)])
    assert capsys.readouterr().out == measured.replace(str(run / "last.h5"), "cos/last.h5")
    with pytest.raises(SystemExit, match="errors.json does not exist"):
        errors.main([str(runs / "wr")])


@pytest.mark.slow
def test_levels_count_every_weight_and_read_back_the_same(runs, tmp_path, capsys):
    from mininsnn.checkpoint import load_checkpoint
    from mininsnn.quant import quantize_forward
    run = shutil.copytree(runs / "cos", tmp_path / "cos")
    rec = levels.measure(run / "epochs" / "epoch001.h5")
    model = load_checkpoint(run / "epochs" / "epoch001.h5")["model"]
    for name in levels.LAYERS:
        w = np.asarray(model[name + ".weight"], np.float64)
        wq, s = quantize_forward(w, 4)
        counts = rec["layers"][name]["counts"]
        assert len(counts) == 15 and sum(counts) == w.size
        assert counts[7] == np.sum(np.rint(wq / s) == 0)
        assert rec["layers"][name]["max_abs_over_std"] == np.abs(w).max() / w.std()
    levels.main([str(run / "epochs" / "epoch001.h5"), str(run / "last.h5"), "--save"])
    measured = capsys.readouterr().out
    kept = json.loads((run / "levels.json").read_text())["checkpoints"]
    assert sorted(kept) == ["epochs/epoch001.h5", "last.h5"]        # both kept, in one record
    assert kept["epochs/epoch001.h5"]["epoch"] == 1 and kept["last.h5"]["epoch"] == 2
    levels.main([str(run)])
    assert capsys.readouterr().out == measured.replace(str(run), "cos")


@pytest.mark.slow
def test_run_folder_of_a_checkpoint(runs, tmp_path):
    assert records.run_folder(runs / "cos" / "epochs" / "epoch001.h5") == (runs / "cos").resolve()
    (tmp_path / "loose.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="belongs to no run folder"):
        records.run_folder(tmp_path / "loose.h5")


def test_committed_json_records_agree_with_their_runs():
    """errors.json's confusion matrix gives the test accuracy the run recorded for that epoch
    (the checkpoint's own evaluation); levels.json's epochs are epochs the run trained."""
    found = sorted(RUNS.glob("*/errors.json")) + sorted(RUNS.glob("*/levels.json"))
    assert len(found) >= 5                       # what the report's LEVELS and ERRORS read
    for path in RUNS.glob("*/errors.json"):
        rec = json.loads(path.read_text())
        row = {r["epoch"]: r for r in read_metrics(path.parent)}[rec["epoch"]]
        confusion = np.asarray(rec["confusion"])
        assert confusion.sum() == 10000, path
        assert np.trace(confusion) == round(10000 * row["test_acc"]), path
        assert len(rec["sha256"]) == 64 and rec["checkpoint"] in rec["command"]
    for path in RUNS.glob("*/levels.json"):
        epochs = {r["epoch"] for r in read_metrics(path.parent)}
        for name, rec in json.loads(path.read_text())["checkpoints"].items():
            assert rec["epoch"] in epochs and name in rec["command"], (path, name)
            assert all(sum(layer["counts"]) > 0 for layer in rec["layers"].values())


# --- the two files and the schedule comparison ----------------------------------------------

def test_every_placeholder_of_the_templates_has_a_table():
    found = []
    for template in make_report.OUTPUTS:
        found += make_report.placeholders(template.read_text())
    assert found and sorted(set(found)) == sorted(make_report.fills())


def test_report_and_results_are_what_the_records_give():
    """Both files are up to date with the run records (run python -m experiments.make_report
    after adding a run), and RESULTS.md fits on a page or two."""
    for template, out in make_report.OUTPUTS.items():
        assert out.read_text(encoding="utf-8") == make_report.render(template), out
    assert (REPO / "RESULTS.md").read_text().count("\n") <= 150


def test_the_named_recipe_is_the_one_the_aims_were_reached_with():
    """RESULTS.md offers mnist-4bit-plus and fmnist-4bit-plus for the three-seed
    cosine20-inc0-scalegrad runs: each must train what those runs trained."""
    from mininsnn.config import ConfigError, make_config, validate_config
    for data in ("mnist", "fmnist"):
        try:
            plus = make_config(f"{data}-4bit-plus")
        except ConfigError:
            pytest.skip(f"the config {data}-4bit-plus is not in this tree yet")
        ran = validate_config(table.run_config(RUNS / f"{data}-4bit-cosine20-inc0-scalegrad-seed0"))
        for key in sorted(set(plus) - {"config", "seed", "epochs", "subset", "test_subset"}):
            want = list(ran[key]) if isinstance(ran[key], (list, tuple)) else ran[key]
            got = list(plus[key]) if isinstance(plus[key], (list, tuple)) else plus[key]
            assert got == want, (data, key)


def test_first_rise_replays_halve_on_rise():
    rows = [{"epoch": e, "train_loss": v} for e, v in enumerate([1.0, 0.8, 0.7, 0.75, 0.6], 1)]
    assert schedule_comparison.first_rise(rows) == 4
    assert schedule_comparison.first_rise(rows[:3]) is None


@pytest.mark.slow
def test_schedule_comparison_trains_a_branch_from_scratch_when_its_checkpoint_is_gone(
        tmp_path, monkeypatch):
    """The periodic cosine has trained past T_max but its epoch checkpoints were not kept (as in
    a fresh clone): warm restarts start from scratch, and repeat the cosine's epochs."""
    tiny = [*TINY, "--t-max", "4"]                 # 4 batches per epoch: T_max = epoch 1
    cos = tmp_path / "mnist-4bit-cosine-seed0"
    assert main(["train", "--config", "mnist-4bit", "--quant-grad", "ste", "--epochs", "2",
                 *tiny, "--out", str(cos)]) == 0
    launched = []

    class Finished:
        returncode = 0

        def poll(self):
            return 0

    def run_in_process(cmd, **kwargs):
        argv = cmd[cmd.index("train"):]
        launched.append(argv)
        assert main(argv) == 0
        return Finished()

    monkeypatch.setattr(schedule_comparison.subprocess, "Popen", run_in_process)
    schedule_comparison.main(["--config", "mnist-4bit", "--quant-grad", "ste", "--epochs", "2",
                              "--out-dir", str(tmp_path), "--poll", "0", "--", *tiny])
    warm = [argv for argv in launched if "warm_restarts" in argv]
    assert len(warm) == 1 and "--branch" not in warm[0] and "--config" in warm[0]
    wr = read_metrics(tmp_path / "mnist-4bit-warm_restarts-seed0")
    assert len(wr) == 2
    assert without_seconds(tmp_path / "mnist-4bit-warm_restarts-seed0")[0] == without_seconds(cos)[0]


@pytest.mark.parametrize("module", ["schedule_comparison", "make_report", "levels", "errors"])
def test_the_scripts_run_as_modules_from_the_root(module):
    out = subprocess.run([sys.executable, "-m", f"experiments.{module}", "--help"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: ")


def test_no_sys_path_tricks():
    for path in [*EXPERIMENTS.glob("*.py"), Path(__file__)]:
        assert "sys.path.insert" + "(" not in path.read_text(), path


# --- what the lab keeps in git --------------------------------------------------------------

def test_every_run_record_keeps_config_command_and_metrics():
    for run in committed_runs():
        for name in ("config.json", "command.txt", "metrics.jsonl", "metrics.csv"):
            assert (run / name).exists(), run / name


def git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if out.returncode == 128:
        pytest.skip("not a git checkout")
    return out


def test_run_artefacts_are_neither_tracked_nor_addable():
    tracked = git("ls-files", "experiments").stdout.splitlines()
    assert any(p.endswith("metrics.jsonl") for p in tracked)
    banned = [p for p in tracked if p.endswith((".h5", "steps.csv", ".log", "raster.png"))
              or "/epochs/" in p]
    assert banned == []
    run = "experiments/runs/some-run-seed0"
    artefacts = [f"{run}/best.h5", f"{run}/last.h5", f"{run}/epochs/epoch001.h5",
                 f"{run}/steps.csv", f"{run}/raster.png", f"{run}.log", f"{run}/train.log"]
    kept = [f"{run}/{n}" for n in ("config.json", "command.txt", "metrics.jsonl", "metrics.csv",
                                   "curves.png", "lr.png", "levels.json", "errors.json")]
    ignored = git("check-ignore", "--no-index", *artefacts, *kept).stdout.split()
    assert sorted(ignored) == sorted(artefacts)
