"""IDX files (LeCun's format of MNIST and Fashion-MNIST): reading, checking and downloading.

IDX format: a 4-byte big-endian magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the row-major payload. Files may be gzip-compressed (detected by the
magic bytes ``1f 8b``, not by the file name). Header arithmetic is done with Python integers, so
dimensions whose product exceeds 2**63 (e.g. 65536**4) are reported, never wrapped.

A file's checksum is the sha256 of its *uncompressed* content, the same for the gzip and the raw
copy of a file (datasets/README.md says why not the gzip container's). The data sets built from
these files are in mininsnn.data.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import struct
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from mininsnn.atomic import atomic_file

__all__ = ["read_idx", "read_raw_bytes", "parse_idx", "read_idx_checked", "download_verified"]

# IDX type code -> big-endian dtype of the payload.
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# deflate cannot inflate data more than 1032-fold: a header declaring more is refused unread
_GZIP_MAX_RATIO = 1032


def read_raw_bytes(path) -> bytes:
    """The uncompressed content of `path` (gunzipped if it starts with the gzip magic 1f 8b).

    A gzip stream is decompressed only as far as the IDX header inside it says the file goes,
    plus one byte: a stream that inflates to far more than its header declares (a "gzip bomb")
    costs no more memory than the declared file, and the extra byte makes ``parse_idx`` report
    the length mismatch. (A stream read to its end also has its CRC checked.)"""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            head = stream.read(4)
            if len(head) < 4 or head[2] not in _IDX_TYPES or head[3] == 0:
                return head              # not an IDX header: parse_idx says what is wrong from it
            head += stream.read(4 * head[3])
            if len(head) < 4 + 4 * head[3]:
                return head
            dims = struct.unpack_from(f">{head[3]}I", head, 4)
            declared = math.prod(dims) * _IDX_TYPES[head[2]].itemsize
            if declared > _GZIP_MAX_RATIO * len(data):
                raise ValueError(f"{path}: header declares {declared} bytes of items, more than a "
                                 f"{len(data)}-byte gzip file can hold")
            return head + stream.read(declared + 1)
    except EOFError as e:  # gzip stream ends before its end-of-stream marker
        raise ValueError(f"{path}: truncated gzip file ({e})") from None
    except (OSError, zlib.error) as e:  # bad header, bad CRC or length, corrupt deflate data
        raise ValueError(f"{path}: corrupt gzip file ({e})") from None


def parse_idx(raw: bytes, path, dtype=None, ndim=None, count=None, count_of="") -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file (see :func:`read_idx`); every inconsistency
    raises ValueError naming ``path``. ``count_of`` ends the message of a wrong ``count``."""
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX file ({len(raw)} bytes, header needs 4)")
    magic = f"0x{raw[:4].hex()}"
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: wrong magic number {magic} (an IDX file starts with 00 00 <type> <ndim>)")
    type_code, nd = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x} in magic number {magic} "
                         f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_TYPES)})")
    if nd == 0:
        raise ValueError(f"{path}: magic number {magic} declares 0 dimensions")
    item = _IDX_TYPES[type_code]
    if dtype is not None and item.newbyteorder("=") != np.dtype(dtype):
        raise ValueError(f"{path}: magic number {magic} declares {item.newbyteorder('=').name} items "
                         f"(type code 0x{type_code:02x}), expected {np.dtype(dtype).name}")
    if ndim is not None and nd != ndim:
        raise ValueError(f"{path}: magic number {magic} declares {nd} dimensions, expected {ndim}")
    header_len = 4 + 4 * nd
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes, {nd} dimensions need {header_len})")
    dims = struct.unpack_from(f">{nd}I", raw, 4)  # Python ints: the products below cannot wrap
    if count is not None and dims[0] != count:
        raise ValueError(f"{path}: holds {dims[0]} items, expected {count}{count_of}")
    expected = math.prod(dims) * item.itemsize
    found = len(raw) - header_len
    if found != expected:
        raise ValueError(
            f"{path}: payload length mismatch: dimensions {dims} of {item.itemsize}-byte items need "
            f"{expected} bytes after the {header_len}-byte header, found {found}"
        )
    if expected == 0:  # NumPy refuses shapes whose non-zero dimensions span >= 2**63 bytes
        if math.prod(d for d in dims if d) * item.itemsize > np.iinfo(np.intp).max:
            raise ValueError(f"{path}: dimensions {dims} are too large for an array, even an empty one")
        return np.zeros(dims, item.newbyteorder("="))
    arr = np.frombuffer(raw, dtype=item, offset=header_len).reshape(dims)
    return arr.astype(item.newbyteorder("="), copy=True)  # native byte order, writable


def read_idx(path, dtype=None, ndim=None, count=None) -> np.ndarray:
    """Read an IDX file (gzip or raw). Returns a writable array in native byte order.

    The contract: the array returned has exactly the header's dimensions and item type, and
    every file that is not a complete IDX file of what the caller asked for raises ValueError
    naming the file (and the magic number when the header is wrong): a truncated or corrupt
    gzip stream, a magic number not of the form 00 00 <type> <ndim>, an unknown type code, 0
    dimensions, a truncated header, a payload whose length differs from the dimensions'
    product (computed without overflow), and, when given:

        dtype   the item type (e.g. np.uint8: MNIST's images and labels; a float file is refused)
        ndim    the number of dimensions (3 for images (N, H, W), 1 for labels (N,))
        count   the first dimension, the number of items (a label file: the number of images)
    """
    return parse_idx(read_raw_bytes(path), path, dtype, ndim, count)


def read_idx_checked(path, sha256: str | None, **expect) -> np.ndarray:
    """:func:`read_idx` of ``path``, first checking that the sha256 of its uncompressed content
    is ``sha256`` (None: no check); ``expect`` as :func:`parse_idx` takes it."""
    raw = read_raw_bytes(path)
    if sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != sha256:
            raise ValueError(
                f"{path}: sha256 of the uncompressed content is {got}, expected {sha256} "
                "(file corrupt or not the official release; pass verify=False to load it anyway)"
            )
    return parse_idx(raw, path, **expect)


def download_verified(url: str, dest: Path, sha256: str) -> None:
    """Fetch `url` to `dest` atomically: temp file in dest's folder, check, then rename.

    The check is the sha256 of the uncompressed content (see datasets/README.md for why not the
    gzip container's). On any failure the temp file is removed and dest is left untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest, suffix=".part") as tmp:
        with open(tmp, "wb") as f:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    while chunk := resp.read(1 << 20):
                        f.write(chunk)
            except OSError as e:  # URLError, HTTPError, timeouts, refused connections
                raise OSError(f"download of {url} failed: {e}") from None
        try:
            raw = read_raw_bytes(tmp)
        except ValueError as e:
            raise ValueError(f"download of {url} is not a valid file: {e}") from None
        got = hashlib.sha256(raw).hexdigest()
        if got != sha256:
            raise ValueError(
                f"download of {url}: checksum error: sha256 of the uncompressed content is {got}, "
                f"expected {sha256}; nothing was written to {dest}"
            )
