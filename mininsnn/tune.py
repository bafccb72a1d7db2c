"""Hyperparameter studies and sweeps on Optuna: ``mininsnn tune`` and ``mininsnn sweep``.

A *study* is an Optuna study in a storage (a SQLite file in the study folder by default, or any
Optuna storage URL such as ``postgresql://user@host/db`` shared by workers on many machines), plus
a study folder in which every trial is an ordinary run folder (mininsnn.runs):

    STUDY_DIR/study.json        the study's name, kind and storage (password hidden)
    STUDY_DIR/study.db          the default storage (SQLite)
    STUDY_DIR/trial-0003/       trial 3: config.json, command.txt (the exact ``mininsnn train``
                                command that reproduces it), metrics, steps, last.h5, best.h5
    STUDY_DIR/workers/          logs of the local worker processes of --workers N

``tune``: each trial draws the settings of a search space (:func:`check_space`) with the sampler
(TPE by default) on top of a fixed base configuration, trains, reports its validation accuracy
after every epoch (so that the pruner can stop unpromising trials) and scores the best of them.
The objective is the accuracy on the validation set (``--validation N``: the last N training
samples, mininsnn.data.hold_out), never on the test set; the test accuracy of the same epoch is
recorded in the trial's attributes, and is never used to choose.

``sweep``: a grid (seeds x schedules x settings) run through the same machinery: every grid
point is enqueued once as a waiting trial, which exactly one worker claims (Optuna changes a
trial from WAITING to RUNNING atomically in the storage).

Exactly N trials under concurrency. A worker runs one trial at a time while the study needs more,
then waits for the other workers' trials and returns when the study is done. A trial is *needed*
when fewer than N trials numbered before it have not failed (tune), or when no trial numbered
before it holds its grid point and has not failed (sweep); a trial that is not needed (two workers
asked for the last one at the same moment) is marked FAIL with the user attribute ``surplus`` and
never trains. Heartbeats (Optuna's RDB heartbeat): a worker killed mid-trial stops beating; after
the grace period the other workers mark its trial FAIL and run a replacement (tune) or the same
grid point again (sweep). So a finished study has exactly N trials COMPLETE or PRUNED.

Workers on other machines. Give the study a storage that every machine reaches, e.g. a
PostgreSQL database (``pip install -e ".[postgres]"`` on each machine), and run the same command
on each, with the same settings and search space (checked: a worker with another space or base
configuration is refused) and the same --study name; each machine writes its trials' run folders
into its own STUDY_DIR (or a shared one), reads its data from its own --data-dir, and may use
--workers for its cores:

    # machine A
    mininsnn tune studies/mnist --study mnist --storage postgresql://me@db.lab:5432/optuna \
        --validation 10000 --epochs 3 --trials 60 --workers 2
    # machine B, C, ...: the same command (joins the study, takes the next trials)

Keep the password out of the command (it would show in process lists): libpq reads it from
~/.pgpass or PGPASSWORD. Trial folders record the URL with any password hidden. `mininsnn tune`
returns when the study has its trials; `mininsnn report` reads the trial folders of one machine.

Optuna is an optional extra (``pip install -e ".[tune]"``): this module imports it inside the
functions that need it; the search-space functions and :func:`train_argv` work without it.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mininsnn.atomic import write_text
from mininsnn.config import SETTINGS, ConfigError, make_config, validate_config

__all__ = ["PAPER_SPACE", "import_optuna", "parse_param", "read_space_file", "check_space",
           "grid_points", "train_argv", "StudySpec", "open_storage", "open_study",
           "run_worker", "run_workers", "study_counts", "describe_trial", "INSTALL_HINT"]

INSTALL_HINT = 'pip install -e ".[tune]"'

# mininsnn's default search space: the settings the paper tuned (beta, threshold, slope, lr,
# dropout) and the targets of the mse_count loss. The ranges are mininsnn's: they enclose the
# values of all six paper configurations (mininsnn.config.CONFIGS).
PAPER_SPACE = {
    "beta": {"low": 0.3, "high": 0.999},
    "threshold": {"low": 0.25, "high": 5.0, "log": True},
    "slope": {"low": 2.0, "high": 30.0, "log": True},
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "dropout": {"low": 0.0, "high": 0.4},
    "correct_rate": {"low": 0.6, "high": 1.0},
    "incorrect_rate": {"low": 0.0, "high": 0.3},
}
_RATES = ("correct_rate", "incorrect_rate")      # used by the mse_count loss only


def import_optuna():
    """The optuna module, or a one-line ConfigError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"studies need optuna, an optional extra: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # mininsnn prints its own lines
    return optuna


# ---------------------------------------------------------------------------------------------
# search spaces: {setting: {"choices": [...]}} or {setting: {"low", "high", "log", "step"}}

_BY_NAME = {}
for _s in SETTINGS:
    if _s.help is not None:                  # a setting with a command-line flag
        _BY_NAME[_s.key] = _BY_NAME[_s.flag[2:]] = _s


def _kind(s) -> str:
    """How a setting's values are drawn: 'float', 'int' (ranges or choices), 'bool', 'choice'."""
    if s.key == "bits" or s.default is None:
        return "int"                          # bits and the optional integers
    if isinstance(s.default, bool):
        return "bool"
    if getattr(s.check, "choices", None) is not None:
        return "choice"
    return "float" if isinstance(s.default, float) else "int"


def _setting(key: str, where: str):
    s = _BY_NAME.get(key)
    if s is None:
        raise ConfigError(f"{where}: unknown setting {key!r}; settings: "
                          f"{', '.join(sorted({x.key for x in _BY_NAME.values()}))}")
    return s


def _parse_value(s, text: str, where: str):
    """A value of setting ``s`` written on the command line (not yet range-checked)."""
    kind, t = _kind(s), text.strip()
    try:
        if kind == "bool":
            if t.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError
            return t.lower() in ("true", "yes", "1")
        if kind == "int":
            return None if s.key == "bits" and t.lower() == "none" else int(t)
        if kind == "float":
            return float(t)
        return t
    except ValueError:
        what = {"int": "an integer", "float": "a number"}.get(kind, "true or false")
        raise ConfigError(f"{where}: {t!r} is not {what}") from None


def parse_param(text: str, where: str = "--param") -> tuple[str, dict]:
    """(setting, spec) of one command-line declaration:

        lr=1e-4:1e-2:log      a range (log-uniform)        beta=0.9:0.999     a range
        num_steps=10:50:10    an integer range, step 10    loss=mse_count,ce_rate   choices
    """
    key, eq, spec = text.partition("=")
    key = key.strip()
    if not eq or not key or not spec.strip():
        raise ConfigError(f"{where} {text!r}: expected KEY=LOW:HIGH[:log|:STEP] or KEY=A,B,...")
    s = _setting(key, f"{where} {text!r}")
    where = f"{where} {s.key}"
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"{where}: a range is LOW:HIGH[:log|:STEP], got {spec!r}")
        out = {"low": _parse_value(s, parts[0], where), "high": _parse_value(s, parts[1], where)}
        if len(parts) == 3:
            if parts[2].strip().lower() == "log":
                out["log"] = True
            else:
                out["step"] = _parse_value(s, parts[2], where)
        return s.key, out
    values = [_parse_value(s, v, where) for v in spec.split(",")]
    if len(values) == 1:
        raise ConfigError(f"{where}: one value is not a search; fix it with its own flag "
                          f"({s.flag} {spec}) or give several (A,B,...) or a range (LOW:HIGH)")
    return s.key, {"choices": values}


def read_space_file(path) -> dict:
    """The search space in JSON file ``path``: {setting: [choices...] | {"choices": [...]} |
    {"low": L, "high": H[, "log": true][, "step": S]}} (checked by :func:`check_space`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"search space {path}: cannot read it ({e.strerror or e})") from None
    try:
        space = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"search space {path}: not valid JSON ({e})") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"search space {path}: expected a JSON object {{setting: range or "
                          f"choices}}, got {type(space).__name__ if space else 'an empty one'}")
    return space


def _check_value(s, v, where: str):
    if v is None and s.key != "bits":
        raise ConfigError(f"{where}: None cannot be given on the command line of a trial")
    try:
        return s.check(v)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def check_space(space: dict, base: dict, where: str, grid: bool = False) -> dict:
    """The normalised search space, or a one-line ConfigError naming ``where`` and the setting.

    ``space``: {setting: [v, ...] or {"choices": [v, ...]}} or {setting: {"low": L, "high": H[,
    "log": bool][, "step": S]}} (float and integer settings; an integer setting draws integers).
    ``base``: the validated configuration the space varies. ``grid``: every setting must list
    values (integer ranges are expanded to LOW, LOW+STEP, ..., HIGH). Each value and each end of
    a range passes the setting's own check; the targets of mse_count must stay ordered
    (correct_rate > incorrect_rate) at every point of the space."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where}: the search space is empty")
    out = {}
    for key, spec in space.items():
        s = _setting(key, where)
        w = f"{where}: {s.key}"
        if s.key in out:
            raise ConfigError(f"{w} is declared twice")
        if isinstance(spec, list):
            spec = {"choices": spec}                  # [A, B] is short for {"choices": [A, B]}
        if not isinstance(spec, dict) or not (set(spec) == {"choices"} or
                                              {"low", "high"} <= set(spec) <= {"low", "high",
                                                                               "log", "step"}):
            raise ConfigError(f"{w}: expected [A, B, ...], {{\"choices\": [...]}} or "
                              f"{{\"low\": L, \"high\": H[, \"log\": true][, \"step\": S]}}, "
                              f"got {json.dumps(spec)}")
        kind = _kind(s)
        if "choices" in spec:
            values = spec["choices"]
            if not isinstance(values, list) or len(values) < 1:
                raise ConfigError(f"{w}: choices must be a non-empty list, got "
                                  f"{json.dumps(values)}")
            values = [_check_value(s, v, w) for v in values]
            if any(isinstance(v, (list, tuple, dict)) for v in values):
                raise ConfigError(f"{w}: choices must be numbers, strings, true/false or null")
            if len({json.dumps(v) for v in values}) != len(values):
                raise ConfigError(f"{w}: choices {json.dumps(values)} repeat a value")
            out[s.key] = {"choices": values}
            continue
        if kind not in ("float", "int"):
            raise ConfigError(f"{w} takes one of a list of values, not a range; give choices "
                              f"(A,B,... or [A, B])")
        lo, hi, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        number = "an integer" if kind == "int" else "a number"
        for name, v in (("low", lo), ("high", hi)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                    (kind == "int" and not float(v).is_integer()):
                raise ConfigError(f"{w}: {name} must be {number}, got {json.dumps(v)}")
        lo, hi = _check_value(s, lo, w + " low"), _check_value(s, hi, w + " high")
        if not lo < hi:
            raise ConfigError(f"{w}: low {lo} must be below high {hi}")
        if not isinstance(log, bool):
            raise ConfigError(f"{w}: log must be true or false, got {json.dumps(log)}")
        if log and lo <= 0:
            raise ConfigError(f"{w}: a log range needs low > 0, got {lo}")
        if step is not None:
            if log:
                raise ConfigError(f"{w}: give log or step, not both")
            if isinstance(step, bool) or not isinstance(step, (int, float)) or \
                    not math.isfinite(step) or step <= 0 or \
                    (kind == "int" and not float(step).is_integer()):
                raise ConfigError(f"{w}: step must be {number} > 0, got {json.dumps(step)}")
            step = int(step) if kind == "int" else float(step)
        if grid:
            if kind != "int":
                raise ConfigError(f"{w}: a grid lists its values (A,B,...); a range of "
                                  f"{s.key} has no end of values")
            out[s.key] = {"choices": list(range(int(lo), int(hi) + 1, step or 1))}
            continue
        out[s.key] = {"low": lo, "high": hi, "log": log, "step": step}
    if grid:
        return out
    if "validation" in out:
        raise ConfigError(f"{where}: validation cannot be searched: every trial must be scored "
                          f"on the same validation set")
    _check_rates(out, base, where)
    return out


def _extremes(spec: dict | None, fixed):
    """(smallest, largest) value a setting can take in a space (or its fixed value)."""
    if spec is None:
        return fixed, fixed
    if "choices" in spec:
        return min(spec["choices"]), max(spec["choices"])
    return spec["low"], spec["high"]


def _check_rates(space: dict, base: dict, where: str) -> None:
    losses = space.get("loss", {}).get("choices", [base["loss"]])
    rates = [k for k in _RATES if k in space]
    if rates and "mse_count" not in losses:
        raise ConfigError(f"{where}: {' and '.join(rates)} set the targets of the mse_count loss;"
                          f" this study's loss is {', '.join(losses)}")
    lo_correct = _extremes(space.get("correct_rate"), base["correct_rate"])[0]
    hi_incorrect = _extremes(space.get("incorrect_rate"), base["incorrect_rate"])[1]
    if rates and not lo_correct > hi_incorrect:
        raise ConfigError(f"{where}: correct_rate can be {lo_correct} and incorrect_rate "
                          f"{hi_incorrect}, but correct_rate must exceed incorrect_rate at every "
                          f"point of the space")


def grid_points(space: dict) -> list[dict]:
    """Every point of a grid (a checked space of choices), the last setting varying fastest."""
    keys = list(space)
    return [dict(zip(keys, values))
            for values in itertools.product(*(space[k]["choices"] for k in keys))]


def describe_space(space: dict) -> str:
    """One line: 'lr 0.0001..0.01 (log), loss in {mse_count, ce_rate}'."""
    parts = []
    for k, spec in space.items():
        if "choices" in spec:
            parts.append(f"{k} in {{{', '.join(str(v) for v in spec['choices'])}}}")
        else:
            extra = " (log)" if spec["log"] else f" step {spec['step']}" if spec["step"] else ""
            parts.append(f"{k} {spec['low']:g}..{spec['high']:g}{extra}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# the command of a trial

def _flag(s, v) -> list[str]:
    if isinstance(s.default, bool):
        return [s.flag if v else "--no-" + s.flag[2:]]
    if v is None:
        if s.key == "bits":
            return [s.flag, "none"]
        raise ConfigError(f"{s.key}=None cannot be written as a {s.flag} flag")
    return [s.flag, repr(float(v)) if isinstance(v, float) else str(v)]


def train_argv(cfg: dict, out, data_dir=None) -> list[str]:
    """The ``mininsnn train`` arguments (without 'mininsnn') that train configuration ``cfg``
    from scratch into ``out``: --config, then a flag for every setting that differs from that
    configuration's default (floats written with repr, so they parse back to the same bits).
    The arguments are parsed back with the real command line and must give ``cfg`` again."""
    cfg = validate_config(cfg)
    default = make_config(cfg["config"])
    argv = ["train", "--config", cfg["config"]]
    for s in SETTINGS:
        if cfg[s.key] == default[s.key]:
            continue
        if s.help is None:
            raise ConfigError(f"{s.key} has no command-line flag, so it cannot differ from the "
                              f"{cfg['config']} configuration in a trial")
        argv += _flag(s, cfg[s.key])
    argv += ["--out", str(out)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    from mininsnn.cli import build_parser             # the parser `mininsnn train` uses
    a = vars(build_parser().parse_args(argv))
    again = make_config(a["config"], **{s.key: a[s.key] for s in SETTINGS if s.key in a})
    if again != cfg:                                   # a bug here, never the user's input
        diff = next(k for k in cfg if again.get(k) != cfg[k])
        raise RuntimeError(f"train_argv: {shlex.join(argv)} gives {diff}={again.get(diff)!r}, "
                           f"not {cfg[diff]!r}")
    return argv


# ---------------------------------------------------------------------------------------------
# storage and study

@dataclass
class StudySpec:
    """Everything a worker needs: the same on every worker of a study (except ``data_dir``,
    ``worker_index`` and ``sampler_seed``, which may differ by machine)."""

    kind: str                          # "tune" or "sweep"
    folder: Path                       # the study folder (trial run folders go here)
    name: str                          # the study's name in the storage
    storage: str                       # an Optuna storage URL
    base: dict                         # the validated base configuration
    space: dict                        # the checked search space (a grid for sweeps)
    trials: int                        # tune: trials to finish; sweep: the number of points
    data_dir: str | None = None
    sampler: str = "tpe"               # tune: "tpe" or "random"
    sampler_seed: int | None = None
    pruner: str = "median"             # tune: "median" or "none"
    heartbeat: int = 60                # seconds between heartbeats; stale after 2x
    worker_index: int = 0
    log: object = field(default=print, repr=False)

    def meta(self) -> dict:
        """What must agree between the workers of one study (stored in the study)."""
        return json.loads(json.dumps({"kind": self.kind, "base": self.base, "space": self.space}))


def default_storage(folder) -> str:
    return f"sqlite:///{Path(folder).resolve() / 'study.db'}"


def shown_url(url: str) -> str:
    """The storage URL with any password hidden."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str, heartbeat: int = 60):
    """An Optuna RDBStorage on ``url`` with heartbeats (every ``heartbeat`` s, stale after twice
    that), or a one-line ConfigError: not a URL, unknown scheme, driver not installed,
    database unreachable."""
    optuna = import_optuna()
    import sqlalchemy
    from sqlalchemy.engine import make_url

    shown = shown_url(url)
    try:
        u = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"--storage {url!r} is not a database URL; use sqlite:///FILE or "
                          "postgresql://USER@HOST:PORT/DATABASE") from None
    try:
        u.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise ConfigError(f"--storage {shown}: unknown database kind {u.drivername!r}; use "
                          "sqlite:///FILE or postgresql://USER@HOST:PORT/DATABASE") from None
    if u.drivername == "postgresql":
        # SQLAlchemy's default driver for postgresql:// is psycopg2 in 2.0 and psycopg (3) in
        # 2.1: use whichever is installed, so the same URL works on every worker
        import importlib.util
        driver = next((d for d in ("psycopg", "psycopg2") if importlib.util.find_spec(d)), None)
        if driver is None:
            raise ConfigError(f"--storage {shown}: PostgreSQL needs a driver: "
                              "pip install -e \".[postgres]\" (psycopg)")
        u = u.set(drivername=f"postgresql+{driver}")
        url = u.render_as_string(hide_password=False)
    kw = {}
    if u.get_backend_name() == "sqlite":
        # several processes share one file: wait for its lock instead of failing at once
        kw = {"connect_args": {"timeout": 120}}
        if u.database and not Path(u.database).parent.is_dir():
            raise ConfigError(f"--storage {shown}: folder {Path(u.database).parent} does not "
                              "exist")
    try:
        for attempt in range(10):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")    # heartbeats are 'experimental'
                    storage = optuna.storages.RDBStorage(url, engine_kwargs=kw,
                                                         heartbeat_interval=heartbeat,
                                                         grace_period=2 * heartbeat)
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError,
                    sqlalchemy.exc.ProgrammingError) as e:
                # workers started together on a new database all create Optuna's tables; the
                # losers of that race find them made a moment later
                race = isinstance(e, sqlalchemy.exc.IntegrityError) or "already exists" in str(e)
                if not race or attempt == 9:
                    raise
                time.sleep(0.5)
        if u.get_backend_name() == "sqlite":
            _serialize_sqlite(storage.engine)
        return storage
    except ImportError as e:
        raise ConfigError(f"--storage {shown}: the {u.drivername} driver is not installed "
                          f"({e}); for PostgreSQL: pip install -e \".[postgres]\"") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        msg = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise ConfigError(f"--storage {shown}: cannot use the database: "
                          f"{' '.join(m.strip() for m in msg[:2])}") from None


def _serialize_sqlite(engine) -> None:
    """Make every SQLite transaction of ``engine`` take the database's write lock when it begins
    (BEGIN IMMEDIATE), so that concurrent processes run them one after another.

    Why: Optuna claims a waiting trial by reading its state and writing RUNNING in one
    transaction, with SELECT ... FOR UPDATE, which locks the row in PostgreSQL or MySQL. SQLite
    has no row locks, and Python's sqlite3 starts a transaction only at the first write, so two
    processes could both read WAITING and both run the same trial (seen here with two workers,
    and reported as optuna issue #4002). Serialised transactions remove that race; they cost
    nothing that matters next to a training run."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None        # sqlite3 opens no transaction itself

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()                                   # connections made before: closed


def _write_json_atomic(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def _first_difference(stored, wanted, prefix="") -> str:
    """'space.lr: {...} there, {...} here' for the first key where two dicts differ."""
    for k in dict.fromkeys([*stored, *wanted]):
        a, b = stored.get(k, "<absent>"), wanted.get(k, "<absent>")
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                return _first_difference(a, b, f"{prefix}{k}.")
            return f"{prefix}{k} = {json.dumps(a)} there, {json.dumps(b)} here"
    return ""


def open_study(spec: StudySpec, create: bool = True):
    """The Optuna study of ``spec`` (created with the study folder if ``create`` and absent).
    ConfigError if the folder belongs to another study, or if the study exists with another
    kind, base configuration or search space."""
    optuna = import_optuna()
    folder = Path(spec.folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a study folder")
    shown = shown_url(spec.storage)
    # the default storage is named by place, so that a copied or moved folder stays usable
    where = "study.db" if spec.storage == default_storage(folder) else shown
    mark = {"study": spec.name, "kind": spec.kind, "storage": where}
    marker = folder / "study.json"
    if marker.is_file():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:
            raise ConfigError(f"{marker} is not valid JSON; restore it or use another study "
                              "folder") from None
        if found != mark:
            raise ConfigError(f"{folder} holds study {found.get('study')!r} ({found.get('kind')}"
                              f") in {found.get('storage')}, not {spec.name!r} ({spec.kind}) in "
                              f"{where}; pass its --study/--storage or another folder")
    elif create and where == "study.db":      # the default storage lives in the folder
        folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(spec.storage, spec.heartbeat)
    meta = spec.meta()
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage)
        created = False
    except KeyError:
        if not create:
            raise ConfigError(f"no study {spec.name!r} in {shown}") from None
        try:
            study = optuna.create_study(study_name=spec.name, storage=storage,
                                        direction="maximize")
            if spec.kind == "sweep":          # the grid first: a worker that sees the study
                _enqueue(study, spec.space, held=set())   # sees all of it
            study.set_user_attr("mininsnn", meta)
            created = True
        except optuna.exceptions.DuplicatedStudyError:      # another worker created it now
            study = optuna.load_study(study_name=spec.name, storage=storage)
            created = False
    if not created:
        stored = None
        for _ in range(600):                # its creator may not have stored the space yet
            stored = study.user_attrs.get("mininsnn")
            if stored is not None:
                break
            time.sleep(0.1)
            study = optuna.load_study(study_name=spec.name, storage=storage)
        if stored is None:
            raise ConfigError(f"study {spec.name!r} in {shown} was not made by mininsnn; pass "
                              "another --study")
        if stored != meta:
            what = "search space" if stored.get("space") != meta["space"] else \
                "kind" if stored.get("kind") != meta["kind"] else "base configuration"
            raise ConfigError(f"study {spec.name!r} in {shown} exists with another {what} "
                              f"({_first_difference(stored, meta)}); pass another --study, or "
                              f"the same {what}")
    if not marker.is_file() and create:       # every check passed: the folder is this study's
        folder.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(marker, mark)
    return study


# ---------------------------------------------------------------------------------------------
# the worker

def _enqueue(study, grid: dict, held: set) -> None:
    """Enqueue the points of ``grid`` whose index is not in ``held``, as waiting trials."""
    for i, point in enumerate(grid_points(grid)):
        if i not in held:
            study.enqueue_trial(point, user_attrs={"grid_point": i})


class _Surplus(Exception):
    """A trial the study does not need (see the module docstring); it is marked FAIL unrun."""


def study_counts(study) -> dict:
    """Number of trials by state name, e.g. {'COMPLETE': 10, 'PRUNED': 2, 'FAIL': 1}."""
    counts = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


class _Worker:
    def __init__(self, spec: StudySpec, study):
        self.spec, self.study = spec, study
        self.optuna = import_optuna()
        self.data = {}                         # data sets by the settings that choose them
        self.log = spec.log
        self.tag = f"{socket.gethostname()}:{os.getpid()}"

    # -- bookkeeping ---------------------------------------------------------------------------
    def alive(self):
        S = self.optuna.trial.TrialState
        return [t for t in self.study.get_trials(deepcopy=False) if t.state != S.FAIL]

    def needed(self, trial) -> bool:
        """Whether the study needs this trial (judged from the trials numbered before it)."""
        before = [t for t in self.alive() if t.number < trial.number]
        if self.spec.kind == "tune":
            return len(before) < self.spec.trials
        point = trial.user_attrs.get("grid_point")      # set when it was enqueued
        return point is not None and all(t.user_attrs.get("grid_point") != point for t in before)

    def enqueue_missing(self) -> None:
        """Sweep: enqueue again every grid point that no trial holds any more (its trial failed:
        a killed worker). The whole grid was enqueued when the study was created."""
        _enqueue(self.study, self.spec.space,
                 held={t.user_attrs.get("grid_point") for t in self.alive()})

    def work_left(self) -> bool:
        S = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        if any(t.state == S.WAITING for t in trials):     # enqueued: grid points, or by hand
            return True
        return self.spec.kind == "tune" and \
            len([t for t in trials if t.state != S.FAIL]) < self.spec.trials

    def _trial(self, number: int):
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)

    def running(self) -> bool:
        S = self.optuna.trial.TrialState
        return any(t.state == S.RUNNING for t in self.study.get_trials(deepcopy=False))

    # -- one trial -----------------------------------------------------------------------------
    def datasets(self, cfg: dict):
        from mininsnn.data import load_data
        key = tuple(cfg[k] for k in ("dataset", "subset", "validation", "test_subset",
                                     "num_steps", "test_num_steps"))
        if key not in self.data:
            splits = ("train", "test") if cfg["validation"] is None else ("train", "valid",
                                                                          "test")
            sets = load_data(cfg, self.spec.data_dir, splits=splits)
            self.data[key] = (sets[0], sets[1] if len(sets) == 3 else None, sets[-1])
        return self.data[key]

    def suggest(self, trial) -> dict:
        params = {}
        for key, spec in self.spec.space.items():
            if key in _RATES and params.get("loss", self.spec.base["loss"]) != "mse_count":
                continue                      # the targets of mse_count only (see check_space)
            if "choices" in spec:
                params[key] = trial.suggest_categorical(key, spec["choices"])
            elif _kind(_BY_NAME[key]) == "int":
                params[key] = trial.suggest_int(key, spec["low"], spec["high"],
                                                step=spec["step"] or 1, log=spec["log"])
            else:
                params[key] = trial.suggest_float(key, spec["low"], spec["high"],
                                                  step=spec["step"], log=spec["log"])
        return params

    def objective(self, trial) -> float:
        """:meth:`train_trial`, noting how it ended: 'done' (it returned a value or pruned
        itself) or 'taken' (another worker marked the trial failed while it ran)."""
        self.ended = None
        try:
            value = self.train_trial(trial)
        except self.optuna.TrialPruned:
            self.ended = "done"
            raise
        except self.optuna.exceptions.UpdateFinishedTrialError:
            self.ended = "taken"
            raise
        self.ended = "done"
        return value

    def train_trial(self, trial) -> float:
        from mininsnn.runs import check_new_run_dir, command_line
        from mininsnn.train import Trainer, TrainingError

        if not self.needed(trial):
            trial.set_user_attr("surplus", "not run: " + (
                f"the study had its {self.spec.trials} trials when it started"
                if self.spec.kind == "tune" else "its grid point was taken"))
            raise _Surplus()
        n = self.last = trial.number
        params = self.suggest(trial)
        cfg = validate_config({**self.spec.base, **params})
        run_dir = Path(self.spec.folder) / f"trial-{trial.number:04d}"
        check_new_run_dir(run_dir)            # never overwrite a run (another study's?)
        argv = train_argv(cfg, run_dir, self.spec.data_dir)
        train_set, valid_set, test_set = self.datasets(cfg)
        for k, v in (("run_dir", str(run_dir.resolve())), ("worker", self.tag),
                     ("command", shlex.join(["mininsnn", *argv]))):
            trial.set_user_attr(k, v)
        trainer = Trainer(cfg, train_set, test_set, run_dir=run_dir, valid_set=valid_set,
                          log=lambda m: self.log(f"trial {n}: {m}"))
        self.log(f"trial {n}: {', '.join(f'{k}={v!r}' for k, v in params.items())} -> {run_dir}")
        shown = shown_url(self.spec.storage)
        trainer.prepare_run_dir(f"# trial {n} of {self.spec.kind} {self.spec.name!r} in {shown}, "
                                f"worker {self.tag}\n"       # no password in the 'invoked as'
                                + command_line(argv).replace(self.spec.storage, shown))
        score = "valid_acc" if cfg["validation"] is not None else None

        def on_epoch(row):
            best = next(r for r in trainer.history if r["epoch"] == trainer.best["epoch"])
            trial.set_user_attr("epochs_done", row["epoch"])
            trial.set_user_attr("best_epoch", best["epoch"])
            trial.set_user_attr("test_acc", best["test_acc"])       # recorded, never chosen on
            if score is not None:
                trial.set_user_attr("valid_acc", best["valid_acc"])
            if self.spec.kind == "tune":
                trial.report(row["valid_acc"], row["epoch"])
                if row["epoch"] < cfg["epochs"] and trial.should_prune():
                    raise self.optuna.TrialPruned(f"pruned after epoch {row['epoch']} (valid "
                                                  f"acc {100 * row['valid_acc']:.2f}%)")

        try:
            trainer.fit(on_epoch=on_epoch)
        except TrainingError as e:        # diverged: a result for the sampler, not a crash
            trial.set_user_attr("stopped", str(e))
            raise self.optuna.TrialPruned(f"stopped: {e}") from None
        if score is not None:
            return trainer.best["valid_acc"]
        # a sweep without a validation set: a value Optuna can store, not a choice
        trial.set_user_attr("value_is", "final training accuracy (no validation set)")
        return trainer.history[-1]["train_acc"]

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        """Run trials while the study needs them, then wait for the others; returns the number
        of trials this worker ran (not counting surplus ones)."""
        optuna = self.optuna
        ran = 0
        while True:
            with warnings.catch_warnings():                      # 'experimental'
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(self.study)  # killed workers' trials -> FAIL
            if self.spec.kind == "sweep":
                self.enqueue_missing()
            if self.work_left():
                self.last = self.ended = None
                try:
                    self.study.optimize(self.objective, n_trials=1, catch=(_Surplus,))
                except Exception:
                    # another worker marked this trial failed while it ran (its heartbeat was
                    # late: a busy machine), so Optuna could not record it: the trial is lost,
                    # this worker goes on. Any other error stops the worker.
                    t = None if self.last is None else self._trial(self.last)
                    if t is None or t.state.name != "FAIL" or self.ended is None:
                        raise
                    self.log(f"trial {t.number} was marked failed by another worker while it "
                             f"ran (heartbeat late by over {2 * self.spec.heartbeat} s; raise "
                             "--heartbeat on a busy machine); going on")
                    continue
                if self.last is not None:                       # not a surplus trial
                    ran += 1
                    self.log(describe_trial(self._trial(self.last)))
                continue
            if not self.running():
                return ran
            time.sleep(min(self.spec.heartbeat, 5))


def describe_trial(t) -> str:
    """One line about a finished trial."""
    a = t.user_attrs
    if "surplus" in a:
        return f"trial {t.number}: {a['surplus']}"
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in t.params.items())
    acc = ""
    if "valid_acc" in a:
        acc = (f"valid acc {100 * a['valid_acc']:.2f}% (epoch {a['best_epoch']}; test "
               f"{100 * a['test_acc']:.2f}%) ")
    elif "test_acc" in a:
        acc = f"test acc {100 * a['test_acc']:.2f}% "
    state = t.state.name.lower()
    if "stopped" in a:
        state = f"stopped ({a['stopped']})"
    elif state == "pruned":
        state = f"pruned after epoch {a.get('epochs_done', 0)}"
    elif state == "fail":
        state = "failed (its worker stopped or crashed)"
    return f"trial {t.number} {state}: {acc}{params}"


def run_worker(spec: StudySpec) -> int:
    """One worker on the study of ``spec`` (created if absent); returns when the study is done."""
    study = open_study(spec)
    optuna = import_optuna()
    seed = None if spec.sampler_seed is None else spec.sampler_seed + spec.worker_index
    if spec.kind == "sweep":
        study.sampler = optuna.samplers.RandomSampler(seed=seed)   # never asked: all enqueued
        study.pruner = optuna.pruners.NopPruner()
    else:
        study.sampler = optuna.samplers.TPESampler(seed=seed) if spec.sampler == "tpe" else \
            optuna.samplers.RandomSampler(seed=seed)
        study.pruner = optuna.pruners.MedianPruner() if spec.pruner == "median" else \
            optuna.pruners.NopPruner()
    worker = _Worker(spec, study)
    worker.datasets(spec.base)                # a missing data set: one line, before any trial
    return worker.run()


def run_workers(spec: StudySpec, argv: list[str], n: int, poll: float = 2.0) -> int:
    """Start ``n`` local worker processes running ``mininsnn`` + ``argv`` (each as a worker
    with --workers 1 and its own index) on the study of ``spec``, which is created first; print
    each trial as it ends; returns 0 when all workers succeed, else 1. Numba threads are shared
    out: each worker gets NUMBA_NUM_THREADS = cores // n unless the variable is set."""
    study = open_study(spec)
    logs = Path(spec.folder) / "workers"
    logs.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    procs = []
    for i in range(n):
        log = logs / f"worker-{i}.log"
        with open(log, "a", encoding="utf-8") as f:
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "mininsnn.cli", *argv, "--workers", "1",
                 "--worker-index", str(i)], stdout=f, stderr=subprocess.STDOUT, env=env,
                start_new_session=True), log))     # Ctrl-C reaches them once, through here
    spec.log(f"started {n} workers (NUMBA_NUM_THREADS={env['NUMBA_NUM_THREADS']}); their logs: "
             f"{logs}/worker-*.log")
    shown = set()
    try:
        while True:
            done = all(p.poll() is not None for p, _ in procs)
            for t in study.get_trials(deepcopy=False):
                if t.state.is_finished() and t.number not in shown:
                    shown.add(t.number)
                    spec.log(describe_trial(t))
            if done:
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        for p, _ in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # each marks its trial failed and stops
        for p, _ in procs:
            p.wait()
        raise
    bad = [(i, p.returncode, log) for i, (p, log) in enumerate(procs) if p.returncode != 0]
    for i, code, log in bad:
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        spec.log(f"worker {i} exited with code {code}: {lines[-1] if lines else '(no output)'}")
    return 1 if bad else 0
