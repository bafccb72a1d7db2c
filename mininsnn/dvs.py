"""DVS128 Gesture: AEDAT 3.1 files, label windows, event-to-frame binning and a cached data set.

Reference preprocessing (the snnTorch spikevision loader used by the paper, see docs/semantics.md):
one sample per row of a trial's label CSV; events with start <= t < end, time made relative to
start; the first max_us kept (500 ms train, 1800 ms test); bin = t // 3000 us; x // 4, y // 4
(128 -> 32); count events per (bin, polarity, y, x); bins 0..T-1 with T = 100 (train), 600 (test).
A sample is a float32 tensor [T, 2, 32(y), 32(x)] of raw counts (not binarised, not normalised).

AEDAT 3.1 layout: text header lines starting with '#', the last one '#!END-HEADER\\r\\n'; then packets,
each a 28-byte little-endian header

    int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
    int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid

followed by eventNumber * eventSize bytes. A polarity event (type 1, 8 bytes) is a uint32 data word
(bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x) and an int32 timestamp in microseconds;
the full time is (eventTSOverflow << 31) | timestamp.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import warnings
from pathlib import Path

import numpy as np

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

NUM_CLASSES = 11
SENSOR_SIZE = 128
CACHE_FORMAT_VERSION = 1
# Split defaults of the reference: number of 3 ms bins and the length of the kept prefix.
DEFAULT_T = {"train": 100, "test": 600}
DEFAULT_MAX_US = {"train": 500_000, "test": 1_800_000}

_PACKET_HEADER = struct.Struct("<hhiiiiii")  # 28 bytes
_POLARITY = np.dtype([("data", "<u4"), ("ts", "<i4")])  # one polarity event, 8 bytes
_POLARITY_TYPE = 1
# Event types skipped by size: special 0, polarity 1, IMU6 3, IMU9 4 (fixed sizes); frame 2 (variable).
_FIXED_EVENT_SIZES = {0: 8, 1: 8, 3: 36, 4: 48}
_FRAME_TYPE, _FRAME_MIN_SIZE = 2, 36
_END_HEADER = b"#!END-HEADER\r\n"
_LABEL_HEADER = "class,startTime_usec,endTime_usec"


# ----------------------------------------------------------------------------- AEDAT 3.1


def _aedat_error(path, offset, problem) -> ValueError:
    return ValueError(f"{path}: byte offset {offset}: {problem}")


def _header_end(buf: bytes, path) -> int:
    """Byte offset just after the '#!END-HEADER\\r\\n' line; every header line must start with '#'."""
    if not buf.startswith(b"#!AER-DAT3."):
        first = buf[:20].split(b"\n")[0]
        raise _aedat_error(path, 0, f"not an AEDAT 3.x file (first line starts {first!r}, expected b'#!AER-DAT3.1')")
    pos = 0
    while True:
        if pos >= len(buf):
            raise _aedat_error(path, pos, "broken header: end of file before '#!END-HEADER'")
        if buf[pos:pos + 1] != b"#":
            raise _aedat_error(path, pos, "broken header: a header line does not start with '#'")
        nl = buf.find(b"\n", pos)
        if nl < 0:
            raise _aedat_error(path, pos, "broken header: unterminated header line before '#!END-HEADER'")
        line, pos = buf[pos:nl + 1], nl + 1
        if line == _END_HEADER:
            return pos


def _check_packet(path, pos, etype, esize, tsoff, tsovf, num, nvalid) -> None:
    if etype in _FIXED_EVENT_SIZES:
        if esize != _FIXED_EVENT_SIZES[etype]:
            raise _aedat_error(path, pos, f"event type {etype} with eventSize {esize} (expected {_FIXED_EVENT_SIZES[etype]})")
    elif etype == _FRAME_TYPE:
        if esize < _FRAME_MIN_SIZE:
            raise _aedat_error(path, pos, f"frame event type with eventSize {esize} (at least {_FRAME_MIN_SIZE})")
    else:
        raise _aedat_error(path, pos, f"unknown event type {etype} (eventSize {esize})")
    if not 0 <= tsoff <= esize - 4 or (etype == _POLARITY_TYPE and tsoff != 4):
        raise _aedat_error(path, pos, f"event type {etype} with invalid eventTSOffset {tsoff}")
    if tsovf < 0:
        raise _aedat_error(path, pos, f"negative eventTSOverflow {tsovf}")
    if num < 0 or not 0 <= nvalid <= num:
        raise _aedat_error(path, pos, f"invalid event counts: eventNumber {num}, eventValid {nvalid}")


def read_aedat31(path) -> dict:
    """Valid polarity events of an AEDAT 3.1 file: dict(x, y uint16, p uint8, t int64 microseconds).

    The loop runs once per packet; each packet's events are decoded with np.frombuffer. Special and
    other known event types are skipped by their size. Raises ValueError naming the file and the byte
    offset for a broken header, an unknown event type or size, a packet running past the end of the
    file, an eventValid count that disagrees with the events' valid bits, or a negative timestamp.
    """
    path = Path(path)
    buf = path.read_bytes()
    pos, n = _header_end(buf, path), len(buf)
    chunks, overflows = [], []
    while pos < n:
        if n - pos < _PACKET_HEADER.size:
            raise _aedat_error(path, pos, f"truncated packet header ({n - pos} of {_PACKET_HEADER.size} bytes)")
        etype, _source, esize, tsoff, tsovf, _capacity, num, nvalid = _PACKET_HEADER.unpack_from(buf, pos)
        _check_packet(path, pos, etype, esize, tsoff, tsovf, num, nvalid)
        start, end = pos + _PACKET_HEADER.size, pos + _PACKET_HEADER.size + num * esize
        if end > n:
            raise _aedat_error(path, pos, f"packet of {num} events x {esize} bytes runs past the end of the file "
                                          f"({n - start} bytes remain)")
        if etype == _POLARITY_TYPE:
            ev = np.frombuffer(buf, dtype=_POLARITY, count=num, offset=start)  # (num,)
            valid = (ev["data"] & 1).astype(bool)
            if int(valid.sum()) != nvalid:
                raise _aedat_error(path, pos, f"eventValid is {nvalid} but {int(valid.sum())} events have the valid bit")
            ev = ev[valid]
            if len(ev) and ev["ts"].min() < 0:
                raise _aedat_error(path, pos, "negative event timestamp")
            chunks.append(ev)
            overflows.append(tsovf)
        pos = end
    ev = np.concatenate(chunks) if chunks else np.empty(0, _POLARITY)
    overflow = np.repeat(np.asarray(overflows, np.int64), [len(c) for c in chunks])  # (N,)
    data = ev["data"]
    return {
        "x": ((data >> 17) & 0x7FFF).astype(np.uint16),
        "y": ((data >> 2) & 0x7FFF).astype(np.uint16),
        "p": ((data >> 1) & 1).astype(np.uint8),
        "t": (overflow << 31) | ev["ts"].astype(np.int64),
    }


def write_aedat31(path, x, y, p, t, packet_size: int = 4096, valid=None, source: int = 1) -> Path:
    """Write polarity events as an AEDAT 3.1 file readable by read_aedat31 (and by cAER tools).

    x, y in [0, 32768), p in {0, 1}, t >= 0 int microseconds. Packets hold at most `packet_size`
    events and are split where t >> 31 (the packet's eventTSOverflow) changes. `valid` (bool, same
    length) marks events as invalid (valid bit 0); invalid events are written but not read back.
    """
    x, y, p, t = (np.asarray(a).astype(np.int64).reshape(-1) for a in (x, y, p, t))
    n = len(t)
    if not len(x) == len(y) == len(p) == n:
        raise ValueError(f"x, y, p, t must have the same length, got {len(x)}, {len(y)}, {len(p)}, {n}")
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
    if len(valid) != n:
        raise ValueError(f"valid must have length {n}, got {len(valid)}")
    if n and (x.min() < 0 or x.max() >= 1 << 15 or y.min() < 0 or y.max() >= 1 << 15):
        raise ValueError("x and y must lie in [0, 32768)")
    if n and not np.isin(p, (0, 1)).all():
        raise ValueError("p must be 0 or 1")
    if n and (t.min() < 0 or t.max() >= 1 << 62):
        raise ValueError("t must lie in [0, 2**62)")
    if int(packet_size) < 1:
        raise ValueError(f"packet_size must be >= 1, got {packet_size}")
    ev = np.empty(n, _POLARITY)
    ev["data"] = (x << 17) | (y << 2) | (p << 1) | valid
    ev["ts"] = t & 0x7FFFFFFF
    overflow = t >> 31
    # Packet boundaries: every change of overflow, and every packet_size events within a run.
    run_starts = np.flatnonzero(np.diff(overflow)) + 1 if n else np.empty(0, np.int64)
    bounds = []
    for a, b in zip(np.r_[0, run_starts], np.r_[run_starts, n]):
        bounds += [(s, min(s + packet_size, b)) for s in range(int(a), int(b), int(packet_size))]
    parts = [b"#!AER-DAT3.1\r\n", b"#Format: RAW\r\n", b"#Source %d: DVS128\r\n" % source, _END_HEADER]
    for a, b in bounds:
        m = b - a
        parts.append(_PACKET_HEADER.pack(_POLARITY_TYPE, source, 8, 4, int(overflow[a]), m, m, int(valid[a:b].sum())))
        parts.append(ev[a:b].tobytes())
    path = Path(path)
    path.write_bytes(b"".join(parts))
    return path


# ----------------------------------------------------------------------------- labels and trials


def _read_text_lines(path: Path) -> list:
    """The lines of the UTF-8 text file ``path``; ValueError naming the file and the first
    offending byte if it is not UTF-8 text (e.g. a binary file given by mistake)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file (byte offset {e.start}: "
                         f"{raw[e.start:e.start + 1]!r})") from None
    if "\x00" in text:
        raise ValueError(f"{path}: not a text file (NUL byte at offset {raw.index(0)})")
    return text.splitlines()


def read_labels_csv(path, recording=None, tolerance_us: int = 1_000_000) -> dict:
    """A trial's label windows: dict(label int64 = class - 1, start, end int64 us, line int64).

    Format: header 'class,startTime_usec,endTime_usec', then one row per gesture, class 1..11.
    recording=(t_first, t_last) of the trial's events checks that every window lies within
    [t_first - tolerance_us, t_last + tolerance_us]; a row that does not raises ValueError naming
    the file and line. The tolerance only absorbs the gap between a window edge and the nearest
    event; a CSV paired with the wrong recording still fails. Every other problem (not UTF-8 text,
    a wrong header, a row that is not three integers, a class outside 1..11, a window that is not
    0 <= start < end < 2**63, no rows) raises ValueError naming the file and, for a row, its line.
    """
    path = Path(path)
    lines = _read_text_lines(path)
    if not lines or lines[0].strip() != _LABEL_HEADER:
        raise ValueError(f"{path}: line 1: expected header {_LABEL_HEADER!r}, got {lines[0][:60] if lines else ''!r}")
    rows = []
    for lineno, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        fields = text.strip().split(",")
        try:
            if len(fields) != 3:
                raise ValueError
            cls, start, end = (int(f) for f in fields)
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: expected three integers class,start,end, got {text[:60]!r}") from None
        if not 1 <= cls <= NUM_CLASSES:
            raise ValueError(f"{path}: line {lineno}: class {cls} outside 1..{NUM_CLASSES}")
        if not 0 <= start < end < 2**63:
            raise ValueError(f"{path}: line {lineno}: invalid window [{start}, {end}) (need 0 <= start < end < 2**63)")
        if recording is not None:
            t_first, t_last = recording
            if start < t_first - tolerance_us or end > t_last + tolerance_us:
                raise ValueError(
                    f"{path}: line {lineno}: label window [{start}, {end}) us lies outside the recording, "
                    f"whose events span [{t_first}, {t_last}] us"
                )
        rows.append((cls - 1, start, end, lineno))
    if not rows:
        raise ValueError(f"{path}: no label rows")
    arr = np.asarray(rows, dtype=np.int64)
    return {"label": arr[:, 0], "start": arr[:, 1], "end": arr[:, 2], "line": arr[:, 3]}


def read_trial_list(path) -> list:
    """The trial file names of trials_to_train.txt / trials_to_test.txt ('user01_fluorescent.aedat').
    ValueError naming the file (and line) for a file that is not UTF-8 text, a name that is not a
    plain '*.aedat' file name, or no name at all."""
    path = Path(path)
    trials = []
    for lineno, text in enumerate(_read_text_lines(path), start=1):
        name = text.strip()
        if not name:
            continue
        if not name.endswith(".aedat") or "/" in name or "\\" in name:
            raise ValueError(f"{path}: line {lineno}: expected a file name like 'user01_natural.aedat', got {name[:60]!r}")
        trials.append(name)
    if not trials:
        raise ValueError(f"{path}: no trials listed")
    return trials


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
        import h5py

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
        import h5py

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
            import h5py

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
                (folder / (name + "_labels.csv")).write_text("\n".join([_LABEL_HEADER, *rows]) + "\n")
        (folder / f"trials_to_{split}.txt").write_text("\n".join(trials) + "\n")
    return folder
