"""DVS128 Gesture: event-to-frame binning and a cached data set of the IBM release or tonic's.

Reference preprocessing (the snnTorch spikevision loader used by the paper, see docs/semantics.md):
one sample per row of a trial's label CSV; events with start <= t < end, time made relative to
start; the first max_us kept (500 ms train, 1800 ms test); bin = t // 3000 us; x // 4, y // 4
(128 -> 32); count events per (bin, polarity, y, x); bins 0..T-1 with T = 100 (train), 600 (test).
A sample is a float32 tensor [T, 2, 32(y), 32(x)] of raw counts (not binarised, not normalised).

The IBM release's files (AEDAT 3.1 recordings, label CSVs, trial lists) are read by
mininsnn.aedat (its readers are re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np

from mininsnn.aedat import (LABEL_HEADER, NUM_CLASSES, read_aedat31, read_labels_csv,
                             read_trial_list, write_aedat31)
from mininsnn.atomic import atomic_file

__all__ = [
    "read_aedat31",
    "write_aedat31",
    "read_labels_csv",
    "read_trial_list",
    "events_to_frames",
    "DVSGesture",
    "make_synthetic_dvsgesture",
    "NUM_CLASSES",
    "CACHE_FORMAT_VERSION",
]

SENSOR_SIZE = 128
CACHE_FORMAT_VERSION = 1
# Split defaults of the reference: number of 3 ms bins and the length of the kept prefix.
DEFAULT_T = {"train": 100, "test": 600}
DEFAULT_MAX_US = {"train": 500_000, "test": 1_800_000}


# ----------------------------------------------------------------------------- frames


def _as_int64(a, name) -> np.ndarray:
    """a as int64; float input must hold whole numbers (tonic's release stores events as floats)."""
    a = np.asarray(a).reshape(-1)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a) & (a == np.floor(a))):
            raise ValueError(f"event {name} values must be whole numbers")
    elif a.dtype.kind not in "iub":
        raise ValueError(f"event {name} must be numeric, got dtype {a.dtype}")
    return a.astype(np.int64)


def _frame_counts(x, y, p, t, start, T, bin_us, downsample, size, max_us, end) -> np.ndarray:
    """Event counts int64 (T, 2, S, S), S = size // downsample; see events_to_frames."""
    x, y, p, t = (_as_int64(a, n) for a, n in ((x, "x"), (y, "y"), (p, "p"), (t, "t")))
    if not len(x) == len(y) == len(p) == len(t):
        raise ValueError(f"x, y, p, t must have the same length, got {len(x)}, {len(y)}, {len(p)}, {len(t)}")
    if int(T) < 1 or int(bin_us) < 1 or int(downsample) < 1 or size % downsample:
        raise ValueError(f"need T >= 1, bin_us >= 1 and size divisible by downsample; got T={T}, "
                         f"bin_us={bin_us}, downsample={downsample}, size={size}")
    if len(t) and (x.min() < 0 or x.max() >= size or y.min() < 0 or y.max() >= size):
        raise ValueError(f"event coordinates outside the {size}x{size} sensor: x in [{x.min()}, {x.max()}], "
                         f"y in [{y.min()}, {y.max()}]")
    if len(t) and not np.isin(p, (0, 1)).all():
        raise ValueError("polarity must be 0 or 1")
    S = size // downsample
    rel = t - int(start)  # time relative to the window start
    keep = (rel >= 0) & (rel < int(T) * int(bin_us))  # bins 0..T-1
    if end is not None:
        keep &= rel < int(end) - int(start)  # [start, end)
    if max_us is not None:
        keep &= rel < max_us  # the first max_us of the window
    b = rel[keep] // bin_us
    # flat index of (bin, polarity, y // ds, x // ds) in a (T, 2, S, S) array
    flat = ((b * 2 + p[keep]) * S + y[keep] // downsample) * S + x[keep] // downsample
    return np.bincount(flat, minlength=int(T) * 2 * S * S).reshape(int(T), 2, S, S)


def events_to_frames(x, y, p, t, start, T, bin_us=3000, downsample=4, size=128, max_us=None, end=None):
    """Event counts as float32 (T, 2, size/downsample, size/downsample), layout [t, polarity, y, x].

    Time is made relative to `start`; events before start (and at or after `end`, if given, or
    beyond the first `max_us`) are dropped; bin = (t - start) // bin_us and bins 0..T-1 are kept;
    pixel (x // downsample, y // downsample). Coordinates outside [0, size) raise ValueError.
    """
    return _frame_counts(x, y, p, t, start, T, bin_us, downsample, size, max_us, end).astype(np.float32)


# ----------------------------------------------------------------------------- input layouts


def _detect_layout(root: Path, fmt: str):
    """(layout root, format) for an IBM 'DvsGesture' folder or a tonic release."""
    if fmt not in ("auto", "ibm", "tonic"):
        raise ValueError(f"format must be 'auto', 'ibm' or 'tonic', got {fmt!r}")
    if fmt in ("auto", "ibm"):
        for cand in (root, root / "DvsGesture"):
            if (cand / "trials_to_train.txt").is_file() or (cand / "trials_to_test.txt").is_file():
                return cand, "ibm"
    if fmt in ("auto", "tonic"):
        for cand in (root, root / "DVSGesture"):
            if (cand / "ibmGestureTrain").is_dir() or (cand / "ibmGestureTest").is_dir():
                return cand, "tonic"
    raise FileNotFoundError(
        f"no DVS128 Gesture data found in {root} (format={fmt!r}). Expected either the IBM release "
        "(the DvsGesture folder with userNN_<lighting>.aedat, userNN_<lighting>_labels.csv, trials_to_train.txt "
        "and trials_to_test.txt; CC BY 4.0, http://research.ibm.com/dvsgesture/) or tonic's preprocessed release "
        "(ibmGestureTrain/ and ibmGestureTest/ with one folder per trial of <label>.npy files)."
    )


def _ibm_plan(root: Path, split: str):
    """(sources, samples): the files the split depends on, and one (trial, label, row) per sample."""
    list_path = root / f"trials_to_{split}.txt"
    if not list_path.is_file():
        raise FileNotFoundError(f"{list_path} not found (the IBM release lists the {split} trials there)")
    sources, samples = [list_path], []
    for trial in read_trial_list(list_path):
        aedat, csv = root / trial, root / (trial[: -len(".aedat")] + "_labels.csv")
        for f in (aedat, csv):
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found (listed in {list_path})")
        sources += [aedat, csv]
        labels = read_labels_csv(csv)
        samples += [(trial, int(c), int(r)) for r, c in enumerate(labels["label"])]
    return sources, samples


def _tonic_label(path: Path) -> int:
    for name in (path.stem, path.parent.name):
        if name.isdigit() and int(name) < NUM_CLASSES:
            return int(name)
    raise ValueError(f"{path}: no class label 0..{NUM_CLASSES - 1} in the file or folder name")


def _tonic_plan(root: Path, split: str):
    folder = root / ("ibmGestureTrain" if split == "train" else "ibmGestureTest")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found (tonic's release keeps the {split} samples there)")
    files = sorted(folder.rglob("*.npy"), key=lambda f: (str(f.parent), int(f.stem) if f.stem.isdigit() else -1, f.name))
    if not files:
        raise FileNotFoundError(f"no .npy samples under {folder}")
    samples = [(str(f.relative_to(folder)), _tonic_label(f), -1) for f in files]
    return files, samples


def _read_tonic_events(path: Path) -> dict:
    """Events of one tonic sample: a plain (N, 4) array of columns x, y, p, t with t in milliseconds
    (tonic's release files), or a structured array with fields x, y, p, t with t in microseconds."""
    try:
        ev = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy file ({e})") from None
    if ev.dtype.names is not None:
        if not {"x", "y", "p", "t"} <= set(ev.dtype.names):
            raise ValueError(f"{path}: structured events need fields x, y, p, t; got {ev.dtype.names}")
        t = ev["t"].astype(np.int64)
        return {"x": ev["x"], "y": ev["y"], "p": ev["p"], "t": t}
    if ev.ndim != 2 or ev.shape[1] != 4:
        raise ValueError(f"{path}: expected an (N, 4) array of x, y, p, t or structured events, got shape {ev.shape}")
    t_ms = ev[:, 3].astype(np.float64)
    return {"x": ev[:, 0], "y": ev[:, 1], "p": ev[:, 2], "t": np.rint(t_ms * 1000).astype(np.int64)}


# ----------------------------------------------------------------------------- data set


def _default_cache_dir(root: Path) -> Path:
    """<root>/cache, or, when root is read-only, a folder under $XDG_CACHE_HOME (~/.cache) named
    after root's absolute path."""
    cache = root / "cache"
    if os.access(cache if cache.is_dir() else root, os.W_OK):
        return cache
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return base / "mininsnn" / f"dvsgesture-{tag}"


class DVSGesture:
    """DVS128 Gesture, preprocessed once into an HDF5 cache, batches streamed from it.

    get_batch(indices) -> x float32 (T, B, 2, 32, 32) event counts (time-major), y int64 (B,).

    The cache (default <root>/cache/dvsgesture-<format>-<split>.h5, or under ~/.cache/mininsnn when
    root is read-only) stores uint16 counts per sample (gzip, fletcher32 checksums) with the
    preprocessing parameters, a fingerprint of the source files (names, sizes, mtimes) and
    CACHE_FORMAT_VERSION as attributes. It is rebuilt, with a warning, when a parameter, the
    sources or the format version changed, or when it cannot be read; it is written to a temporary
    file and renamed into place, so an interrupted build never leaves a half-written cache.
    """

    num_classes = NUM_CLASSES

    def __init__(self, root, split="train", cache_dir=None, T=None, format="auto", bin_us=3000,
                 downsample=4, max_us=None, tolerance_us=1_000_000, verbose=True):
        if split not in DEFAULT_T:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root, self.format = _detect_layout(Path(root), format)
        self.split = split
        self.T = DEFAULT_T[split] if T is None else int(T)
        max_us = DEFAULT_MAX_US[split] if max_us is None else int(max_us)
        if self.T < 1 or int(bin_us) < 1 or max_us < 1 or int(downsample) < 1 or SENSOR_SIZE % int(downsample):
            raise ValueError(f"need T >= 1, bin_us >= 1, max_us >= 1 and {SENSOR_SIZE} divisible by downsample; "
                             f"got T={T}, bin_us={bin_us}, max_us={max_us}, downsample={downsample}")
        self.size = SENSOR_SIZE // int(downsample)
        self.params = {"T": self.T, "bin_us": int(bin_us), "downsample": int(downsample),
                       "sensor_size": SENSOR_SIZE, "max_us": max_us, "split": split, "format": self.format}
        self.tolerance_us = int(tolerance_us)
        self.verbose = verbose
        self.name = f"dvsgesture-{split}"
        cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir(self.root)
        self.cache_path = cache_dir / f"dvsgesture-{self.format}-{split}.h5"
        plan = _ibm_plan if self.format == "ibm" else _tonic_plan
        self._sources, self._samples = plan(self.root, split)
        self._fingerprint = self._source_fingerprint()
        self._h5 = {"file": None}  # shared with subset() views, so a rebuild reaches them too
        self._open_or_build()
        self._index = np.arange(len(self._all_labels), dtype=np.int64)  # samples this view exposes

    # -- cache -------------------------------------------------------------------------------

    def _source_fingerprint(self) -> str:
        entries = []
        for f in self._sources:
            st = f.stat()
            entries.append([str(f.relative_to(self.root)), st.st_size, st.st_mtime_ns])
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()

    def _cache_problem(self, f) -> str | None:
        """Why the open cache file `f` cannot be used, or None if it matches."""
        a = f.attrs
        if a.get("format_version") != CACHE_FORMAT_VERSION:
            return f"cache format version {a.get('format_version')} != {CACHE_FORMAT_VERSION}"
        if not a.get("complete", False):
            return "cache incomplete"
        for k, v in self.params.items():
            got = a.get(k)
            got = got.item() if isinstance(got, np.generic) else got
            got = got.decode() if isinstance(got, bytes) else got
            if got != v:
                return f"parameter {k} changed ({got!r} in cache, {v!r} requested)"
        if a.get("source_fingerprint") != self._fingerprint:
            return "source files changed since the cache was built"
        n = len(self._samples)
        if "frames" not in f or "labels" not in f:
            return "cache lacks frames or labels"
        if f["frames"].shape != (n, self.T, 2, self.size, self.size) or f["frames"].dtype != np.uint16:
            return f"frames have shape {f['frames'].shape} {f['frames'].dtype}, expected {(n, self.T, 2, self.size, self.size)} uint16"
        if not np.array_equal(f["labels"][...], [s[1] for s in self._samples]):
            return "labels differ from the label files"
        if n:
            f["frames"][0], f["frames"][n - 1]  # first and last chunk decode (checksums verified)
        return None

    def _open_or_build(self) -> None:
        if self.cache_path.exists():
            try:
                f = h5py.File(self.cache_path, "r")
            except OSError as e:
                problem = f"unreadable ({e})"
            else:
                try:
                    problem = self._cache_problem(f)
                except (OSError, KeyError, ValueError, TypeError) as e:
                    problem = f"unreadable ({e})"
                if problem is None:
                    self._h5["file"] = f
                    self._all_labels = f["labels"][...].astype(np.int64)
                    return
                f.close()
            warnings.warn(f"rebuilding DVS128 Gesture cache {self.cache_path}: {problem}", stacklevel=3)
        self._build()
        self._h5["file"] = h5py.File(self.cache_path, "r")
        self._all_labels = self._h5["file"]["labels"][...].astype(np.int64)

    def _build(self) -> None:
        n, T, S = len(self._samples), self.T, self.size
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.cache_path, suffix=".h5.tmp") as tmp:
            with h5py.File(tmp, "w") as f:
                frames = f.create_dataset("frames", shape=(n, T, 2, S, S), dtype=np.uint16, chunks=(1, T, 2, S, S),
                                          compression="gzip", compression_opts=4, shuffle=True, fletcher32=True)
                f["labels"] = np.array([s[1] for s in self._samples], np.int64)
                f["trial"] = np.array([s[0] for s in self._samples], dtype=h5py.string_dtype())
                f["row"] = np.array([s[2] for s in self._samples], np.int32)
                events = f.create_dataset("event_count", shape=(n,), dtype=np.int64)
                for i, counts in enumerate(self._iter_counts()):
                    if counts.max(initial=0) > np.iinfo(np.uint16).max:
                        raise ValueError(f"sample {i} ({self._samples[i][0]}): a bin holds {counts.max()} events, "
                                         "more than the uint16 cache can store")
                    frames[i] = counts
                    events[i] = counts.sum()
                for k, v in self.params.items():
                    f.attrs[k] = v
                f.attrs["format_version"] = CACHE_FORMAT_VERSION
                f.attrs["source_fingerprint"] = self._fingerprint
                f.attrs["complete"] = True

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    def _iter_counts(self):
        """Counts int64 (T, 2, S, S) of every sample, in the order of self._samples."""
        kw = dict(T=self.T, bin_us=self.params["bin_us"], downsample=self.params["downsample"],
                  size=SENSOR_SIZE, max_us=self.params["max_us"])
        if self.format == "tonic":
            folder = self.root / ("ibmGestureTrain" if self.split == "train" else "ibmGestureTest")
            for i, (rel, _label, _row) in enumerate(self._samples):
                if i % 100 == 0:
                    self._log(f"[dvsgesture] caching {self.split} sample {i + 1}/{len(self._samples)}")
                ev = _read_tonic_events(folder / rel)
                start = int(ev["t"].min()) if len(ev["t"]) else 0
                try:
                    yield _frame_counts(ev["x"], ev["y"], ev["p"], ev["t"], start, end=None, **kw)
                except ValueError as e:
                    raise ValueError(f"{folder / rel}: {e}") from None
            return
        trials = list(dict.fromkeys(s[0] for s in self._samples))
        for k, trial in enumerate(trials):
            self._log(f"[dvsgesture] caching {self.split} trial {k + 1}/{len(trials)}: {trial}")
            aedat = self.root / trial
            ev = read_aedat31(aedat)
            t = ev["t"]
            if len(t) == 0:
                raise ValueError(f"{aedat}: no valid polarity events")
            if np.any(t[1:] < t[:-1]):  # not time-ordered (e.g. a timestamp reset): sort once
                order = np.argsort(t, kind="stable")
                ev = {key: a[order] for key, a in ev.items()}
                t = ev["t"]
            csv = self.root / (trial[: -len(".aedat")] + "_labels.csv")
            labels = read_labels_csv(csv, recording=(int(t[0]), int(t[-1])), tolerance_us=self.tolerance_us)
            for start, end, line in zip(labels["start"], labels["end"], labels["line"]):
                i0, i1 = np.searchsorted(t, [start, end], side="left")  # events with start <= t < end
                sl = slice(i0, i1)
                try:
                    yield _frame_counts(ev["x"][sl], ev["y"][sl], ev["p"][sl], t[sl], int(start), end=int(end), **kw)
                except ValueError as e:
                    raise ValueError(f"{aedat} (window of {csv.name} line {line}): {e}") from None

    # -- data set API ------------------------------------------------------------------------

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels 0..10 of the samples of this view."""
        return self._all_labels[self._index]

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return (f"DVSGesture({self.split!r}, n={len(self)}, T={self.T}, format={self.format!r}, "
                f"cache={str(self.cache_path)!r})")

    def get_batch(self, indices):
        """x float32 (T, B, 2, S, S) event counts read from the cache, y int64 (B,)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} samples")
        rows = self._index[idx]
        x = np.empty((self.T, len(rows), 2, self.size, self.size), np.float32)  # (T, B, 2, S, S)
        try:
            self._read_into(x, rows)
        except OSError as e:  # a chunk failed its checksum or cannot be read: rebuild and retry once
            warnings.warn(f"rebuilding DVS128 Gesture cache {self.cache_path}: read failed ({e})", stacklevel=2)

            self._h5["file"].close()
            self._build()
            self._h5["file"] = h5py.File(self.cache_path, "r")
            self._read_into(x, rows)
        return x, self._all_labels[rows]

    def _read_into(self, x, rows) -> None:
        frames = self._h5["file"]["frames"]
        for j, r in enumerate(rows):
            x[:, j] = frames[r]  # (T, 2, S, S) uint16 -> float32

    def subset(self, n: int) -> "DVSGesture":
        """The first n samples (all if n >= len) as a view sharing this object's cache file."""
        n = int(n)
        if n < 1:
            raise ValueError(f"{self.name}: subset size must be >= 1, got {n}")
        view = object.__new__(DVSGesture)
        view.__dict__.update(self.__dict__)
        view._index = self._index[:n]
        return view

    def data_files(self) -> list[dict]:
        """The record of the files read (mininsnn.data.data_files): the folder, how many event
        files of this split it holds, their total size and the fingerprint (names, sizes,
        mtimes) that also keys the cache."""
        return [{"path": str(self.root.resolve()), "files": len(self._sources),
                 "bytes": sum(f.stat().st_size for f in self._sources),
                 "fingerprint": self._fingerprint}]

    def close(self) -> None:
        if self._h5["file"] is not None:
            self._h5["file"].close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- synthetic data


def make_synthetic_dvsgesture(root, train_users=(1,), test_users=(24,), lightings=("natural",),
                              events_per_gesture=3000, gesture_us=2_000_000, seed=0) -> Path:
    """Write a small DvsGesture folder in the IBM layout (for tests and demos; no real data).

    Each trial has 12 label rows like the real ones (classes 1..11, class 8 twice). Class c puts
    its events in a 16x16 blob at a class-specific place on the sensor, with ON events in the first
    half of the gesture and OFF events in the second, plus uniform noise between gestures.
    Returns the DvsGesture folder.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "DvsGesture"
    folder.mkdir(parents=True, exist_ok=True)
    classes = [1, 2, 3, 5, 4, 6, 7, 8, 8, 9, 10, 11]
    for split, users in (("train", train_users), ("test", test_users)):
        trials = []
        for user in users:
            for light in lightings:
                name = f"user{user:02d}_{light}"
                trials.append(name + ".aedat")
                xs, ys, ps, ts, rows = [], [], [], [], []
                t0 = 1_000_000
                for cls in classes:
                    start, end = t0, t0 + gesture_us
                    cx, cy = 8 + 16 * ((cls - 1) % 6), 24 + 48 * ((cls - 1) // 6)
                    k = events_per_gesture
                    ts.append(np.sort(rng.integers(start, end, k)))
                    xs.append(cx + rng.integers(0, 16, k))
                    ys.append(cy + rng.integers(0, 16, k))
                    ps.append((ts[-1] < start + gesture_us // 2).astype(int))
                    noise = max(k // 20, 1)  # background activity before the next gesture
                    ts.append(np.sort(rng.integers(end, end + 500_000, noise)))
                    xs.append(rng.integers(0, SENSOR_SIZE, noise))
                    ys.append(rng.integers(0, SENSOR_SIZE, noise))
                    ps.append(rng.integers(0, 2, noise))
                    rows.append(f"{cls},{start},{end}")
                    t0 = end + 500_000
                write_aedat31(folder / (name + ".aedat"), np.concatenate(xs), np.concatenate(ys),
                              np.concatenate(ps), np.concatenate(ts))
                (folder / (name + "_labels.csv")).write_text("\n".join([LABEL_HEADER, *rows]) + "\n")
        (folder / f"trials_to_{split}.txt").write_text("\n".join(trials) + "\n")
    return folder
