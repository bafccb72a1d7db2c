"""The scripts in results/ that turn run folders into RESULTS.md: the table's numbers come from
the metrics, its commands reproduce the runs, and the template has a table for every placeholder."""
import json
import shlex
import sys
from pathlib import Path

import pytest

from mininsnn.cli import main
from mininsnn.runs import read_metrics

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
sys.path.insert(0, str(RESULTS))

import errors  # noqa: E402
import make_results  # noqa: E402
import schedule_comparison  # noqa: E402
import schedules  # noqa: E402
import seeds  # noqa: E402
import side_by_side  # noqa: E402
import table  # noqa: E402

TINY = ["--subset", "64", "--test-subset", "32", "--num-steps", "4", "--batch-size", "16"]


def cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip("|").split(" | ")]


def without_seconds(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")}
            for r in read_metrics(run)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A cosine run of 1 epoch resumed to 2, and a warm-restart branch of its epoch 1 to 3."""
    d = tmp_path_factory.mktemp("results")
    assert main(["train", "--epochs", "1", *TINY, "--keep-epochs", "--out", str(d / "cos")]) == 0
    assert main(["train", "--resume", str(d / "cos"), "--epochs", "2"]) == 0
    assert main(["train", "--branch", str(d / "cos" / "epochs" / "epoch001.h5"), "--schedule",
                 "warm_restarts", "--epochs", "3", "--out", str(d / "wr")]) == 0
    return d


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


def test_a_branch_row_gives_the_straight_command_and_it_reproduces_the_branch(runs, tmp_path):
    c = cells(table.row(runs / "wr"))
    assert c[3] == "warm_restarts" and c[5] == "3/3"
    assert "run as a branch after epoch 1" in c[10]
    cmd = shlex.split(c[10].split("`")[1])
    assert cmd[:2] == ["mininsnn", "train"]
    for flag in ("--schedule", "--subset", "--test-subset", "--num-steps", "--batch-size"):
        assert flag in cmd, flag                  # every non-default setting is in the command
    i = cmd.index("--out")
    cmd[i + 1] = str(tmp_path / "straight")
    assert main(cmd[1:]) == 0
    assert without_seconds(tmp_path / "straight") == without_seconds(runs / "wr")


def test_straight_command_names_every_setting_that_differs():
    cfg = dict(json.loads((RESULTS / "fmnist-4bit-cosine20-scalegrad-seed0" / "config.json")
                          .read_text()), loss="mse_count", correct_rate=0.9, lr=1e-3)
    cmd = table.straight_command(cfg, "x")
    for part in ("--config fmnist-4bit", "--t-max 9380", "--quant-grad ste+scale",
                 "--correct-rate 0.9", "--lr 0.001", "--epochs 20", "--seed 0",
                 "--data-dir ../shared/data/fashion-mnist", "--out results/x"):
        assert part in cmd, part
    assert "--loss" not in cmd and "--incorrect-rate" not in cmd and "--schedule" not in cmd
    assert table.schedule_name(cfg) == "cosine, T_max 9380"
    assert table.loss_name(cfg) == "mse_count 0.9/0.2"
    assert table.loss_name({**cfg, "loss": "ce_count"}) == "ce_count"
    fp = dict(json.loads((RESULTS / "mnist-fp-cosine-seed0" / "config.json").read_text()))
    assert table.straight_command(fp, "y") == \
        "mininsnn train --config mnist-fp --epochs 20 --seed 0 --out results/y"
    assert table.loss_name(fp) == ""


def test_schedules_compares_at_equal_epochs(runs, capsys):
    schedules.main([runs / "cos", runs / "wr"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    for line, run in zip(out[2:], ("cos", "wr")):
        c = cells(line)
        assert c[1] == run and c[2] == "2"        # cut at the shorter run's 2 epochs
        assert c[4] == f"{100 * read_metrics(runs / run)[1]['test_acc']:.2f}"


def test_first_rise_replays_halve_on_rise():
    rows = [{"epoch": e, "train_loss": v} for e, v in enumerate([1.0, 0.8, 0.7, 0.75, 0.6], 1)]
    assert schedule_comparison.first_rise(rows) == 4
    assert schedule_comparison.first_rise(rows[:3]) is None


def test_every_placeholder_of_the_template_has_a_table():
    text = (RESULTS / "RESULTS.template.md").read_text()
    found = make_results.placeholders(text)
    assert found and sorted(set(found)) == sorted(make_results.fills())


def test_every_committed_run_has_a_row():
    folders = sorted(p.parent for p in RESULTS.glob("*/metrics.jsonl"))
    assert folders
    for run in folders:
        row = table.row(run)
        if read_metrics(run):
            assert cells(row)[0] == run.name


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


def test_seeds_averages_the_seeds_that_trained_the_longest_plan(runs, tmp_path, capsys):
    import shutil
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


def test_errors_counts_the_same_accuracy_as_the_run(runs, capsys):
    errors.main([str(runs / "cos" / "last.h5")])
    out = capsys.readouterr().out.splitlines()
    assert len([line for line in out if line.startswith("| ")]) == 1 + 10   # header + classes
    final = read_metrics(runs / "cos")[-1]
    n = 32                                       # --test-subset of TINY
    assert f"(epoch 2): test accuracy {100 * final['test_acc']:.2f} %, " \
           f"{round(n * (1 - final['test_acc']))} errors" in out[-1]


def test_epoch1_table_counts_each_first_epoch_once(runs, tmp_path):
    """A branch repeats its parent's epoch 1, a subset run has not seen a whole epoch, and a
    run that repeats another's epoch 1 exactly adds nothing, so none is listed; other loss
    targets get a row of their own."""
    import shutil

    def copy(src, name, **changes):
        shutil.copytree(runs / src, tmp_path / name)
        cfg = json.loads((tmp_path / name / "config.json").read_text())
        (tmp_path / name / "config.json").write_text(json.dumps({**cfg, **changes}))

    copy("cos", "full", subset=None)
    copy("cos", "full-again", subset=None, schedule="warm_restarts")
    copy("wr", "branch", subset=None)
    copy("cos", "probe")                                  # still on its 64-sample subset
    copy("cos", "inc0", subset=None, incorrect_rate=0.0)
    lines = make_results.epoch1_table(tmp_path).splitlines()[2:]
    acc = f"{100 * read_metrics(runs / 'cos')[0]['test_acc']:.2f} (seed 0)"
    assert [cells(line)[1:4] for line in lines] == [
        ["4-bit, ste", "98.64", acc],
        ["4-bit, ste, loss mse_count 0.8/0", "98.64", acc]]


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
