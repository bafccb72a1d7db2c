"""The files of the IBM DVS128 Gesture release: AEDAT 3.1 event recordings (read and written),
each trial's label CSV and the lists of training and test trials. The data set built from them
(binning, cache, batches) is mininsnn.dvs.

AEDAT 3.1 layout: text header lines starting with '#', the last one '#!END-HEADER\\r\\n'; then packets,
each a 28-byte little-endian header

    int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
    int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid

followed by eventNumber * eventSize bytes. A polarity event (type 1, 8 bytes) is a uint32 data word
(bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x) and an int32 timestamp in microseconds;
the full time is (eventTSOverflow << 31) | timestamp.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

__all__ = ["read_aedat31", "write_aedat31", "read_labels_csv", "read_trial_list", "NUM_CLASSES",
           "LABEL_HEADER"]

NUM_CLASSES = 11                # gesture classes; a label CSV numbers them 1..11
_PACKET_HEADER = struct.Struct("<hhiiiiii")  # 28 bytes
_POLARITY = np.dtype([("data", "<u4"), ("ts", "<i4")])  # one polarity event, 8 bytes
_POLARITY_TYPE = 1
# Event types skipped by size: special 0, polarity 1, IMU6 3, IMU9 4 (fixed sizes); frame 2 (variable).
_FIXED_EVENT_SIZES = {0: 8, 1: 8, 3: 36, 4: 48}
_FRAME_TYPE, _FRAME_MIN_SIZE = 2, 36
_END_HEADER = b"#!END-HEADER\r\n"
LABEL_HEADER = "class,startTime_usec,endTime_usec"


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
    if not lines or lines[0].strip() != LABEL_HEADER:
        raise ValueError(f"{path}: line 1: expected header {LABEL_HEADER!r}, got {lines[0][:60] if lines else ''!r}")
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
