"""Small helpers for the run records in experiments/runs/: which run a checkpoint belongs to, and
writing a JSON file into a record without leaving half a file on disk."""
import json
import os
import re
import tempfile
from pathlib import Path


def run_folder(checkpoint) -> Path:
    """The run folder of a checkpoint: the nearest folder above it that holds a config.json
    (RUN/best.h5 and RUN/epochs/epoch010.h5 both belong to RUN)."""
    for folder in Path(checkpoint).resolve().parents:
        if (folder / "config.json").exists():
            return folder
    raise ValueError(f"{checkpoint}: no config.json in any folder above it, so it belongs to no "
                     "run folder; give a checkpoint inside a run folder")


def write_json(path, data) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (temporary file in the same folder,
    fsync, rename), so a crash leaves the old file or the new one, never half of one. A list of
    numbers stays on one line (a confusion matrix reads as one row per line)."""
    path = Path(path)
    text = re.sub(r"\[\s*(-?[0-9][-0-9.e+]*(?:,\s*-?[0-9][-0-9.e+]*)*)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  json.dumps(data, indent=1))
    if json.loads(text) != data:
        raise AssertionError(f"{path}: the compacted JSON does not read back as written")
    write_text(path, text + "\n")


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
