"""Image sources: Fashion-MNIST from its Debian package, MNIST-format folders,
.npz files and class folders, with the errors a user meets."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedpeft.data.images import (
    FASHION_MNIST_CLASSES,
    ImageDataset,
    load_images,
)
from tests.conftest import needs_fashion_mnist


@needs_fashion_mnist
def test_fashion_mnist_loads_with_its_shapes_and_labels() -> None:
    corpus = load_images("fashion-mnist")
    assert corpus.train.images.shape == (60_000, 28, 28, 1)
    assert corpus.test.images.shape == (10_000, 28, 28, 1)
    assert corpus.train.label_names == FASHION_MNIST_CLASSES
    np.testing.assert_array_equal(np.bincount(corpus.train.labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(corpus.test.labels), [1000] * 10)
    # The first training image is an ankle boot (Zalando's README figure).
    assert corpus.train.label_names[corpus.train.labels[0]] == "Ankle boot"
    assert 0.25 < corpus.train.images.mean() / 255 < 0.32


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_an_mnist_format_folder_round_trips_and_corruption_is_named(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    y = np.arange(12) % 3
    for split, part in (("train", slice(0, 8)), ("t10k", slice(8, 12))):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", x[part], 2051)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", y[part], 2049)
    corpus = load_images(f"idx:{tmp_path}")
    np.testing.assert_array_equal(corpus.train.images[..., 0], x[:8])
    np.testing.assert_array_equal(corpus.test.labels, y[8:])
    assert corpus.train.label_names == ("0", "1", "2")

    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[8:], 2051)  # wrong magic
    with pytest.raises(ValueError, match="not an MNIST-format label file"):
        load_images(f"idx:{tmp_path}")
    data = gzip.compress((2049).to_bytes(4, "big") + (9).to_bytes(4, "big") + b"\0")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(data)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_images(f"idx:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_images(f"idx:{tmp_path}")


def test_npz_images_with_and_without_a_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 6, 6, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    np.savez(tmp_path / "a.npz", images=x, labels=y, label_names=list("abcd"))
    corpus = load_images(f"npz:{tmp_path / 'a.npz'}", test_fraction=0.25)
    assert (len(corpus.train), len(corpus.test)) == (30, 10)
    counts = np.bincount(corpus.test.labels)  # stratified: 10 of 4 equal classes
    assert counts.sum() == 10 and set(counts) == {2, 3}
    assert corpus.train.label_names == ("a", "b", "c", "d")
    again = load_images(f"npz:{tmp_path / 'a.npz'}", test_fraction=0.25)
    np.testing.assert_array_equal(again.test.images, corpus.test.images)

    np.savez(
        tmp_path / "b.npz",
        images=x[:30, ..., 0],
        labels=y[:30],
        test_images=x[30:, ..., 0],
        test_labels=y[30:],
    )
    split = load_images(f"npz:{tmp_path / 'b.npz'}")
    assert split.train.images.shape == (30, 6, 6, 1) and len(split.test) == 10

    np.savez(tmp_path / "c.npz", pixels=x, labels=y)
    with pytest.raises(ValueError, match=r"lacks \['images'\]"):
        load_images(f"npz:{tmp_path / 'c.npz'}")
    np.savez(tmp_path / "d.npz", images=x.astype(np.float32), labels=y)
    with pytest.raises(ValueError, match="float32, expected uint8"):
        load_images(f"npz:{tmp_path / 'd.npz'}")
    with pytest.raises(ValueError, match="unknown image source"):
        load_images("cifar-10")


def test_a_class_folder_reads_resizes_and_names_a_bad_file(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    pixels = {}
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            array = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / name / f"{i}.png")
            pixels[(name, i)] = array
    corpus = load_images(f"images:{tmp_path}", test_fraction=1 / 3)
    assert corpus.train.label_names == ("cat", "dog")
    assert corpus.train.images.shape == (4, 8, 10, 3)
    both = np.concatenate([corpus.train.images, corpus.test.images])
    for array in pixels.values():  # PNG is lossless: every image comes back
        assert any(np.array_equal(array, b) for b in both)

    Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(
        tmp_path / "dog" / "small.png"
    )
    with pytest.raises(ValueError, match=r"set data\.image_size"):
        load_images(f"images:{tmp_path}")
    resized = load_images(f"images:{tmp_path}", size=16)
    assert resized.train.images.shape[1:] == (16, 16, 3)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png: not a readable image"):
        load_images(f"images:{tmp_path}", size=16)


def test_image_datasets_refuse_bad_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, np.int64), ("a",))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\)"):
        ImageDataset(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1]), ("a",))
