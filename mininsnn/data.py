"""Image data sets (MNIST, Fashion-MNIST) and the seeded batch iterator shared by all data sets.

The IDX files behind MNIST and Fashion-MNIST are read, checked and downloaded by mininsnn.idx
(``read_idx`` is re-exported here).

Images stay uint8 in memory; ``ImageDataset.get_batch`` converts only the requested batch to
float32 in [0, 1], so a 60000-image set costs 47 MB, not 188 MB.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from mininsnn.config import ConfigError, test_steps
from mininsnn.dvs import DVSGesture
from mininsnn.idx import download_verified, read_idx, read_idx_checked

__all__ = [
    "read_idx",
    "ImageDataset",
    "load_mnist",
    "load_fashion_mnist",
    "BatchIterator",
    "load_data",
    "data_files",
    "SampleRange",
    "hold_out",
    "MNIST_SHA256",
    "FASHION_MNIST_SHA256",
    "FASHION_MNIST_URL",
]

# sha256 of the *uncompressed* IDX files (identical for the gzip and the raw copy of a file).
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Where Debian's `dataset-fashion-mnist` package installs the files.
FASHION_MNIST_SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ----------------------------------------------------------------------------- data set


class ImageDataset:
    """Images (N, H, W) uint8 and labels (N,) int64 held in memory; batches made on demand.

    get_batch(indices) -> x float32 (B, 1, H, W) = images / 255, y int64 (B,).
    """

    def __init__(self, images, labels, name="images", num_classes=None, sources=None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        src = f" ({sources[0]} and {sources[1]})" if sources else ""
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{name}: images must be uint8 (N, H, W), got {images.dtype} {images.shape}{src}")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}{src}")
        if len(images) != len(labels):
            raise ValueError(
                f"{name}: image/label count mismatch: {len(images)} images but {len(labels)} labels{src}"
            )
        labels = labels.astype(np.int64)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if len(labels) else 0
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name}: labels must lie in [0, {num_classes}), found [{labels.min()}, {labels.max()}]{src}"
            )
        self.images = images  # (N, H, W) uint8
        self.labels = labels  # (N,) int64
        self.name = name
        self.num_classes = int(num_classes)
        self.sources = sources

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ImageDataset({self.name!r}, n={len(self)}, shape={self.images.shape[1:]}, classes={self.num_classes})"

    def get_batch(self, indices):
        """x float32 (B, 1, H, W) in [0, 1] (pixels / 255, as torchvision's ToTensor), y int64 (B,)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        x = self.images[idx].astype(np.float32)  # (B, H, W); IndexError if an index is out of range
        x /= np.float32(255.0)
        return x[:, None], self.labels[idx]  # (B, 1, H, W), (B,)

    def subset(self, n: int) -> "ImageDataset":
        """The first n samples (all of them if n >= len) as a new ImageDataset sharing memory."""
        n = int(n)
        if n < 1:
            raise ValueError(f"{self.name}: subset size must be >= 1, got {n}")
        return ImageDataset(self.images[:n], self.labels[:n], self.name, self.num_classes, self.sources)


# ----------------------------------------------------------------------------- locating files


def _repo_datasets_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "datasets"


def _default_dir(name: str) -> Path:
    """$MININSNN_DATA/<name> if the variable is set, else <repo>/datasets/<name>."""
    env = os.environ.get("MININSNN_DATA")
    return Path(env) / name if env else _repo_datasets_dir() / name


def _find(folder: Path, stem: str):
    """Path of `stem`.gz or `stem` (raw) in `folder`, or None."""
    for cand in (folder / (stem + ".gz"), folder / stem):
        if cand.is_file():
            return cand
    return None


def _check_split(split: str):
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _SPLIT_FILES[split]


def _load_pair(folder: Path, split: str, name: str, sha256: dict, verify: bool, num_classes: int):
    img_stem, lbl_stem = _SPLIT_FILES[split]
    img_path, lbl_path = _find(folder, img_stem), _find(folder, lbl_stem)
    images = read_idx_checked(img_path, sha256[img_stem] if verify else None, dtype=np.uint8, ndim=3)
    labels = read_idx_checked(lbl_path, sha256[lbl_stem] if verify else None, dtype=np.uint8, ndim=1,
                              count=len(images), count_of=f" (one label per image of {img_path})")
    return ImageDataset(images, labels, f"{name}-{split}", num_classes, sources=(img_path, lbl_path))


def load_mnist(split: str = "train", root=None, verify: bool = True) -> ImageDataset:
    """MNIST train (60000) or test (10000) split from `root` (gz or raw IDX files).

    root defaults to $MININSNN_DATA/mnist, else <repo>/datasets/mnist (shipped with the repository).
    verify=True checks the sha256 of the uncompressed bytes against MNIST_SHA256.
    """
    stems = _check_split(split)
    folder = Path(root) if root is not None else _default_dir("mnist")
    missing = [s for s in stems if _find(folder, s) is None]
    if missing:
        raise FileNotFoundError(
            f"MNIST {split} split not found: expected {' and '.join(s + '[.gz]' for s in stems)} in {folder}, "
            f"missing {', '.join(missing)}. A source checkout of mininsnn ships them in datasets/mnist/; "
            "otherwise copy the four official IDX files (from http://yann.lecun.com/exdb/mnist/) into a folder "
            "and pass root=<folder> (or set MININSNN_DATA=<parent> with the files in <parent>/mnist)."
        )
    return _load_pair(folder, split, "mnist", MNIST_SHA256, verify, 10)


def fashion_mnist_search_dirs(root=None) -> list:
    """The folders load_fashion_mnist looks in, in order: ``root`` alone when it is given (a
    folder the user names is the only place looked at), else the default and system folders."""
    if root is not None:
        return [Path(root)]
    return [_default_dir("fashion-mnist"), *FASHION_MNIST_SYSTEM_DIRS]


def load_fashion_mnist(split: str = "train", root=None, download: bool = False, verify: bool = True,
                       base_url: str = FASHION_MNIST_URL) -> ImageDataset:
    """Fashion-MNIST train (60000) or test (10000) split.

    Looks in `root` only, when it is given; without it in $MININSNN_DATA/fashion-mnist or
    <repo>/datasets/fashion-mnist, then /usr/share/datasets/fashion-mnist (Debian package
    dataset-fashion-mnist). If the split is in none of them and download=True, the four official
    files are downloaded from `base_url` into `root` (or the default folder), each checked by
    sha256 and written atomically.
    """
    stems = _check_split(split)
    searched = fashion_mnist_search_dirs(root)
    for folder in searched:
        if all(_find(folder, s) is not None for s in stems):
            return _load_pair(folder, split, "fashion-mnist", FASHION_MNIST_SHA256, verify, 10)
    if download:
        dest_dir = Path(root) if root is not None else _default_dir("fashion-mnist")
        base = base_url if base_url.endswith("/") else base_url + "/"
        for stem in FASHION_MNIST_SHA256:
            if _find(dest_dir, stem) is None:
                download_verified(base + stem + ".gz", dest_dir / (stem + ".gz"), FASHION_MNIST_SHA256[stem])
        return _load_pair(dest_dir, split, "fashion-mnist", FASHION_MNIST_SHA256, verify, 10)
    where = (f"in {root} (the folder named is the only one searched; without it: "
             f"{', '.join(str(d) for d in fashion_mnist_search_dirs())})" if root is not None
             else f"in one of {', '.join(str(d) for d in searched)}")
    raise FileNotFoundError(
        f"Fashion-MNIST {split} split not found: expected {' and '.join(s + '[.gz]' for s in stems)} {where}. "
        "To get it: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
        "or pass download=True (--download on the command line) to fetch the official files, "
        f"or copy the four IDX files into {searched[0]}."
    )


# ----------------------------------------------------------------------------- batches


class BatchIterator:
    """Seeded mini-batches over any dataset with __len__ and get_batch(indices).

    The sample order of epoch e is a pure function of (seed, e):
    np.random.default_rng([seed, e]).permutation(n), so resuming at epoch e reproduces it exactly.
    The last partial batch is kept unless drop_last.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """(n,) int64: the sample order of `epoch`."""
        if int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n).astype(np.int64)

    def batch_indices(self, epoch: int) -> list:
        """The index arrays of the batches of `epoch`, in order."""
        order = self.order(epoch)
        bs = self.batch_size
        return [order[i * bs:(i + 1) * bs] for i in range(len(self))]

    def epoch(self, epoch: int):
        """Iterator over the (x, y) batches of `epoch` (each batch is made when it is reached)."""
        batches = self.batch_indices(epoch)  # validates `epoch` now, not at the first next()
        return (self.dataset.get_batch(idx) for idx in batches)


# ----------------------------------------------------------------------------- validation split


class SampleRange:
    """Samples ``start .. stop - 1`` of any data set with __len__ and get_batch(indices), as a
    view (nothing is copied or read until a batch is asked for)."""

    def __init__(self, dataset, start: int, stop: int):
        n = len(dataset)
        if not 0 <= start <= stop <= n:
            raise ValueError(f"sample range {start}..{stop} outside 0..{n}")
        self.dataset, self.start, self.stop = dataset, int(start), int(stop)
        self.num_classes = dataset.num_classes
        self.name = f"{getattr(dataset, 'name', 'data')}[{start}:{stop}]"

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"SampleRange({self.dataset!r}, {self.start}, {self.stop})"

    def get_batch(self, indices):
        """The batch of the underlying data set at ``start + indices``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} samples")
        return self.dataset.get_batch(self.start + idx)

    def subset(self, n: int) -> "SampleRange":
        """The first n samples (all of them if n >= len)."""
        if int(n) < 1:
            raise ValueError(f"{self.name}: subset size must be >= 1, got {n}")
        return SampleRange(self.dataset, self.start, min(self.stop, self.start + int(n)))


def hold_out(dataset, n: int):
    """(training part, validation part) of ``dataset``: the validation part is its last ``n``
    samples, the training part the ones before them. The split depends on nothing but ``n`` (not
    on the seed or the subset), so every run with the same ``n`` scores the same samples, and a
    training subset (the first samples) never overlaps it. In the IDX files of MNIST and
    Fashion-MNIST the classes are interleaved, so the last samples hold every class."""
    N = len(dataset)
    if not 1 <= int(n) < N:
        raise ValueError(f"validation must hold 1..{N - 1} of the {N} training samples, got {n}")
    if isinstance(dataset, ImageDataset):               # stays an ImageDataset (shares memory)
        parts = [(dataset.images[:N - n], dataset.labels[:N - n], "train"),
                 (dataset.images[N - n:], dataset.labels[N - n:], "valid")]
        return tuple(ImageDataset(im, lb, f"{dataset.name}-{tag}", dataset.num_classes,
                                  dataset.sources) for im, lb, tag in parts)
    return SampleRange(dataset, 0, N - n), SampleRange(dataset, N - n, N)


def data_files(dataset) -> list[dict]:
    """The files ``dataset`` was read from, for a run's record (a run folder's data.json): for
    MNIST and Fashion-MNIST each IDX file's absolute path, size in bytes and sha256 as stored;
    for DVS128 Gesture its folder (:meth:`mininsnn.dvs.DVSGesture.data_files`); [] for a data
    set made in memory. Views (:class:`SampleRange`, subsets) name the files of what they view."""
    while isinstance(dataset, SampleRange):
        dataset = dataset.dataset
    if not isinstance(dataset, ImageDataset):
        record = getattr(dataset, "data_files", None)
        return record() if record is not None else []
    return [{"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size,
             "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()}
            for p in (dataset.sources or ())]


# ----------------------------------------------------------------------------- by configuration


def load_data(cfg: dict, data_dir=None, download: bool = False, splits=("train", "test")):
    """The data sets of run configuration ``cfg`` for ``splits`` (a tuple, same order, of "train",
    "valid" and "test"): with ``cfg["validation"] = n`` the last n samples of the training file are
    the "valid" set and are never trained on (:func:`hold_out`); the training set is what remains,
    cut to its first ``cfg["subset"]`` samples; the test set is cut to ``cfg["test_subset"]``.

    ``data_dir`` is the folder that holds the data set's files (default: the loader's own). Event
    data are binned to the configuration's time steps: ``num_steps`` for training,
    ``test_num_steps`` (or ``num_steps``) for validation and testing (the validation set is scored
    as the test set is; for DVS128 Gesture that is a second cache of the training file at those
    steps), so the number of steps has one owner.
    A missing or incomplete folder raises ConfigError saying what to do.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ConfigError(f"data dir {data_dir} does not exist; pass --data-dir with the folder "
                          "holding the data set's files")
    for split in splits:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    n_valid = cfg.get("validation")
    if "valid" in splits and n_valid is None:
        raise ConfigError("no validation set: set validation (--validation N) to hold out the "
                          "last N training samples")
    loaded = {}                                 # (file, steps) -> data set, each loaded once
    out = []
    for split in splits:
        file = "test" if split == "test" else "train"
        # validation is scored as the test set is, so event data are binned to the test steps
        steps = cfg["num_steps"] if split == "train" else test_steps(cfg)
        if cfg["dataset"] != "dvsgesture":
            steps = None                        # images: the same data at any number of steps
        if (file, steps) not in loaded:
            try:
                if cfg["dataset"] == "mnist":
                    ds = load_mnist(file, root=data_dir)
                elif cfg["dataset"] == "fashion-mnist":
                    ds = load_fashion_mnist(file, root=data_dir, download=download)
                else:
                    root = data_dir if data_dir is not None else _default_dir("dvsgesture")
                    ds = DVSGesture(root, file, T=steps)
            except (FileNotFoundError, ValueError, OSError) as e:
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ConfigError(f"cannot load the {cfg['dataset']} {file} data: {msg}") from None
            loaded[file, steps] = ds
        ds = loaded[file, steps]
        if file == "train" and n_valid is not None:
            if n_valid >= len(ds):
                raise ConfigError(f"validation {n_valid} leaves no training samples: the "
                                  f"{cfg['dataset']} training set has {len(ds)}")
            ds = hold_out(ds, n_valid)[1 if split == "valid" else 0]
        n = {"train": cfg["subset"], "test": cfg["test_subset"]}.get(split)
        out.append(ds if n is None else ds.subset(n))
    return tuple(out)
