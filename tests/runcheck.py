"""Comparing two run folders bit for bit (tests of crashes, repairs and resumes).

Two runs of the same command on one machine must agree in every file except the record of how
they were run: command.txt, and the timing columns of the metrics ("seconds", "samples_per_s").
"""
import csv
import json
from pathlib import Path

import numpy as np

from mininsnn.checkpoint import load_checkpoint

TIMING = ("seconds", "samples_per_s")


def untimed(rows: list) -> list:
    """The metrics rows without their timing columns."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_tree(a, b, where: str) -> None:
    """Checkpoint trees equal bit for bit (arrays by dtype, shape and bytes), except the timing
    columns of the metric history."""
    if isinstance(a, dict) and where.endswith("/history[]"):
        a, b = untimed([a])[0], untimed([b])[0]
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for x, y in zip(a, b):
            assert_same_tree(x, y, f"{where}[]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"{where}: values differ"
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(a: Path, b: Path) -> None:
    """Run folders ``a`` and ``b`` hold the same run: the same checkpoints (last.h5, best.h5,
    epochs/*), metrics (minus timing), steps.csv and config.json, and no temporary files."""
    a, b = Path(a), Path(b)
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()), \
        f"{a} and {b} hold different files"
    assert not [n for n in names if Path(n).name.startswith(".")], f"temporary files in {a}: {names}"
    for name in names:
        if name.endswith(".h5"):
            assert_same_tree(load_checkpoint(a / name), load_checkpoint(b / name), name)
    for name in ("steps.csv", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    rows = [[json.loads(line) for line in (f / "metrics.jsonl").read_text().splitlines()]
            for f in (a, b)]
    assert untimed(rows[0]) == untimed(rows[1]), "metrics.jsonl"
    tables = []
    for f in (a, b):
        with open(f / "metrics.csv", newline="") as fh:
            tables.append(untimed(list(csv.DictReader(fh))))
    assert tables[0] == tables[1], "metrics.csv"


def mount_tmpfs(folder: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` (e.g. "1600k") on ``folder``; False where that is not permitted
    (mounting needs root with CAP_SYS_ADMIN; tests skip then)."""
    import os
    import subprocess
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def remount(folder: Path, mode: str) -> None:
    """Remount the tmpfs on ``folder`` "ro" or "rw"."""
    import subprocess
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True, capture_output=True)


def unmount(folder: Path) -> None:
    import subprocess
    subprocess.run(["umount", str(folder)], check=True, capture_output=True)
