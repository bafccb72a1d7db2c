"""Optuna studies of mininsnn (mininsnn.tune): the storage, the study and its folder, and one line
per trial. Optuna (and SQLAlchemy, which it brings) is an optional extra: it is imported inside
the functions that need it (:func:`import_optuna`), never when this module is imported.
"""
from __future__ import annotations

import importlib.util
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mininsnn.atomic import write_text
from mininsnn.config import ConfigError
from mininsnn.searchspace import grid_points

__all__ = ["INSTALL_HINT", "import_optuna", "StudySpec", "default_storage", "shown_url",
           "open_storage", "open_study", "enqueue_grid", "study_counts", "describe_trial"]

INSTALL_HINT = 'pip install -e ".[tune]"'


def import_optuna():
    """The optuna module, or a one-line ConfigError saying how to install it."""
    try:
        import optuna                    # an optional extra
    except ImportError:
        raise ConfigError(f"studies need optuna, an optional extra: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # mininsnn prints its own lines
    return optuna


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
    # the command line's parser of a trial's `mininsnn train` arguments, argv -> {dest: value}
    # of the flags given; passed in by the command (the library imports no command), and used
    # to check that a trial's command gives back its configuration (mininsnn.tune.train_argv)
    parse_train: object = field(default=None, repr=False)

    def meta(self) -> dict:
        """What must agree between the workers of one study (stored in the study)."""
        return json.loads(json.dumps({"kind": self.kind, "base": self.base, "space": self.space}))


def default_storage(folder) -> str:
    return f"sqlite:///{Path(folder).resolve() / 'study.db'}"


def shown_url(url: str) -> str:
    """The storage URL with any password hidden."""
    try:
        from sqlalchemy.engine import make_url     # with optuna (an optional extra)
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _storage_url(url: str):
    """(SQLAlchemy URL, URL text, engine keywords) of --storage ``url``, with a driver that is
    installed; or a one-line ConfigError: not a URL, unknown scheme, driver not installed."""
    import sqlalchemy                    # with optuna (an optional extra)
    from sqlalchemy.engine import make_url     # with optuna (an optional extra)

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
    return u, url, kw


def open_storage(url: str, heartbeat: int = 60):
    """An Optuna RDBStorage on ``url`` with heartbeats (every ``heartbeat`` s, stale after twice
    that), or a one-line ConfigError: not a URL, unknown scheme, driver not installed,
    database unreachable."""
    optuna = import_optuna()
    import sqlalchemy                    # with optuna (an optional extra)

    shown = shown_url(url)
    u, url, kw = _storage_url(url)
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
    from sqlalchemy import event     # with optuna (an optional extra)

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


def _check_marker(spec: StudySpec, folder: Path, mark: dict, create: bool) -> None:
    """ConfigError if the study folder's study.json names another study."""
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
                              f"{mark['storage']}; pass its --study/--storage or another folder")
    elif create and mark["storage"] == "study.db":      # the default storage lives in the folder
        folder.mkdir(parents=True, exist_ok=True)


def _load_or_create(optuna, spec: StudySpec, storage, shown: str, create: bool):
    """(study, created): the study of ``spec`` in ``storage``, created if ``create``."""
    try:
        return optuna.load_study(study_name=spec.name, storage=storage), False
    except KeyError:
        if not create:
            raise ConfigError(f"no study {spec.name!r} in {shown}") from None
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize")
        if spec.kind == "sweep":          # the grid first: a worker that sees the study
            enqueue_grid(study, spec.space, held=set())   # sees all of it
        study.set_user_attr("mininsnn", spec.meta())
        return study, True
    except optuna.exceptions.DuplicatedStudyError:      # another worker created it now
        return optuna.load_study(study_name=spec.name, storage=storage), False


def _check_stored(optuna, study, spec: StudySpec, storage, shown: str):
    """The study, once its creator has stored its meta; ConfigError unless it is ``spec``'s."""
    meta = spec.meta()
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
    return study


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
    _check_marker(spec, folder, mark, create)
    storage = open_storage(spec.storage, spec.heartbeat)
    study, created = _load_or_create(optuna, spec, storage, shown, create)
    if not created:
        study = _check_stored(optuna, study, spec, storage, shown)
    if not (folder / "study.json").is_file() and create:   # every check passed: the folder
        folder.mkdir(parents=True, exist_ok=True)            # is this study's
        _write_json_atomic(folder / "study.json", mark)
    return study


def enqueue_grid(study, grid: dict, held: set) -> None:
    """Enqueue the points of ``grid`` whose index is not in ``held``, as waiting trials."""
    for i, point in enumerate(grid_points(grid)):
        if i not in held:
            study.enqueue_trial(point, user_attrs={"grid_point": i})


def study_counts(study) -> dict:
    """Number of trials by state name, e.g. {'COMPLETE': 10, 'PRUNED': 2, 'FAIL': 1}."""
    counts = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


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

