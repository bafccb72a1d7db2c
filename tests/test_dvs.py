"""Tests of mininsnn.dvs on synthetic AEDAT 3.1 files (no real DVS recording is available offline).

Expectations are written by hand: every event of the tiny DvsGesture folder below carries the bin
it must land in (or None when the reference preprocessing drops it).
"""

import os
import struct
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from mininsnn import dvs
from mininsnn.dvs import DVSGesture, events_to_frames, read_aedat31, read_labels_csv, read_trial_list, write_aedat31

REAL_LABELS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dvsgesture" / "user01_natural_labels.csv"
HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
PKT = struct.Struct("<hhiiiiii")


# ----------------------------------------------------------------------------- slow reference twin


class TwinError(Exception):
    pass


def twin_read(buf: bytes):
    """Per-event reference parser with the documented rules: list of (x, y, p, t), or TwinError."""
    if not buf.startswith(b"#!AER-DAT3."):
        raise TwinError("version")
    pos = 0
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0 or buf[pos:pos + 1] != b"#":
            raise TwinError("header")
        line, pos = buf[pos:nl + 1], nl + 1
        if line == b"#!END-HEADER\r\n":
            break
    fixed = {0: 8, 1: 8, 3: 36, 4: 48}
    out = []
    while pos < len(buf):
        if len(buf) - pos < 28:
            raise TwinError("short header")
        etype, _src, size, tsoff, ovf, _cap, num, nvalid = PKT.unpack_from(buf, pos)
        size_ok = size == fixed[etype] if etype in fixed else (etype == 2 and size >= 36)
        if not (size_ok and 0 <= tsoff <= size - 4 and (etype != 1 or tsoff == 4) and ovf >= 0
                and num >= 0 and 0 <= nvalid <= num):
            raise TwinError("packet header")
        pos += 28
        if pos + num * size > len(buf):
            raise TwinError("past end")
        if etype == 1:
            events = []
            for i in range(num):
                data, ts = struct.unpack_from("<Ii", buf, pos + 8 * i)
                if data & 1:
                    if ts < 0:
                        raise TwinError("negative ts")
                    events.append(((data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, (data >> 1) & 1, ovf * 2**31 + ts))
            if len(events) != nvalid:
                raise TwinError("valid count")
            out += events
        pos += num * size
    return out


def as_tuples(ev):
    return list(zip(ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist(), ev["t"].tolist()))


def check_against_twin(path: Path):
    """read_aedat31 raises ValueError exactly when the twin fails, and otherwise agrees with it."""
    buf = path.read_bytes()
    try:
        expected = twin_read(buf)
    except TwinError:
        with pytest.raises(ValueError, match=str(path.name)):
            read_aedat31(path)
        return False
    ev = read_aedat31(path)
    assert ev["x"].dtype == np.uint16 and ev["y"].dtype == np.uint16
    assert ev["p"].dtype == np.uint8 and ev["t"].dtype == np.int64
    assert as_tuples(ev) == expected
    return True


def packet(etype, size, num, payload: bytes, ovf=0, tsoff=4, nvalid=None, cap=None):
    nvalid = num if nvalid is None else nvalid
    return PKT.pack(etype, 1, size, tsoff, ovf, num if cap is None else cap, num, nvalid) + payload


def polarity_payload(events):
    """events: (x, y, p, ts, valid) -> bytes."""
    return b"".join(struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | v, ts) for x, y, p, ts, v in events)


# ----------------------------------------------------------------------------- reader, hand-made files


def test_hand_made_file_with_special_packet_and_invalid_event(tmp_path):
    special = packet(0, 8, 2, struct.pack("<IiIi", 1, 5, 3, 9))
    pol0 = packet(1, 8, 3, polarity_payload([(1, 2, 1, 100, 1), (127, 127, 0, 101, 0), (5, 6, 0, 2**31 - 1, 1)]), nvalid=2)
    pol1 = packet(1, 8, 1, polarity_payload([(9, 8, 1, 7, 1)]), ovf=3)
    path = tmp_path / "a.aedat"
    path.write_bytes(HEADER + special + pol0 + pol1)
    ev = read_aedat31(path)
    assert as_tuples(ev) == [(1, 2, 1, 100), (5, 6, 0, 2**31 - 1), (9, 8, 1, 3 * 2**31 + 7)]
    assert check_against_twin(path)


def test_header_only_file_gives_empty_arrays(tmp_path):
    path = tmp_path / "e.aedat"
    path.write_bytes(HEADER)
    ev = read_aedat31(path)
    assert all(len(v) == 0 for v in ev.values()) and ev["t"].dtype == np.int64


@pytest.mark.parametrize("content, problem", [
    (b"#!AER-DAT2.0\r\n#!END-HEADER\r\n", "not an AEDAT 3"),
    (b"#!AER-DAT3.1\r\n#Format: RAW\r\n", "end of file before '#!END-HEADER'"),
    (b"#!AER-DAT3.1\r\nFormat: RAW\r\n#!END-HEADER\r\n", "does not start with '#'"),
    (b"#!AER-DAT3.1\r\n#Format: RAW", "unterminated header line"),
    (b"#!AER-DAT3.1\r\n#!END-HEADER\n" + bytes(28), "does not start with '#'"),  # END line without \r
])
def test_broken_header(tmp_path, content, problem):
    path = tmp_path / "h.aedat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"h.aedat: byte offset \\d+: .*{problem}"):
        read_aedat31(path)


@pytest.mark.parametrize("body, problem", [
    (packet(7, 12, 0, b""), "unknown event type 7"),
    (packet(1, 6, 1, bytes(6)), "eventSize 6"),
    (packet(0, 16, 1, bytes(16)), "eventSize 16"),
    (packet(1, 8, 1, bytes(8), tsoff=0), "eventTSOffset 0"),
    (packet(1, 8, 1, polarity_payload([(1, 1, 1, 5, 1)]), ovf=-1), "negative eventTSOverflow"),
    (packet(1, 8, 3, polarity_payload([(1, 1, 1, 5, 1)] * 2)), "runs past the end"),
    (packet(1, 8, 2, polarity_payload([(1, 1, 1, 5, 1)] * 2), nvalid=1), "eventValid is 1 but 2"),
    (packet(1, 8, 1, polarity_payload([(1, 1, 1, -5, 1)])), "negative event timestamp"),
    (packet(1, 8, 1, polarity_payload([(1, 1, 1, 5, 1)]), nvalid=2), "invalid event counts"),
    (packet(1, 8, 1, polarity_payload([(1, 1, 1, 5, 1)]))[:20], "truncated packet header"),
])
def test_bad_packets_name_file_offset_problem(tmp_path, body, problem):
    good = packet(1, 8, 1, polarity_payload([(3, 4, 1, 10, 1)]))
    path = tmp_path / "p.aedat"
    path.write_bytes(HEADER + good + body)
    offset = len(HEADER) + len(good)
    with pytest.raises(ValueError, match=f"p.aedat: byte offset {offset}: .*{problem}"):
        read_aedat31(path)


# ----------------------------------------------------------------------------- writer round trip and fuzzing


events_st = st.integers(0, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 127), min_size=n, max_size=n),
    st.lists(st.integers(0, 127), min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
    st.lists(st.integers(0, 2**33), min_size=n, max_size=n),
    st.lists(st.booleans(), min_size=n, max_size=n),
))


@settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events_st, packet_size=st.integers(1, 20), sort=st.booleans())
def test_write_read_roundtrip(tmp_path, events, packet_size, sort):
    x, y, p, t, valid = (np.array(a, dtype=np.int64) for a in events)
    if sort:
        order = np.argsort(t, kind="stable")
        x, y, p, t, valid = x[order], y[order], p[order], t[order], valid[order]
    path = write_aedat31(tmp_path / "rt.aedat", x, y, p, t, packet_size=packet_size, valid=valid.astype(bool))
    ev = read_aedat31(path)
    keep = valid.astype(bool)
    for k, a in zip("xypt", (x, y, p, t)):
        np.testing.assert_array_equal(ev[k], a[keep])
    assert check_against_twin(path)
    # packets never mix overflow values and never exceed packet_size
    buf, pos = path.read_bytes(), len(HEADER)
    while pos < len(buf):
        _, _, size, _, ovf, _, num, _ = PKT.unpack_from(buf, pos)
        assert 1 <= num <= packet_size
        ts = np.frombuffer(buf, "<i4", count=2 * num, offset=pos + 28)[1::2]
        assert (ts >= 0).all()
        pos += 28 + num * size


def test_writer_rejects_bad_events(tmp_path):
    f = tmp_path / "w.aedat"
    with pytest.raises(ValueError, match="same length"):
        write_aedat31(f, [1], [1], [1], [1, 2])
    with pytest.raises(ValueError, match="x and y"):
        write_aedat31(f, [40000], [1], [1], [1])
    with pytest.raises(ValueError, match="p must be"):
        write_aedat31(f, [1], [1], [2], [1])
    with pytest.raises(ValueError, match="t must"):
        write_aedat31(f, [1], [1], [1], [-1])


raw_packet_st = st.builds(
    lambda etype, size, num, tsoff, ovf, nvalid, payload: packet(etype, size, num, payload, ovf, tsoff, nvalid),
    etype=st.sampled_from([-1, 0, 1, 1, 1, 2, 3, 4, 5, 7, 12]),
    size=st.sampled_from([-8, 0, 6, 8, 8, 8, 36, 40, 48]),
    num=st.integers(-2, 6),
    tsoff=st.sampled_from([-4, 0, 4, 4, 32]),
    ovf=st.sampled_from([-1, 0, 1, 2**31 - 1]),
    nvalid=st.integers(-1, 6),
    payload=st.binary(max_size=60),
)


def _polarity_packet(words, ovf):
    payload = b"".join(struct.pack("<Ii", w, ts) for w, ts in words)
    return packet(1, 8, len(words), payload, ovf=ovf, nvalid=sum(w & 1 for w, _ in words))


# Well-formed polarity packets (random data words, mostly non-negative timestamps) so that the
# fuzzing also reaches files that decode to events, and special-event packets to be skipped.
polarity_packet_st = st.builds(
    _polarity_packet,
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(-2, 2**31 - 1)), max_size=6),
    st.sampled_from([0, 1, 7, 2**31 - 1]),
)
special_packet_st = st.lists(st.binary(min_size=8, max_size=8), max_size=3).map(
    lambda evs: packet(0, 8, len(evs), b"".join(evs)))
packet_st = st.one_of(raw_packet_st, polarity_packet_st, polarity_packet_st, special_packet_st)


@pytest.mark.slow
@settings(deadline=None, max_examples=250)
@given(packets=st.lists(packet_st, max_size=5), junk=st.one_of(st.just(b""), st.binary(max_size=40)),
       cut=st.integers(0, 400))
def test_fuzz_structured_packets(tmp_path_factory, packets, junk, cut):
    body = b"".join(packets) + junk
    path = tmp_path_factory.mktemp("fz") / "f.aedat"
    path.write_bytes(HEADER + body[: len(body) - min(cut, len(body)) if cut % 3 == 0 else len(body)])
    check_against_twin(path)


@settings(deadline=None, max_examples=150)
@given(tail=st.binary(max_size=300), head=st.sampled_from([HEADER, b"#!AER-DAT3.1\r\n", b"#", b""]))
def test_fuzz_random_bytes_after_header(tmp_path_factory, tail, head):
    path = tmp_path_factory.mktemp("fz") / "r.aedat"
    path.write_bytes(head + tail)
    check_against_twin(path)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    rng = np.random.default_rng(5)
    n = 40
    t = np.sort(rng.integers(2**31 - 300, 2**31 + 300, n))
    path = tmp_path_factory.mktemp("v") / "valid.aedat"
    write_aedat31(path, rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n), t,
                  packet_size=7, valid=rng.random(n) > 0.2)
    return path


@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_fuzz_truncation(tmp_path_factory, valid_file, data):
    buf = valid_file.read_bytes()
    cut = data.draw(st.integers(len(HEADER), len(buf) - 1))
    path = tmp_path_factory.mktemp("tr") / "t.aedat"
    path.write_bytes(buf[:cut])
    full = as_tuples(read_aedat31(valid_file))
    try:
        ev = read_aedat31(path)
    except ValueError as e:
        assert "t.aedat: byte offset" in str(e)
        return
    # Only a cut exactly at a packet boundary is undetectable; then the result is a prefix.
    got = as_tuples(ev)
    assert got == full[: len(got)]
    assert check_against_twin(path)


@pytest.mark.slow
@settings(deadline=None, max_examples=200)
@given(data=st.data())
def test_fuzz_byte_flips(tmp_path_factory, valid_file, data):
    buf = bytearray(valid_file.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("bf") / "b.aedat"
    path.write_bytes(bytes(buf))
    check_against_twin(path)


# Every field of the 28-byte packet header drawn from values near the int16/int32 limits and
# the sizes that matter (8, 28, 36, 48), with a payload that may or may not fit.
_I32 = [-2**31, -2**31 + 1, -1, 0, 1, 2, 4, 8, 28, 36, 48, 2**16, 2**30, 2**31 - 2, 2**31 - 1]
field_packet_st = st.builds(
    lambda etype, source, size, tsoff, ovf, cap, num, nvalid, payload:
        PKT.pack(etype, source, size, tsoff, ovf, cap, num, nvalid) + payload,
    etype=st.one_of(st.sampled_from([-2**15, -1, 0, 1, 2, 3, 4, 5, 2**15 - 1]), st.integers(-2**15, 2**15 - 1)),
    source=st.sampled_from([-2**15, 0, 1, 2**15 - 1]),
    size=st.one_of(st.sampled_from(_I32), st.integers(-2**31, 2**31 - 1)),
    tsoff=st.one_of(st.sampled_from(_I32), st.integers(-2**31, 2**31 - 1)),
    ovf=st.sampled_from(_I32), cap=st.sampled_from(_I32),
    num=st.one_of(st.sampled_from(_I32), st.integers(0, 4)),
    nvalid=st.one_of(st.sampled_from(_I32), st.integers(0, 4)),
    payload=st.binary(max_size=40),
)


@pytest.mark.slow
@settings(deadline=None, max_examples=250)
@given(packets=st.lists(st.one_of(field_packet_st, polarity_packet_st), min_size=1, max_size=4))
def test_fuzz_packet_header_fields_near_the_limits(tmp_path_factory, packets):
    path = tmp_path_factory.mktemp("hf") / "h.aedat"
    path.write_bytes(HEADER + b"".join(packets))
    check_against_twin(path)          # ValueError naming the file exactly when the twin refuses


# ----------------------------------------------------------------------------- events_to_frames


def test_events_to_frames_hand_example():
    # size 16, downsample 4 -> 4x4 pixels; bins of 10 us; start 1000
    x = [0, 3, 4, 15, 0, 0]
    y = [0, 3, 15, 4, 0, 0]
    p = [0, 1, 0, 1, 0, 0]
    t = [1000, 1009, 1010, 1029, 1030, 999]
    f = events_to_frames(x, y, p, t, start=1000, T=3, bin_us=10, downsample=4, size=16)
    expected = np.zeros((3, 2, 4, 4), np.float32)
    expected[0, 0, 0, 0] = 1  # t 1000
    expected[0, 1, 0, 0] = 1  # t 1009, (3, 3) -> pixel (0, 0)
    expected[1, 0, 3, 1] = 1  # t 1010, x 4 -> 1, y 15 -> 3
    expected[2, 1, 1, 3] = 1  # t 1029; t 1030 is bin 3 >= T, t 999 is before start
    assert f.dtype == np.float32 and f.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(f, expected)
    g = events_to_frames(x, y, p, t, start=1000, T=3, bin_us=10, downsample=4, size=16, max_us=20)
    expected[2] = 0  # t 1029 is not in the first 20 us
    np.testing.assert_array_equal(g, expected)
    h = events_to_frames(x, y, p, t, start=1000, T=3, bin_us=10, downsample=4, size=16, end=1010)
    expected[1] = 0  # [start, end) excludes t 1010
    np.testing.assert_array_equal(h, expected)


def test_events_to_frames_default_shape_and_counts():
    f = events_to_frames([127, 127, 124], [0, 0, 3], [1, 1, 1], [5, 2999, 3000], start=0, T=100)
    assert f.shape == (100, 2, 32, 32)
    assert f[0, 1, 0, 31] == 2 and f[1, 1, 0, 31] == 1 and f.sum() == 3


@settings(deadline=None, max_examples=60)
@given(n=st.integers(0, 200), T=st.integers(1, 12), bin_us=st.integers(1, 50), ds=st.sampled_from([1, 2, 4, 8]),
       max_us=st.one_of(st.none(), st.integers(1, 700)), end=st.one_of(st.none(), st.integers(0, 800)),
       seed=st.integers(0, 2**32 - 1))
def test_events_to_frames_matches_loop_twin(n, T, bin_us, ds, max_us, end, seed):
    rng = np.random.default_rng(seed)
    x, y, p = rng.integers(0, 16, n), rng.integers(0, 16, n), rng.integers(0, 2, n)
    start = 100
    t = rng.integers(0, 800, n)
    f = events_to_frames(x, y, p, t, start, T, bin_us=bin_us, downsample=ds, size=16, max_us=max_us, end=end)
    ref = np.zeros((T, 2, 16 // ds, 16 // ds), np.float32)
    for i in range(n):
        rel = t[i] - start
        if rel < 0 or (end is not None and t[i] >= end) or (max_us is not None and rel >= max_us):
            continue
        if rel // bin_us < T:
            ref[rel // bin_us, p[i], y[i] // ds, x[i] // ds] += 1
    np.testing.assert_array_equal(f, ref)


@pytest.mark.parametrize("kw, problem", [
    (dict(x=[128]), "outside the 128x128"),
    (dict(y=[-1]), "outside the 128x128"),
    (dict(p=[2]), "polarity"),
    (dict(downsample=3), "divisible"),
    (dict(T=0), "T >= 1"),
    (dict(t=[1, 2]), "same length"),
])
def test_events_to_frames_rejects_bad_input(kw, problem):
    args = dict(x=[1], y=[1], p=[1], t=[1], start=0, T=5)
    args.update(kw)
    with pytest.raises(ValueError, match=problem):
        events_to_frames(**args)


# ----------------------------------------------------------------------------- label and trial files


@pytest.mark.skipif(not REAL_LABELS.exists(), reason="real label file not available")
def test_real_label_file():
    lab = read_labels_csv(REAL_LABELS)
    assert lab["label"].tolist() == [0, 1, 2, 4, 3, 5, 6, 7, 7, 8, 9, 10]
    assert lab["start"][0] == 53036986 and lab["end"][-1] == 177991967
    assert lab["line"].tolist() == list(range(2, 14))
    assert (lab["start"] < lab["end"]).all()
    read_labels_csv(REAL_LABELS, recording=(53_036_000, 177_992_000))
    with pytest.raises(ValueError, match="user01_natural_labels.csv: line 2: .*outside the recording"):
        read_labels_csv(REAL_LABELS, recording=(60_000_000, 177_992_000), tolerance_us=0)
    with pytest.raises(ValueError, match="line 13: .*outside the recording"):
        read_labels_csv(REAL_LABELS, recording=(0, 175_000_000))


@pytest.mark.parametrize("text, problem", [
    ("class,start,end\n1,0,5\n", "line 1: expected header"),
    ("class,startTime_usec,endTime_usec\n12,0,5\n", "line 2: class 12"),
    ("class,startTime_usec,endTime_usec\n1,0,5\n0,5,9\n", "line 3: class 0"),
    ("class,startTime_usec,endTime_usec\n1,9,5\n", "line 2: invalid window"),
    ("class,startTime_usec,endTime_usec\n1,5,5x\n", "line 2: expected three integers"),
    ("class,startTime_usec,endTime_usec\n1,5,9,3\n", "line 2: expected three integers"),
    ("class,startTime_usec,endTime_usec\n\n", "no label rows"),
])
def test_bad_label_files(tmp_path, text, problem):
    path = tmp_path / "u_labels.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"u_labels.csv: {problem}"):
        read_labels_csv(path)


_NEAR = [-(2**63), -1, 0, 1, 11, 12, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64, 10**30]


@settings(deadline=None, max_examples=150)
@given(rows=st.lists(st.tuples(*[st.one_of(st.sampled_from(_NEAR), st.integers(0, 20))] * 3), max_size=4))
def test_label_file_fields_near_the_limits(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("lf") / "n_labels.csv"
    path.write_text("\n".join(["class,startTime_usec,endTime_usec", *(f"{c},{a},{b}" for c, a, b in rows)]) + "\n")
    ok = rows and all(1 <= c <= 11 and 0 <= a < b < 2**63 for c, a, b in rows)
    if not ok:
        with pytest.raises(ValueError, match=r"n_labels\.csv: (line \d+: |no label rows)"):
            read_labels_csv(path)
        return
    lab = read_labels_csv(path)
    assert lab["label"].tolist() == [c - 1 for c, _, _ in rows]
    assert lab["start"].tolist() == [a for _, a, _ in rows] and lab["end"].tolist() == [b for _, _, b in rows]


@settings(deadline=None, max_examples=100)
@given(raw=st.binary(max_size=200), header=st.booleans())
def test_label_and_trial_files_of_random_bytes_name_the_file(tmp_path_factory, raw, header):
    folder = tmp_path_factory.mktemp("rb")
    head = b"class,startTime_usec,endTime_usec\n" if header else b""
    (folder / "r_labels.csv").write_bytes(head + raw)
    (folder / "trials.txt").write_bytes(raw)
    for reader, name in ((read_labels_csv, "r_labels.csv"), (read_trial_list, "trials.txt")):
        try:
            reader(folder / name)
        except ValueError as e:               # never UnicodeDecodeError, OverflowError, ...
            assert type(e) is ValueError and str(e).startswith(f"{folder / name}: "), e
            assert "\n" not in str(e) and len(str(e)) < 400 + len(str(folder))


def test_non_utf8_label_file_names_the_byte(tmp_path):
    path = tmp_path / "b_labels.csv"
    path.write_bytes(b"class,startTime_usec,endTime_usec\n1,2,\xff\xfe\n")
    with pytest.raises(ValueError, match=r"b_labels\.csv: not a UTF-8 text file \(byte offset 38: b'\\xff'\)"):
        read_labels_csv(path)
    path.write_bytes(b"user01_lab.aedat\x00\n")
    with pytest.raises(ValueError, match=r"b_labels\.csv: not a text file \(NUL byte at offset 16\)"):
        read_trial_list(path)


def test_label_file_crlf_and_trailing_blank(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(b"class,startTime_usec,endTime_usec\r\n3,10,20\r\n11,30,40\r\n\r\n")
    lab = read_labels_csv(path)
    assert lab["label"].tolist() == [2, 10] and lab["start"].tolist() == [10, 30] and lab["end"].tolist() == [20, 40]


def test_trial_list(tmp_path):
    path = tmp_path / "trials_to_train.txt"
    path.write_text("user01_fluorescent.aedat\n\nuser01_lab.aedat \n")
    assert read_trial_list(path) == ["user01_fluorescent.aedat", "user01_lab.aedat"]
    path.write_text("user01_fluorescent.aedat\n../x.aedat\n")
    with pytest.raises(ValueError, match="line 2"):
        read_trial_list(path)


# ----------------------------------------------------------------------------- tiny DvsGesture folder

# (offset from window start in us, x, y, p, expected bin or None)
TRAIN_WINDOWS = [  # user01_natural, split train: T = 100 bins, first 500 ms
    (1, 1_000_000, 1_600_000, [(0, 0, 0, 0, 0), (2999, 3, 3, 0, 0), (3000, 127, 0, 1, 1), (150_001, 64, 65, 1, 50),
                               (299_999, 5, 127, 0, 99), (300_000, 10, 10, 0, None), (-1, 20, 20, 1, None)]),
    (8, 2_000_000, 2_200_000, [(0, 9, 9, 1, 0), (199_999, 100, 50, 0, 66), (200_000, 100, 50, 0, None)]),
    (8, 3_000_000, 3_500_000, [(4000, 33, 77, 1, 1)]),
]
BASE = 2**31 - 1_000_000  # the test trial crosses the timestamp overflow at 2**31 us
TEST_WINDOWS = [  # user24_lab, split test: T = 600 bins, first 1800 ms
    (11, BASE, BASE + 1_000_000, [(0, 1, 2, 0, 0), (999_999, 126, 125, 1, 333), (1_000_000, 0, 0, 0, None)]),
    (5, BASE + 1_500_000, BASE + 4_000_000, [(0, 50, 60, 1, 0), (1_799_999, 70, 80, 0, 599),
                                             (1_800_000, 70, 80, 0, None)]),
]


def expected_frames(windows, T):
    out = np.zeros((len(windows), T, 2, 32, 32), np.float32)
    for i, (_, _, _, events) in enumerate(windows):
        for _, x, y, p, b in events:
            if b is not None and b < T:
                out[i, b, p, y // 4, x // 4] += 1
    return out


def write_trial(folder: Path, name: str, windows, noise_t, shuffle=False, extra=()):
    rows, ev = [], []
    for cls, start, end, events in windows:
        rows.append(f"{cls},{start},{end}")
        ev += [(start + off, x, y, p, True) for off, x, y, p, _ in events]
    ev += [(t, 7, 7, 1, True) for t in noise_t] + list(extra)
    ev.sort(key=lambda e: e[0])
    if shuffle:
        ev = [ev[i] for i in np.random.default_rng(0).permutation(len(ev))]
    t, x, y, p, valid = (np.array(a) for a in zip(*ev))
    path = write_aedat31(folder / f"{name}.aedat", x, y, p, t, packet_size=3, valid=valid)
    (folder / f"{name}_labels.csv").write_text("class,startTime_usec,endTime_usec\n" + "\n".join(rows) + "\n")
    return path


def insert_special_packet(path: Path):
    buf = path.read_bytes()
    i = buf.index(b"#!END-HEADER\r\n") + len(b"#!END-HEADER\r\n")
    path.write_bytes(buf[:i] + packet(0, 8, 2, struct.pack("<IiIi", 1, 0, 3, 0)) + buf[i:])


@pytest.fixture
def gesture_dir(tmp_path):
    folder = tmp_path / "DvsGesture"
    folder.mkdir()
    invalid = [(3_000_010, 1, 1, 0, False)]  # an invalid event inside a window: never counted
    train = write_trial(folder, "user01_natural", TRAIN_WINDOWS, noise_t=[500_000, 5_000_000], shuffle=True, extra=invalid)
    insert_special_packet(train)
    write_trial(folder, "user24_lab", TEST_WINDOWS, noise_t=[BASE - 10, BASE + 1_200_000, BASE + 4_500_000])
    (folder / "trials_to_train.txt").write_text("user01_natural.aedat\n")
    (folder / "trials_to_test.txt").write_bytes(b"user24_lab.aedat\r\n\r\n")
    return folder


def all_frames(ds):
    x, y = ds.get_batch(np.arange(len(ds)))
    return np.moveaxis(x, 1, 0), y  # (N, T, 2, 32, 32)


def test_tiny_folder_every_bin(gesture_dir):
    assert min(read_aedat31(gesture_dir / "user24_lab.aedat")["t"]) < 2**31 < max(read_aedat31(gesture_dir / "user24_lab.aedat")["t"])
    train = DVSGesture(gesture_dir.parent, "train", verbose=False)  # root = parent of DvsGesture
    test = DVSGesture(gesture_dir, "test", verbose=False)
    assert (len(train), len(test)) == (3, 2) and train.num_classes == test.num_classes == 11
    assert train.format == test.format == "ibm" and (train.T, test.T) == (100, 600)
    assert train.labels.tolist() == [0, 7, 7] and test.labels.tolist() == [10, 4]
    assert train.labels.dtype == np.int64
    x, y = train.get_batch([2, 0])
    assert x.shape == (100, 2, 2, 32, 32) and x.dtype == np.float32 and y.tolist() == [7, 0] and y.dtype == np.int64
    fr, _ = all_frames(train)
    np.testing.assert_array_equal(fr, expected_frames(TRAIN_WINDOWS, 100))
    assert fr.sum(axis=(1, 2, 3, 4)).tolist() == [5, 2, 1]
    fr, _ = all_frames(test)
    assert fr.shape == (2, 600, 2, 32, 32)
    np.testing.assert_array_equal(fr, expected_frames(TEST_WINDOWS, 600))
    assert fr.sum(axis=(1, 2, 3, 4)).tolist() == [2, 2]
    with pytest.raises(IndexError):
        train.get_batch([3])


def test_tiny_folder_parameters(gesture_dir):
    ds = DVSGesture(gesture_dir, "train", T=700, max_us=10_000_000, verbose=False)  # [start, end) decides
    exp = expected_frames(TRAIN_WINDOWS, 700)
    exp[0, 100, 0, 2, 2] = 1  # offset 300_000 -> bin 100, kept now
    np.testing.assert_array_equal(all_frames(ds)[0], exp)
    with pytest.warns(UserWarning, match="parameter T changed"):
        ds = DVSGesture(gesture_dir, "train", max_us=150_001, verbose=False)
    exp = expected_frames(TRAIN_WINDOWS, 100)
    exp[0, 50:] = 0  # offsets 150_001 and 299_999 are not in the first 150_001 us
    exp[1, 50:] = 0
    np.testing.assert_array_equal(all_frames(ds)[0], exp)
    with pytest.warns(UserWarning, match="parameter bin_us changed"):
        ds = DVSGesture(gesture_dir, "train", bin_us=1000, downsample=8, verbose=False)
    x, _ = ds.get_batch([1])
    assert x.shape == (100, 1, 2, 16, 16) and x[0, 0, 1, 1, 1] == 1 and x.sum() == 1  # 199_999 us is bin 199


def test_subset_view(gesture_dir):
    ds = DVSGesture(gesture_dir, "train", verbose=False)
    sub = ds.subset(2)
    assert len(sub) == 2 and sub.labels.tolist() == [0, 7] and len(ds) == 3
    np.testing.assert_array_equal(sub.get_batch([1])[0], ds.get_batch([1])[0])
    with pytest.raises(IndexError):
        sub.get_batch([2])


def test_window_outside_recording(gesture_dir):
    with open(gesture_dir / "user01_natural_labels.csv", "a") as f:
        f.write("2,9000000,9500000\n")  # the last event is at 5 s
    with pytest.raises(ValueError, match=r"user01_natural_labels.csv: line 5: label window \[9000000, 9500000\).*outside"):
        DVSGesture(gesture_dir, "train", verbose=False)
    assert not list((gesture_dir / "cache").glob("*.h5"))


def test_bad_coordinates_name_file_and_window(gesture_dir):
    write_trial(gesture_dir, "user24_lab", [(1, 10_000, 20_000, [(5, 200, 3, 1, 0)])], noise_t=[0, 30_000])
    with pytest.raises(ValueError, match=r"user24_lab.aedat \(window of user24_lab_labels.csv line 2\).*outside the 128x128"):
        DVSGesture(gesture_dir, "test", verbose=False)


def test_missing_files(gesture_dir, tmp_path):
    (gesture_dir / "user24_lab.aedat").unlink()
    with pytest.raises(FileNotFoundError, match="user24_lab.aedat not found.*trials_to_test.txt"):
        DVSGesture(gesture_dir, "test", verbose=False)
    with pytest.raises(FileNotFoundError, match="IBM release.*tonic"):
        DVSGesture(tmp_path / "nothing", "train")
    with pytest.raises(ValueError, match="split"):
        DVSGesture(gesture_dir, "val")


# ----------------------------------------------------------------------------- cache


def test_cache_reused_without_reading_sources(gesture_dir, monkeypatch):
    ds = DVSGesture(gesture_dir, "train", verbose=False)
    path = ds.cache_path
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == dvs.CACHE_FORMAT_VERSION
        assert (f.attrs["T"], f.attrs["bin_us"], f.attrs["downsample"], f.attrs["max_us"]) == (100, 3000, 4, 500_000)
        assert f["frames"].dtype == np.uint16 and f["frames"].shape == (3, 100, 2, 32, 32)
        assert f["event_count"][...].tolist() == [5, 2, 1]
    ds.close()
    stat = path.stat()

    def boom(*a, **k):
        raise AssertionError("sources read again")

    monkeypatch.setattr(dvs, "read_aedat31", boom)
    monkeypatch.setattr(dvs, "_frame_counts", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = DVSGesture(gesture_dir, "train", verbose=False)
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_ino == stat.st_ino
    np.testing.assert_array_equal(all_frames(again)[0], expected_frames(TRAIN_WINDOWS, 100))
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_parameter_change_rebuilds(gesture_dir):
    DVSGesture(gesture_dir, "train", verbose=False).close()
    with pytest.warns(UserWarning, match="parameter T changed"):
        ds = DVSGesture(gesture_dir, "train", T=50, verbose=False)
    np.testing.assert_array_equal(all_frames(ds)[0], expected_frames(TRAIN_WINDOWS, 100)[:, :50])


def test_stale_sources_and_version_rebuild(gesture_dir):
    ds = DVSGesture(gesture_dir, "train", verbose=False)
    ds.close()
    csv = gesture_dir / "user01_natural_labels.csv"
    st_ = csv.stat()
    os.utime(csv, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="source files changed"):
        DVSGesture(gesture_dir, "train", verbose=False).close()
    with h5py.File(ds.cache_path, "r+") as f:
        f.attrs["format_version"] = 0
    with pytest.warns(UserWarning, match="format version 0"):
        DVSGesture(gesture_dir, "train", verbose=False).close()
    with h5py.File(ds.cache_path, "r+") as f:
        f["labels"][1] = 3
    with pytest.warns(UserWarning, match="labels differ"):
        ds = DVSGesture(gesture_dir, "train", verbose=False)
    assert ds.labels.tolist() == [0, 7, 7]
    np.testing.assert_array_equal(all_frames(ds)[0], expected_frames(TRAIN_WINDOWS, 100))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_cache_rebuilt(gesture_dir, damage):
    ds = DVSGesture(gesture_dir, "test", verbose=False)
    ds.close()
    buf = ds.cache_path.read_bytes()
    ds.cache_path.write_bytes({"garbage": b"x" * len(buf), "truncated": buf[: len(buf) // 2], "empty": b""}[damage])
    with pytest.warns(UserWarning, match="rebuilding.*unreadable"):
        ds = DVSGesture(gesture_dir, "test", verbose=False)
    np.testing.assert_array_equal(all_frames(ds)[0], expected_frames(TEST_WINDOWS, 600))


def test_corrupt_chunk_detected_on_read_and_rebuilt(gesture_dir):
    ds = DVSGesture(gesture_dir, "train", verbose=False)
    with h5py.File(ds.cache_path, "r") as f:
        info = f["frames"].id.get_chunk_info_by_coord((1, 0, 0, 0, 0))  # the middle sample's chunk
    ds.close()
    with open(ds.cache_path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xa5" * 8)
    ds = DVSGesture(gesture_dir, "train", verbose=False)  # first/last chunks are intact: opens
    assert ds.get_batch([0])[0].sum() == 5
    with pytest.warns(UserWarning, match="read failed"):
        x, _ = ds.get_batch([1, 2])
    np.testing.assert_array_equal(np.moveaxis(x, 1, 0), expected_frames(TRAIN_WINDOWS, 100)[1:])


def test_corrupt_first_chunk_detected_on_open(gesture_dir):
    ds = DVSGesture(gesture_dir, "test", verbose=False)
    with h5py.File(ds.cache_path, "r") as f:
        info = f["frames"].id.get_chunk_info_by_coord((0, 0, 0, 0, 0))
    ds.close()
    with open(ds.cache_path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\x5a" * 8)
    with pytest.warns(UserWarning, match="rebuilding.*unreadable"):
        ds = DVSGesture(gesture_dir, "test", verbose=False)
    np.testing.assert_array_equal(all_frames(ds)[0], expected_frames(TEST_WINDOWS, 600))


def test_interrupted_build_leaves_old_cache(gesture_dir, monkeypatch):
    ds = DVSGesture(gesture_dir, "train", verbose=False)
    ds.close()
    before = ds.cache_path.read_bytes()
    calls = []
    real = dvs._frame_counts

    def dies_second_time(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(dvs, "_frame_counts", dies_second_time)
    with pytest.warns(UserWarning, match="parameter T"), pytest.raises(KeyboardInterrupt):
        DVSGesture(gesture_dir, "train", T=20, verbose=False)
    assert ds.cache_path.read_bytes() == before
    assert [p.name for p in ds.cache_path.parent.iterdir()] == [ds.cache_path.name]


def test_cache_dir_argument(gesture_dir, tmp_path):
    ds = DVSGesture(gesture_dir, "test", cache_dir=tmp_path / "c", verbose=False)
    assert ds.cache_path == tmp_path / "c" / "dvsgesture-ibm-test.h5" and ds.cache_path.exists()
    assert not (gesture_dir / "cache").exists()


def test_read_only_root_caches_under_xdg(gesture_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_access = os.access
    monkeypatch.setattr(dvs.os, "access", lambda p, mode: False if Path(p) == gesture_dir else real_access(p, mode))
    ds = DVSGesture(gesture_dir, "test", verbose=False)
    assert ds.cache_path.parent.parent == tmp_path / "xdg" / "mininsnn" and ds.cache_path.exists()
    assert not (gesture_dir / "cache").exists()
    np.testing.assert_array_equal(all_frames(ds)[0], expected_frames(TEST_WINDOWS, 600))


# ----------------------------------------------------------------------------- tonic layout


def write_tonic(root: Path, structured=False):
    """Two train samples and one test sample in tonic's layout; returns the expected train frames."""
    tr = root / "ibmGestureTrain" / "user01_natural"
    te = root / "ibmGestureTest" / "user24_lab"
    tr.mkdir(parents=True)
    te.mkdir(parents=True)
    # columns x, y, p, t with t in milliseconds
    a = np.array([[0, 0, 0, 5000.0], [3, 3, 0, 5002.999], [127, 0, 1, 5003.0], [5, 127, 0, 5299.999],
                  [10, 10, 0, 5300.0]])
    b = np.array([[9, 9, 1, 7.0], [100, 50, 0, 7.2]])
    c = np.array([[1, 2, 0, 0.5], [126, 125, 1, 1800.499], [126, 125, 1, 1800.5]])
    if structured:
        dt = np.dtype([("x", "<i8"), ("y", "<i8"), ("p", "<i8"), ("t", "<i8")])
        conv = lambda m: np.array([(int(r[0]), int(r[1]), int(r[2]), round(r[3] * 1000)) for r in m], dt)
        a, b, c = conv(a), conv(b), conv(c)
    np.save(tr / "0.npy", a)
    np.save(tr / "10.npy", b)
    np.save(te / "4.npy", c)
    exp = np.zeros((2, 100, 2, 32, 32), np.float32)
    exp[0, 0, 0, 0, 0] = 2
    exp[0, 1, 1, 0, 31] = 1
    exp[0, 99, 0, 31, 1] = 1
    exp[1, 0, 1, 2, 2] = 1
    exp[1, 0, 0, 12, 25] = 1  # 200 us after the first event
    return exp


@pytest.mark.parametrize("structured", [False, True])
def test_tonic_layout(tmp_path, structured):
    exp = write_tonic(tmp_path / "DVSGesture", structured)
    train = DVSGesture(tmp_path, "train", verbose=False)  # auto-detected
    assert train.format == "tonic" and train.labels.tolist() == [0, 10]
    np.testing.assert_array_equal(all_frames(train)[0], exp)
    test = DVSGesture(tmp_path / "DVSGesture", "test", format="tonic", verbose=False)
    fr, y = all_frames(test)
    assert y.tolist() == [4] and fr.shape == (1, 600, 2, 32, 32)
    assert fr[0, 0, 0, 0, 0] == 1 and fr[0, 599, 1, 31, 31] == 1 and fr.sum() == 2  # 1800.0 ms after start dropped
    with pytest.raises(FileNotFoundError):
        DVSGesture(tmp_path, "train", format="ibm")


def test_tonic_bad_files(tmp_path):
    write_tonic(tmp_path)
    bad = tmp_path / "ibmGestureTrain" / "user01_natural" / "x.npy"
    np.save(bad, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="x.npy: no class label"):
        DVSGesture(tmp_path, "train", verbose=False)
    bad.unlink()
    np.save(tmp_path / "ibmGestureTrain" / "user01_natural" / "3.npy", np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"3.npy: expected an \(N, 4\) array"):
        DVSGesture(tmp_path, "train", verbose=False)


# ----------------------------------------------------------------------------- synthetic generator


def test_make_synthetic_dvsgesture(tmp_path):
    folder = dvs.make_synthetic_dvsgesture(tmp_path, train_users=(1, 2), test_users=(24,), events_per_gesture=200)
    assert read_trial_list(folder / "trials_to_train.txt") == ["user01_natural.aedat", "user02_natural.aedat"]
    ds = DVSGesture(tmp_path, "train", verbose=False)
    assert len(ds) == 24 and ds.labels.tolist() == [0, 1, 2, 4, 3, 5, 6, 7, 7, 8, 9, 10] * 2
    ev = read_aedat31(folder / "user01_natural.aedat")
    lab = read_labels_csv(folder / "user01_natural_labels.csv")
    fr, _ = all_frames(ds)
    for i in range(12):  # counts equal the events in [start, start + 300 ms) computed directly
        s = lab["start"][i]
        assert fr[i].sum() == np.count_nonzero((ev["t"] >= s) & (ev["t"] < s + 300_000))
    assert len(DVSGesture(tmp_path, "test", verbose=False)) == 12


# ----------------------------------------------------------------------------- example script


@pytest.mark.slow
def test_example_synthetic_end_to_end(tmp_path, capsys):
    """examples/train_dvsgesture.py --synthetic: writer -> reader -> cache -> batches -> trainer."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "examples" / "train_dvsgesture.py"
    spec = importlib.util.spec_from_file_location("train_dvsgesture", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "run"
    assert mod.main(["--synthetic", "--epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dvs-4bit (4-bit), 12 train / 12 test samples" in text and "T=100" in text
    assert (out / "metrics.jsonl").is_file() and (out / "last.h5").is_file()
    assert mod.main(["--synthetic", "--data-dir", str(tmp_path)]) == 2


def test_time_steps_have_one_owner(gesture_dir):
    """The configuration's num_steps / test_num_steps decide how many bins the frames have, and
    the trainer refuses frames of another length instead of training on them silently."""
    from mininsnn.config import ConfigError, make_config
    from mininsnn.data import load_data
    from mininsnn.train import Trainer, forward

    cfg = make_config("dvs-4bit", num_steps=7, test_num_steps=9)
    train, test = load_data(cfg, gesture_dir.parent)
    assert train.get_batch([0])[0].shape == (7, 1, 2, 32, 32)
    assert test.get_batch([0])[0].shape == (9, 1, 2, 32, 32)
    trainer = Trainer(cfg, train, test, log=lambda m: None)
    with pytest.raises(ConfigError, match="event frames have 9 time steps, the configuration 7"):
        trainer.train_step(*test.get_batch([0, 1]))
    assert forward(trainer.net, train.get_batch([0])[0], 7).shape == (7, 1, 11)
    r = trainer.evaluate()                                   # test frames at test_num_steps
    assert r["n"] == len(test)
