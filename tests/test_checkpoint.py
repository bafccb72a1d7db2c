"""HDF5 checkpoints (mininsnn.checkpoint): exact round trips, atomic writes, clear errors."""
import os

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mininsnn import checkpoint
from mininsnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_])
arrays = dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3,
                                                                  min_side=0, max_side=4)))
leaves = st.one_of(arrays, st.integers(-(2 ** 130), 2 ** 130), st.floats(allow_nan=False),
                   st.text(max_size=20), st.booleans(), st.none(),
                   st.floats(width=32, allow_nan=False).map(np.float32))
keys = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
               min_size=1, max_size=8).filter(lambda k: k != ".")
trees = st.recursive(leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.lists(kids, max_size=3).map(tuple),
    st.dictionaries(keys, kids, max_size=3)), max_leaves=12)


def assert_same(a, b):
    """Exact equality including types, dtypes and shapes."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.slow
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(keys, trees, max_size=4))
def test_round_trip_is_exact(tmp_path, tree):
    path = tmp_path / "ck.h5"
    save_checkpoint(path, tree)
    assert_same(load_checkpoint(path), tree)


def test_rng_state_round_trips_and_replays(tmp_path):
    rng = np.random.default_rng(12345)
    rng.random(17)                                   # move off the initial state
    state = rng.bit_generator.state                  # nested dict with 128-bit ints
    save_checkpoint(tmp_path / "r.h5", {"rng": state, "nan": float("nan"), "s": "a\x00b\u00e9"})
    back = load_checkpoint(tmp_path / "r.h5")
    assert back["rng"] == state
    assert np.isnan(back["nan"])
    assert back["s"] == "a\x00b\u00e9"
    other = np.random.default_rng(0)
    other.bit_generator.state = back["rng"]
    np.testing.assert_array_equal(other.random(100), rng.random(100))


def test_format_attributes_are_stored(tmp_path):
    save_checkpoint(tmp_path / "a.h5", {"x": 1})
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f.attrs["format"] == checkpoint.FORMAT
        assert f.attrs["format_version"] == checkpoint.FORMAT_VERSION


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch, exc):
    path = tmp_path / "last.h5"
    good = {"w": np.arange(5.0), "epoch": 1}
    save_checkpoint(path, good)
    before = path.read_bytes()
    real = checkpoint._write_node
    calls = []

    def failing(parent, key, value, where):          # writes the first entry, then crashes
        calls.append(key)
        if len(calls) > 1:
            raise exc
        return real(parent, key, value, where)

    monkeypatch.setattr(checkpoint, "_write_node", failing)
    with pytest.raises(type(exc)):
        save_checkpoint(path, {"w": np.zeros(5), "epoch": 2, "more": "x"})
    assert calls[:2] == ["w", "epoch"]
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_same(load_checkpoint(path), good)
    assert sorted(os.listdir(tmp_path)) == ["last.h5"]      # no temporary junk left


def test_crash_during_rename_leaves_no_file(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("rename failed")
    monkeypatch.setattr(checkpoint.os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "new.h5", {"x": 1})
    assert os.listdir(tmp_path) == []


def test_unsupported_value_writes_nothing(tmp_path):
    save_checkpoint(tmp_path / "c.h5", {"x": 1})
    before = (tmp_path / "c.h5").read_bytes()
    for bad in ({"x": object()}, {"x": np.array(["a", "b"])}, {"x": "\ud800"},
                {"a/b": 1}, {3: 1}, {"": 1}, {"a\x00": 1}):
        with pytest.raises(ValueError):
            save_checkpoint(tmp_path / "c.h5", bad)
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "c.h5", [1, 2])
    assert (tmp_path / "c.h5").read_bytes() == before
    assert os.listdir(tmp_path) == ["c.h5"]


def test_truncated_file_gives_clear_error(tmp_path):
    path = tmp_path / "t.h5"
    save_checkpoint(path, {"w": np.random.default_rng(0).normal(size=(64, 64))})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="t.h5"):
        load_checkpoint(path)


def test_foreign_files_give_clear_error(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.h5.*not a readable HDF5"):
        load_checkpoint(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["weights"] = np.zeros(3)
    with pytest.raises(CheckpointError, match="other.h5.*not a mininsnn checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="missing.h5"):
        load_checkpoint(tmp_path / "missing.h5")
    assert issubclass(CheckpointError, ValueError)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "v.h5"
    save_checkpoint(path, {"x": 1})
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = checkpoint.FORMAT_VERSION + 1
    with pytest.raises(CheckpointError, match="v.h5.*version"):
        load_checkpoint(path)


# header fields: the root attributes and the entries' "kind" attributes, fuzzed

attr_values = st.one_of(
    st.sampled_from([checkpoint.FORMAT, checkpoint.FORMAT.encode(), "mininsnn", ""]),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12),
    st.binary(max_size=12).filter(lambda b: b"\x00" not in b),      # HDF5 strings end at NUL
    st.sampled_from([0, 1, 2, -1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, -(2**63)]).map(np.int64),
    st.sampled_from([1, 2**32 - 1, 2**64 - 1]).map(np.uint64),
    st.floats(allow_nan=True), st.booleans().map(np.bool_),
    st.lists(st.integers(-5, 5), min_size=1, max_size=3).map(lambda v: np.array(v, np.int64)),
)


@pytest.mark.slow
@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.one_of(st.none(), attr_values), version=st.one_of(st.none(), attr_values),
       kind=st.one_of(st.none(), attr_values), which=st.sampled_from(["w", "n", "s", "d"]))
def test_fuzzed_header_attributes_load_or_name_the_file(tmp_path, fmt, version, kind, which):
    path = tmp_path / "fz.h5"
    save_checkpoint(path, {"w": np.arange(3.0), "n": 7, "s": "x", "d": {"a": [1, None]}})
    with h5py.File(path, "a") as f:
        for key, value in (("format", fmt), ("format_version", version)):
            if value is None:
                del f.attrs[key]
            else:
                f.attrs[key] = value
        if kind is None:
            del f[which].attrs["kind"]
        else:
            f[which].attrs["kind"] = kind
    try:
        tree = load_checkpoint(path)
    except CheckpointError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
        return
    # accepted: the header said exactly this format and a supported integer version
    assert fmt in (checkpoint.FORMAT, checkpoint.FORMAT.encode())
    assert isinstance(version, np.integer) and not isinstance(version, np.bool_)
    assert 1 <= int(version) <= checkpoint.FORMAT_VERSION
    assert set(tree) == {"w", "n", "s", "d"}


def test_unreadable_checkpoint_says_so(tmp_path, monkeypatch):
    path = tmp_path / "p.h5"
    save_checkpoint(path, {"x": 1})

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(checkpoint.h5py, "File", denied)
    with pytest.raises(CheckpointError, match=r"p\.h5: cannot read it: Permission denied"):
        load_checkpoint(path)
