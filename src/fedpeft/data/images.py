"""Image classification data: Fashion-MNIST from Debian's package, and users'
own images (an ``.npz`` file, a folder per class, or any MNIST-format folder).

Images are kept as ``uint8`` arrays ``(n, H, W, C)`` (C = 1 for grey, 3 for
colour); resizing and normalisation belong to the vision backbone, which
knows its input size. Sources (:func:`load_images`):

* ``fashion-mnist``: the 70,000 Zalando images (10 classes, 28×28 grey) of
  Debian's ``dataset-fashion-mnist`` (``apt-get install
  dataset-fashion-mnist``), official 60,000 / 10,000 split;
* ``idx:DIR``: any folder of MNIST-format files
  (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-…``);
* ``npz:PATH``: arrays ``images`` ``(n, H, W[, C])`` uint8 and ``labels``
  ``(n,)`` ints, optionally ``label_names``, ``test_images`` and
  ``test_labels``;
* ``images:DIR``: ``DIR/<class>/<image files>``, or ``DIR/train/<class>/…``
  beside ``DIR/test/<class>/…``; read with Pillow, converted to RGB (or kept
  grey when every file is grey), resized to ``size`` when given (else every
  image must have the first one's size).

Sources without a test split get a seeded stratified one (``split_seed``).
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpeft.data.splits import stratified_sample

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # magic numbers of MNIST-format files


@dataclass(frozen=True, eq=False)  # identity equality: fields hold arrays
class ImageDataset:
    """Images with integer class labels.

    Attributes:
        images: ``uint8`` ``(n, H, W, C)``.
        labels: int64 ``(n,)`` in ``[0, len(label_names))``.
        label_names: Name of each class id.
        metadata: Per-example columns, each of length ``n``.
    """

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    label_names: tuple[str, ...]
    metadata: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        images, labels = self.images, np.asarray(self.labels)
        if (
            images.ndim != 4
            or images.dtype != np.uint8
            or images.shape[3] not in (1, 3)
        ):
            raise ValueError(
                f"images must be uint8 (n, H, W, C) with C 1 or 3, got "
                f"{images.dtype} {images.shape}"
            )
        if labels.shape != (len(images),) or not np.issubdtype(
            labels.dtype, np.integer
        ):
            raise ValueError(
                f"labels must be {len(images)} integers, got {labels.dtype} "
                f"{labels.shape}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.label_names)):
            raise ValueError(
                f"labels must lie in [0, {len(self.label_names)}), got "
                f"{labels.min()}..{labels.max()}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def subset(self, indices: npt.NDArray[np.integer[Any]]) -> ImageDataset:
        return ImageDataset(
            self.images[indices],
            self.labels[indices],
            self.label_names,
            {k: v[indices] for k, v in self.metadata.items()},
        )


@dataclass(frozen=True, eq=False)
class ImageCorpus:
    """A named train/test pair of images sharing one label set."""

    name: str
    train: ImageDataset
    test: ImageDataset

    def __post_init__(self) -> None:
        if self.train.label_names != self.test.label_names:
            raise ValueError("train and test must share label_names")

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.train.label_names

    def subsets(
        self, train: npt.NDArray[np.int64], test: npt.NDArray[np.int64]
    ) -> ImageCorpus:
        """The same images holding only the rows ``train`` and ``test``."""
        return ImageCorpus(self.name, self.train.subset(train), self.test.subset(test))


IMAGE_SOURCES = ("fashion-mnist", "idx:DIR", "npz:PATH", "images:DIR")


def is_image_source(source: str) -> bool:
    """Whether ``data.corpus`` names images (:func:`load_images`)."""
    return source == "fashion-mnist" or source.split(":", 1)[0] in (
        "idx",
        "npz",
        "images",
    )


def cap_images(
    data: ImageDataset, limit: int | None, rng: np.random.Generator
) -> ImageDataset:
    """At most ``limit`` images of ``data``, a stratified sample (None: all)."""
    if limit is None or limit >= len(data):
        return data
    return data.subset(np.sort(stratified_sample(data.labels, limit, rng)))


def load_images(
    source: str,
    *,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    size: int | None = None,
) -> ImageCorpus:
    """The images named by ``source`` (see the module docstring).

    Raises:
        FileNotFoundError: a missing package, file or folder (with the fix).
        ValueError: a malformed file or folder, naming it and what is wrong.
    """
    kind, _, argument = source.partition(":")
    if source == "fashion-mnist":
        if not FASHION_MNIST_DIR.is_dir():
            raise FileNotFoundError(
                f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR} is missing): "
                "apt-get install dataset-fashion-mnist (Debian/Ubuntu), or point "
                "data.corpus at idx:DIR holding the four MNIST-format files"
            )
        train, test = _read_idx_folder(FASHION_MNIST_DIR, FASHION_MNIST_CLASSES)
        return ImageCorpus(source, train, test)
    if kind == "idx" and argument:
        folder = Path(argument).expanduser()
        train, test = _read_idx_folder(folder, None)
        return ImageCorpus(source, train, test)
    if kind == "npz" and argument:
        return _split(
            source, *_read_npz(Path(argument).expanduser()), test_fraction, split_seed
        )
    if kind == "images" and argument:
        return _split(
            source,
            *_read_image_folder(Path(argument).expanduser(), size),
            test_fraction,
            split_seed,
        )
    raise ValueError(
        f"unknown image source {source!r}: use fashion-mnist, idx:DIR, npz:PATH "
        "or images:DIR"
    )


def _split(
    name: str,
    train: ImageDataset,
    test: ImageDataset | None,
    test_fraction: float,
    split_seed: int,
) -> ImageCorpus:
    if test is not None:
        return ImageCorpus(name, train, test)
    n = len(train)
    if n < 2:
        raise ValueError(f"{name}: need at least 2 images to split off a test set")
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    test_idx = stratified_sample(
        train.labels, n_test, np.random.default_rng(split_seed)
    )
    keep = np.ones(n, bool)
    keep[test_idx] = False
    return ImageCorpus(name, train.subset(np.flatnonzero(keep)), train.subset(test_idx))


# --- MNIST-format (idx) files ---------------------------------------------------------


def _read_idx_folder(
    folder: Path, names: tuple[str, ...] | None
) -> tuple[ImageDataset, ImageDataset]:
    parts = []
    for split in ("train", "t10k"):
        images = _read_idx(_idx_file(folder, f"{split}-images-idx3-ubyte"), _IDX_IMAGES)
        labels = _read_idx(_idx_file(folder, f"{split}-labels-idx1-ubyte"), _IDX_LABELS)
        if len(images) != len(labels):
            raise ValueError(
                f"{folder}: {split} has {len(images)} images but {len(labels)} labels"
            )
        parts.append((images, labels.astype(np.int64)))
    classes = names or tuple(
        str(c) for c in range(int(max(p[1].max() for p in parts)) + 1)
    )
    train, test = (ImageDataset(x[..., None], y, classes) for x, y in parts)
    return train, test


def _idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder} has no {stem} or {stem}.gz (MNIST-format files)")


def _read_idx(path: Path, magic: int) -> npt.NDArray[np.uint8]:
    """An idx file: 4-byte big-endian magic (0x08 = uint8, then the number of
    dimensions), one 4-byte size per dimension, then the bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as err:
        raise ValueError(
            f"{path}: cannot be read ({err}); the file is corrupt"
        ) from None
    if len(data) < 8 or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        what = "image" if magic == _IDX_IMAGES else "label"
        raise ValueError(
            f"{path}: not an MNIST-format {what} file (magic number {found}, "
            f"expected {magic})"
        )
    dims = magic & 0xFF
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)
    )
    offset = 4 + 4 * dims
    expected = int(np.prod(shape))
    if len(data) - offset != expected:
        raise ValueError(
            f"{path}: header says {shape} = {expected} bytes, the file holds "
            f"{len(data) - offset}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


# --- users' own files -----------------------------------------------------------------


def _read_npz(path: Path) -> tuple[ImageDataset, ImageDataset | None]:
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise ValueError(
            f"{path} lacks {missing}; it needs arrays images (n, H, W[, C]) uint8 "
            f"and labels (n,), it has {sorted(arrays)}"
        )
    labels = arrays["labels"]
    names: tuple[str, ...]
    if "label_names" in arrays:
        names = tuple(str(s) for s in arrays["label_names"])
    else:
        every = [labels] + ([arrays["test_labels"]] if "test_labels" in arrays else [])
        names = tuple(str(c) for c in range(int(max(int(x.max()) for x in every)) + 1))

    def dataset(images: np.ndarray, labels: np.ndarray, what: str) -> ImageDataset:
        if images.dtype != np.uint8:
            raise ValueError(
                f"{path}: {what} are {images.dtype}, expected uint8 (0-255)"
            )
        if images.ndim == 3:
            images = images[..., None]
        try:
            return ImageDataset(images, labels.astype(np.int64), names)
        except ValueError as err:
            raise ValueError(f"{path}: {what}: {err}") from None

    train = dataset(arrays["images"], labels, "images")
    test = None
    if "test_images" in arrays and "test_labels" in arrays:
        test = dataset(arrays["test_images"], arrays["test_labels"], "test_images")
    return train, test


def _read_image_folder(
    root: Path, size: int | None
) -> tuple[ImageDataset, ImageDataset | None]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    split_dirs = [root / "train", root / "test"]
    if all(d.is_dir() for d in split_dirs):
        classes = sorted(
            {c.name for d in split_dirs for c in d.iterdir() if c.is_dir()}
        )
        train, test = (_read_classes(d, classes, size) for d in split_dirs)
        return train, test
    classes = sorted(c.name for c in root.iterdir() if c.is_dir())
    return _read_classes(root, classes, size), None


def _read_classes(root: Path, classes: list[str], size: int | None) -> ImageDataset:
    from PIL import Image, UnidentifiedImageError

    files = [
        (f, label)
        for label, name in enumerate(classes)
        if (root / name).is_dir()
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise ValueError(
            f"{root} holds no images in class folders ({root}/<class>/*.png|jpg|…)"
        )
    pictures = []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                pictures.append(image.copy())
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"{path}: not a readable image ({err})") from None
    grey = all(p.mode in ("L", "1", "I;16") for p in pictures)
    shape = (size, size) if size else pictures[0].size
    arrays = []
    for (path, _), picture in zip(files, pictures, strict=True):
        picture = picture.convert("L" if grey else "RGB")
        if picture.size != shape:
            if size is None:
                raise ValueError(
                    f"{path} is {picture.size[0]}×{picture.size[1]}, {files[0][0]} is "
                    f"{shape[0]}×{shape[1]}: set data.image_size to resize them all"
                )
            picture = picture.resize(shape, Image.Resampling.BILINEAR)
        array = np.asarray(picture, np.uint8)
        arrays.append(array[..., None] if grey else array)
    labels = np.array([label for _, label in files], np.int64)
    return ImageDataset(np.stack(arrays), labels, tuple(classes))
