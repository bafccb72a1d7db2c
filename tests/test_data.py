"""Tests of mininsnn.data: IDX reading, MNIST/Fashion-MNIST loading and download, BatchIterator."""

import functools
import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mininsnn import data, idx
from mininsnn.data import BatchIterator, ImageDataset, load_fashion_mnist, load_mnist, read_idx

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FMNIST_SHARED = SHARED / "fashion-mnist"

# Known class frequencies of the official releases.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ----------------------------------------------------------------------------- helpers

_TYPE_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
               np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file for `arr`, written field by field with struct (independent of the reader)."""
    be = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    code = _TYPE_CODES[be.dtype]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + be.tobytes()


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> Path:
    raw = idx_bytes(arr)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def tiny_split(folder: Path, n_img=5, n_lbl=5, h=4, w=3, seed=0, compress=True):
    """Tiny train files in MNIST naming; returns (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_img, h, w), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n_lbl).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


# ----------------------------------------------------------------------------- IDX reader

dtypes = st.sampled_from([np.dtype("u1"), np.dtype("i1"), np.dtype(">i2"), np.dtype(">i4"),
                          np.dtype(">f4"), np.dtype(">f8")])
shapes = st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple)


@settings(deadline=None, max_examples=60)
@given(dtype=dtypes, shape=shapes, compress=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_read_idx_roundtrip(tmp_path_factory, dtype, shape, compress, seed):
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path_factory.mktemp("idx") / "a.idx", arr, compress)
    out = read_idx(path)
    assert out.shape == shape
    assert out.dtype == dtype.newbyteorder("=")
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # writable, not a view on the file's bytes


def test_read_idx_gzip_detected_by_magic_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_named_raw = write_idx(tmp_path / "x.gz", arr, compress=False)
    raw_named_gz = write_idx(tmp_path / "x.idx", arr, compress=True)
    np.testing.assert_array_equal(read_idx(gz_named_raw), arr)
    np.testing.assert_array_equal(read_idx(raw_named_gz), arr)


@pytest.mark.parametrize("cut", [1, 10, 100])
def test_truncated_gzip_raises_naming_file(tmp_path, cut):
    arr = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "images-idx3-ubyte.gz", arr, compress=True)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(ValueError, match="images-idx3-ubyte.gz.*gzip"):
        read_idx(path)


def test_corrupt_gzip_crc_raises(tmp_path):
    arr = np.zeros((10, 4, 4), np.uint8)
    path = write_idx(tmp_path / "c.gz", arr, compress=True)
    b = bytearray(path.read_bytes())
    b[-8] ^= 0xFF  # the stored CRC32
    path.write_bytes(bytes(b))
    with pytest.raises(ValueError, match=r"c\.gz.*corrupt gzip"):
        read_idx(path)


def test_gzip_bomb_is_not_inflated_past_its_header(tmp_path):
    # the header declares 10 images (7,840 bytes); the stream inflates to 64 MB more
    import tracemalloc
    raw = idx_bytes(np.zeros((10, 28, 28), np.uint8)) + bytes(64 << 20)
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw, compresslevel=9))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"bomb-idx3-ubyte\.gz: payload length mismatch"):
        read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak     # the declared file and the gzip bytes, not 64 MB


def test_gzip_bomb_with_a_wrong_header_is_not_inflated(tmp_path):
    import tracemalloc
    path = tmp_path / "bad-magic.gz"
    path.write_bytes(gzip.compress(b"PK\x03\x04" + bytes(64 << 20), compresslevel=9))
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"bad-magic\.gz: wrong magic number 0x504b0304"):
        read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_gzip_header_declaring_more_than_deflate_can_hold_is_refused_unread(tmp_path):
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 1 << 20, 1 << 10, 1 << 10)   # 1 TiB of pixels
    path = tmp_path / "huge.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match=r"huge\.gz: header declares 1099511627776 bytes"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x01\x08\x01", b"PK\x03\x04"])
def test_wrong_magic_raises(tmp_path, magic):
    raw = idx_bytes(np.arange(4, dtype=np.uint8))
    path = tmp_path / "bad-magic"
    path.write_bytes(magic + raw[4:])
    with pytest.raises(ValueError, match="bad-magic.*magic"):
        read_idx(path)


def test_unknown_type_code_and_zero_dims_raise(tmp_path):
    raw = idx_bytes(np.arange(4, dtype=np.uint8))
    (tmp_path / "t").write_bytes(raw[:2] + b"\x07" + raw[3:])
    with pytest.raises(ValueError, match="type code 0x07"):
        read_idx(tmp_path / "t")
    (tmp_path / "z").write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(ValueError, match="0 dimensions"):
        read_idx(tmp_path / "z")


@pytest.mark.parametrize("delta", [-1, +1, -12])
def test_payload_length_mismatch_raises(tmp_path, delta):
    raw = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    raw = raw[:delta] if delta < 0 else raw + b"\x00" * delta
    path = tmp_path / "len"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match=r"len.*payload length mismatch.*need 24 bytes.*found %d" % (24 + delta)):
        read_idx(path)


@pytest.mark.parametrize("n", [0, 3, 9])
def test_truncated_header_raises(tmp_path, n):
    raw = idx_bytes(np.zeros((2, 3, 4), np.uint8))[:n]
    (tmp_path / "h").write_bytes(raw)
    with pytest.raises(ValueError, match="h: "):
        read_idx(tmp_path / "h")


# IDX headers: every field fuzzed, sizes near 2^31, 2^32 and 2^63, checked against an oracle

_ITEM_SIZES = {code: dt.itemsize for dt, code in _TYPE_CODES.items()}
_NATIVE = {code: dt.newbyteorder("=") for dt, code in _TYPE_CODES.items()}
_NEAR = [0, 1, 2, 3, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1]


def idx_oracle(raw: bytes, dtype=None, ndim=None, count=None):
    """(shape, native dtype) that an IDX reader must return for ``raw``, or None if it must
    refuse it; written from the format's definition with Python integers, independently of
    mininsnn.data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _ITEM_SIZES or raw[3] == 0:
        return None
    code, nd = raw[2], raw[3]
    if len(raw) < 4 + 4 * nd:
        return None
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(nd))
    size = _ITEM_SIZES[code]
    for d in dims:
        size *= d
    if len(raw) - 4 - 4 * nd != size:
        return None
    nominal = _ITEM_SIZES[code]                 # an empty array's shape must still fit in intp
    for d in dims:
        nominal *= d or 1
    if size == 0 and nominal >= 2**63:
        return None
    if (dtype is not None and _NATIVE[code] != np.dtype(dtype)) or (ndim is not None and nd != ndim) \
            or (count is not None and dims[0] != count):
        return None
    return dims, _NATIVE[code]


@st.composite
def idx_headers(draw):
    """Bytes of an IDX file whose header fields are drawn: type code (known or any byte), declared
    ndim (matching the dims or any byte), dims (small or near 2^16, 2^31, 2^32), a payload that
    fits the dims when it is small or a short one, and sometimes a cut."""
    code = draw(st.one_of(st.sampled_from(sorted(_ITEM_SIZES)), st.integers(0, 255)))
    dims = draw(st.lists(st.one_of(st.integers(0, 4), st.sampled_from(_NEAR)), max_size=5))
    nd = draw(st.one_of(st.just(len(dims)), st.integers(0, 255)))
    magic = draw(st.one_of(st.just(b"\x00\x00"), st.binary(min_size=2, max_size=2)))
    size = _ITEM_SIZES.get(code, 1)
    for d in dims:
        size *= d
    payload = draw(st.one_of(st.just(size), st.integers(0, 40))) if size <= 4096 else draw(st.integers(0, 40))
    raw = magic + bytes([code, nd]) + b"".join(struct.pack(">I", d) for d in dims) + draw(st.binary(min_size=payload, max_size=payload))
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return raw if cut is None else raw[:cut]


expectations = st.fixed_dictionaries({}, optional={"dtype": st.sampled_from([np.uint8, np.int8, np.float32]),
                                                    "ndim": st.integers(1, 4), "count": st.sampled_from([0, 1, 2, 3, 2**31])})


@pytest.mark.slow
@settings(deadline=None, max_examples=400)
@given(raw=idx_headers(), expect=expectations)
def test_idx_header_fields_fuzzed_against_an_oracle(raw, expect):
    want = idx_oracle(raw, **expect)
    try:
        arr = idx.parse_idx(raw, "fuzz-idx", **expect)
    except ValueError as e:       # never OverflowError, MemoryError or a nameless numpy error
        assert want is None, (raw[:24], expect, str(e))
        msg = str(e)
        assert msg.startswith("fuzz-idx: ") and "\n" not in msg
        if len(raw) >= 4 and (raw[0] or raw[1] or raw[2] not in _ITEM_SIZES or raw[3] == 0
                              or "dtype" in expect or "ndim" in expect) and "magic" not in msg:
            assert any(k in msg for k in ("payload", "items, expected", "truncated header", "too large")), msg
        return
    assert want is not None, (raw[:24], expect)
    assert (arr.shape, arr.dtype) == want


@settings(deadline=None, max_examples=30)
@given(raw=idx_headers(), compress=st.booleans())
def test_idx_files_fuzzed_name_the_file(tmp_path_factory, raw, compress):
    path = tmp_path_factory.mktemp("idx") / "fuzzed.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    if idx_oracle(raw) is None:
        with pytest.raises(ValueError, match=r"^" + str(path).replace(".", r"\.") + ": "):
            read_idx(path)
    else:
        assert read_idx(path).shape == idx_oracle(raw)[0]


@pytest.mark.parametrize("code, dims, need", [
    (0x08, (65536, 65536, 65536, 65536), 2**64),                 # wrapped to 0 in int64
    (0x0E, (2**32 - 1, 2**32 - 1), 8 * (2**32 - 1) ** 2),         # past 2^63 bytes
    (0x08, (2**31,), 2**31), (0x0C, (2**31 - 1,), 4 * (2**31 - 1)), (0x08, (2**32 - 1,), 2**32 - 1),
    (0x08, (2**31, 2**32 - 1), 2**31 * (2**32 - 1)),
])
def test_huge_header_sizes_are_reported_not_wrapped(tmp_path, code, dims, need):
    path = tmp_path / "huge"
    path.write_bytes(bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims))
    with pytest.raises(ValueError, match=rf"huge: payload length mismatch: .* need {need} bytes .* found 0$"):
        read_idx(path)


def test_read_idx_refuses_what_its_callers_would(tmp_path):
    floats = write_idx(tmp_path / "floats", np.zeros((2, 3, 3), ">f4"), compress=True)
    with pytest.raises(ValueError, match=r"floats: magic number 0x00000d03 declares float32 items \(type code 0x0d\), expected uint8"):
        read_idx(floats, dtype=np.uint8)
    images = write_idx(tmp_path / "images", np.zeros((2, 3, 3), np.uint8), compress=False)
    with pytest.raises(ValueError, match=r"images: magic number 0x00000803 declares 3 dimensions, expected 1"):
        read_idx(images, ndim=1)       # an image file where a label file belongs
    labels = write_idx(tmp_path / "labels", np.zeros(4, np.uint8), compress=False)
    with pytest.raises(ValueError, match=r"labels: holds 4 items, expected 5$"):
        read_idx(labels, count=5)
    assert read_idx(labels, dtype=np.uint8, ndim=1, count=4).shape == (4,)
    assert read_idx(floats).dtype == np.float32          # without expectations: any valid IDX file


def test_loaders_refuse_float_images_and_image_files_as_labels(tmp_path):
    tiny_split(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 4, 3), ">f4"), compress=True)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: magic number 0x00000d03 declares float32"):
        load_mnist("train", root=tmp_path, verify=False)
    tiny_split(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((5, 4, 3), np.uint8), compress=True)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: magic number 0x00000803 declares 3 dimensions, expected 1"):
        load_mnist("train", root=tmp_path, verify=False)


# ----------------------------------------------------------------------------- ImageDataset


def test_image_dataset_batches_are_scaled_lazily(tmp_path):
    images, labels = tiny_split(tmp_path, n_img=7, n_lbl=7, h=4, w=3)
    ds = load_mnist("train", root=tmp_path, verify=False)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (7, 4, 3)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (7,)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert len(ds) == 7 and ds.num_classes == 10 and ds.name == "mnist-train"
    x, y = ds.get_batch(np.array([6, 0, 6]))
    assert x.dtype == np.float32 and x.shape == (3, 1, 4, 3)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images[[6, 0, 6]].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, labels[[6, 0, 6]])
    assert not any(isinstance(v, np.ndarray) and v.dtype.kind == "f" for v in vars(ds).values())
    with pytest.raises(IndexError):
        ds.get_batch([7])


def test_pixel_scaling_endpoints():
    ds = ImageDataset(np.array([[[0, 255, 51]]], np.uint8), np.array([3]), "e", 10)
    x, _ = ds.get_batch([0])
    np.testing.assert_array_equal(x.ravel(), np.array([0.0, 1.0, 0.2], np.float32))


def test_subset_first_n(tmp_path):
    images, labels = tiny_split(tmp_path, n_img=6, n_lbl=6)
    ds = load_mnist("train", root=tmp_path, verify=False)
    sub = ds.subset(4)
    assert isinstance(sub, ImageDataset) and len(sub) == 4 and sub.num_classes == 10
    np.testing.assert_array_equal(sub.images, images[:4])
    np.testing.assert_array_equal(sub.labels, labels[:4])
    assert len(ds.subset(100)) == 6
    with pytest.raises(ValueError):
        ds.subset(0)


def test_count_mismatch_names_both_files(tmp_path):
    tiny_split(tmp_path, n_img=5, n_lbl=4)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: holds 4 items, expected 5 "
                                         r"\(one label per image of .*train-images-idx3-ubyte\.gz\)"):
        load_mnist("train", root=tmp_path, verify=False)


def test_raw_files_load_like_gzip(tmp_path):
    images, labels = tiny_split(tmp_path, compress=False)
    ds = load_mnist("train", root=tmp_path, verify=False)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_checksum_mismatch_rejected_when_verifying(tmp_path):
    tiny_split(tmp_path)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: sha256"):
        load_mnist("train", root=tmp_path)


def test_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_mnist("test", root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "t10k-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "root=" in msg
    with pytest.raises(ValueError, match="split"):
        load_mnist("val", root=tmp_path)


def test_env_var_root(tmp_path, monkeypatch):
    images, _ = tiny_split(tmp_path / "mnist")
    monkeypatch.setenv("MININSNN_DATA", str(tmp_path))
    np.testing.assert_array_equal(load_mnist("train", verify=False).images, images)


# ----------------------------------------------------------------------------- shipped MNIST


@pytest.fixture(scope="module")
def mnist_train():
    return load_mnist("train")


def test_shipped_mnist_default_root_is_repo_datasets(monkeypatch):
    monkeypatch.delenv("MININSNN_DATA", raising=False)
    assert data._default_dir("mnist") == Path(data.__file__).resolve().parents[1] / "datasets" / "mnist"
    for stem, digest in data.MNIST_SHA256.items():
        raw = gzip.decompress((data._default_dir("mnist") / (stem + ".gz")).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == digest


def test_shipped_mnist_both_splits(mnist_train):
    test = load_mnist("test")
    assert mnist_train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert mnist_train.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(mnist_train.labels), MNIST_TRAIN_COUNTS)
    np.testing.assert_array_equal(np.bincount(test.labels), MNIST_TEST_COUNTS)
    assert mnist_train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_shipped_mnist_tampered_copy_fails_verify(tmp_path, monkeypatch):
    src = data._default_dir("mnist")
    for stem in data._SPLIT_FILES["test"]:
        shutil.copy(src / (stem + ".gz"), tmp_path / (stem + ".gz"))
    raw = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed, still a valid IDX file
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: sha256"):
        load_mnist("test", root=tmp_path)
    assert len(load_mnist("test", root=tmp_path, verify=False)) == 10000


# ----------------------------------------------------------------------------- BatchIterator


def test_batch_count_469(mnist_train):
    assert len(BatchIterator(mnist_train, 128)) == 469
    assert len(BatchIterator(mnist_train, 128, drop_last=True)) == 468
    idx = BatchIterator(mnist_train, 128).batch_indices(0)
    assert len(idx) == 469 and len(idx[-1]) == 60000 - 468 * 128 == 96


def test_batches_are_pure_function_of_seed_and_epoch(mnist_train):
    a = BatchIterator(mnist_train, 128, seed=3)
    b = BatchIterator(mnist_train, 128, seed=3)  # a fresh iterator, as after a resume
    np.testing.assert_array_equal(np.concatenate(a.batch_indices(2)), np.concatenate(b.batch_indices(2)))
    np.testing.assert_array_equal(a.order(2), np.random.default_rng([3, 2]).permutation(60000))
    assert not np.array_equal(a.order(0), a.order(1))
    assert not np.array_equal(a.order(0), BatchIterator(mnist_train, 128, seed=4).order(0))
    xa, ya = next(iter(a.epoch(5)))
    xb, yb = next(iter(b.epoch(5)))
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, mnist_train.labels[a.order(5)[:128]])


class _Duck:
    """Minimal dataset: __len__ and get_batch only."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def get_batch(self, idx):
        return np.asarray(idx) * 10, np.asarray(idx)


@settings(deadline=None, max_examples=50)
@given(n=st.integers(1, 300), bs=st.integers(1, 64), shuffle=st.booleans(), drop_last=st.booleans(),
       seed=st.integers(0, 1000), epoch=st.integers(0, 50))
def test_batches_partition_the_dataset(n, bs, shuffle, drop_last, seed, epoch):
    it = BatchIterator(_Duck(n), bs, shuffle=shuffle, seed=seed, drop_last=drop_last)
    batches = list(it.epoch(epoch))
    assert len(batches) == len(it) == (n // bs if drop_last else -(-n // bs))
    for x, y in batches[:-1]:
        assert len(y) == bs
    seen = np.concatenate([y for _, y in batches]) if batches else np.array([], int)
    if drop_last:
        assert len(seen) == (n // bs) * bs and len(np.unique(seen)) == len(seen)
    else:
        np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    if not shuffle:
        np.testing.assert_array_equal(seen, np.arange(len(seen)))
    np.testing.assert_array_equal(batches[0][0] if batches else [], batches[0][1] * 10 if batches else [])


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_batch_size_validated(bad):
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(_Duck(10), bad)


def test_negative_epoch_rejected_immediately():
    with pytest.raises(ValueError, match="epoch"):
        BatchIterator(_Duck(10), 2).epoch(-1)


# ----------------------------------------------------------------------------- Fashion-MNIST


needs_fmnist = pytest.mark.skipif(not (FMNIST_SHARED / "t10k-images-idx3-ubyte.gz").exists(),
                                  reason="shared Fashion-MNIST copy not available")


@pytest.fixture
def isolated_fmnist(tmp_path, monkeypatch):
    """No default or system Fashion-MNIST folder is visible."""
    monkeypatch.setenv("MININSNN_DATA", str(tmp_path / "envdata"))
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "system",))
    return tmp_path


@needs_fmnist
def test_fashion_mnist_from_given_dir(isolated_fmnist):
    train = load_fashion_mnist("train", root=FMNIST_SHARED)
    test = load_fashion_mnist("test", root=FMNIST_SHARED)
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
    assert test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert train.name == "fashion-mnist-train" and train.num_classes == 10


def test_fashion_mnist_system_dir_is_searched_only_when_no_folder_is_named(isolated_fmnist):
    images, _ = tiny_split(isolated_fmnist / "system")
    ds = load_fashion_mnist("train", verify=False)
    np.testing.assert_array_equal(ds.images, images)
    assert ds.sources[0].parent == isolated_fmnist / "system"
    (isolated_fmnist / "nothing-here").mkdir()
    with pytest.raises(FileNotFoundError, match="the only one searched"):
        load_fashion_mnist("train", root=isolated_fmnist / "nothing-here", verify=False)


def test_fashion_mnist_missing_message(isolated_fmnist):
    with pytest.raises(FileNotFoundError) as e:
        load_fashion_mnist("train", root=isolated_fmnist / "empty")
    msg = str(e.value)
    for part in ("apt-get install dataset-fashion-mnist", "download=True", "--download",
                 str(isolated_fmnist / "empty"), str(isolated_fmnist / "system"), "train-images-idx3-ubyte"):
        assert part in msg


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    """(folder, base_url): a loopback HTTP server serving a temp folder, stopped afterwards."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _serve_tiny(folder, monkeypatch, n=6):
    """Four tiny IDX gz files in `folder`, with their raw sha256 as the expected checksums."""
    rng = np.random.default_rng(1)
    sha, arrays = {}, {}
    for stem in data.FASHION_MNIST_SHA256:
        arr = (rng.integers(0, 256, (n, 5, 5)) if "images" in stem else rng.integers(0, 10, n)).astype(np.uint8)
        raw = idx_bytes(arr)
        (folder / (stem + ".gz")).write_bytes(gzip.compress(raw))
        sha[stem] = hashlib.sha256(raw).hexdigest()
        arrays[stem] = arr
    monkeypatch.setattr(data, "FASHION_MNIST_SHA256", sha)
    return arrays


def test_fashion_mnist_download_loopback(isolated_fmnist, http_folder, monkeypatch):
    folder, url = http_folder
    arrays = _serve_tiny(folder, monkeypatch)
    dest = isolated_fmnist / "fm"
    ds = load_fashion_mnist("test", root=dest, download=True, base_url=url)
    np.testing.assert_array_equal(ds.images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.labels, arrays["t10k-labels-idx1-ubyte"])
    assert sorted(p.name for p in dest.iterdir()) == sorted(s + ".gz" for s in arrays)
    for stem in arrays:
        assert (dest / (stem + ".gz")).read_bytes() == (folder / (stem + ".gz")).read_bytes()
    # Now present: found without the server.
    (folder / "train-images-idx3-ubyte.gz").unlink()
    assert len(load_fashion_mnist("train", root=dest)) == 6


@pytest.mark.parametrize("damage", ["content", "truncated", "missing"])
def test_fashion_mnist_download_bad_file_leaves_nothing(isolated_fmnist, http_folder, monkeypatch, damage):
    folder, url = http_folder
    _serve_tiny(folder, monkeypatch)
    bad = folder / "train-labels-idx1-ubyte.gz"
    if damage == "content":  # a valid gzip of different labels
        raw = bytearray(gzip.decompress(bad.read_bytes()))
        raw[-1] = (raw[-1] + 1) % 10
        bad.write_bytes(gzip.compress(bytes(raw)))
        err, pattern = ValueError, "checksum error"
    elif damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:-5])
        err, pattern = ValueError, "truncated gzip"
    else:
        bad.unlink()
        err, pattern = OSError, "404"
    dest = isolated_fmnist / "fm"
    with pytest.raises(err, match=f"train-labels-idx1-ubyte.gz.*{pattern}|{pattern}.*train-labels"):
        load_fashion_mnist("train", root=dest, download=True, base_url=url)
    names = sorted(p.name for p in dest.iterdir())
    assert names == ["train-images-idx3-ubyte.gz"]  # downloaded before the bad one; verified
    assert not any(n.endswith(".part") for n in names)


@pytest.mark.slow
@needs_fmnist
def test_fashion_mnist_download_official_files_loopback(isolated_fmnist, http_folder):
    folder, url = http_folder
    for stem in data.FASHION_MNIST_SHA256:
        shutil.copy(FMNIST_SHARED / (stem + ".gz"), folder / (stem + ".gz"))
    ds = load_fashion_mnist("test", root=isolated_fmnist / "fm", download=True, base_url=url)
    assert ds.images.shape == (10000, 28, 28)
    assert len(list((isolated_fmnist / "fm").iterdir())) == 4
