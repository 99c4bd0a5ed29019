"""Image sources (cpc_tf/data/sources.py): npz, image folders, TFDS."""

import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from cpc_tf.data import sources

from conftest import SHARED_DATA

CIFAR = str(SHARED_DATA / "cifar10")


def examples(source):
  return [(image.numpy(), int(label)) for image, label in source.dataset]


@pytest.mark.skipif(not os.path.isdir(CIFAR),
                    reason=f"{CIFAR} is absent (set CPC_TF_SHARED)")
def test_shared_cifar10_npz():
  source = sources.load(CIFAR, "test")
  assert (source.num_examples, source.num_classes) == (10000, 10)
  assert source.class_names[:2] == ["airplane", "automobile"]
  image, label = next(iter(source.dataset))
  with np.load(os.path.join(CIFAR, "test.npz")) as arrays:
    np.testing.assert_array_equal(image, arrays["x"][0])
    assert label == arrays["y"][0] and label.dtype.name == "int64"
  with pytest.raises(ValueError, match="'validation'.*test, train"):
    sources.load(CIFAR, "validation")


def test_npz_file_and_directory(tmp_path):
  x = np.random.RandomState(0).randint(0, 256, (5, 6, 7, 3)).astype(np.uint8)
  y = np.array([0, 2, 1, 2, 0], np.int32)
  np.savez_compressed(tmp_path / "train.npz", x=x, y=y)
  for dataset in (str(tmp_path / "train.npz"), str(tmp_path)):
    source = sources.load(dataset, "train")
    assert (source.num_examples, source.num_classes) == (5, 3)
    assert source.class_names is None
    got = examples(source)
    np.testing.assert_array_equal(np.stack([g[0] for g in got]), x)
    assert [g[1] for g in got] == y.tolist()
  (tmp_path / "class_names.txt").write_text("a\nb\nc\nd\n")
  assert sources.load(str(tmp_path), "train").class_names == list("abcd")
  np.savez_compressed(tmp_path / "bad.npz", images=x)
  with pytest.raises(ValueError, match="expected x"):
    sources.load(str(tmp_path / "bad.npz"), "train")


def write_image(path, array, mode, fmt):
  Image.fromarray(array).convert(mode).save(path, fmt)


@pytest.fixture
def image_folder(tmp_path):
  """train/{cat,dog}/ with JPEG, grayscale PNG, RGBA PNG, BMP, GIF, an
  empty file, a garbage file, a truncated PNG and a text file."""
  rgb = np.random.RandomState(0).randint(0, 256, (9, 11, 3)).astype(np.uint8)
  cat, dog = tmp_path / "train" / "cat", tmp_path / "train" / "dog"
  os.makedirs(cat)
  os.makedirs(dog)
  write_image(cat / "a.jpg", rgb, "RGB", "JPEG")
  write_image(cat / "b.png", rgb, "L", "PNG")
  write_image(cat / "c.PNG", rgb, "RGBA", "PNG")
  (cat / "empty.jpg").write_bytes(b"")
  (cat / "notes.txt").write_text("not an image")
  write_image(dog / "d.bmp", rgb, "RGB", "BMP")
  write_image(dog / "e.gif", rgb, "P", "GIF")
  (dog / "garbage.jpg").write_bytes(os.urandom(100))
  (dog / "truncated.png").write_bytes((cat / "b.png").read_bytes()[:40])
  cmyk = Image.fromarray(rgb).convert("CMYK")
  cmyk.save(dog / "f.jpg", "JPEG", quality=100)
  Image.fromarray(rgb[:3, :3]).save(dog / "tiny.png")
  return tmp_path, rgb


def test_image_folder(image_folder):
  root, rgb = image_folder
  source = sources.load(str(root), "train", min_size=4)
  assert source.class_names == ["cat", "dog"] and source.num_classes == 2
  reasons = {os.path.basename(p): r for p, r in source.skipped}
  assert sorted(reasons) == ["empty.jpg", "garbage.jpg", "tiny.png",
                             "truncated.png"]
  assert reasons["empty.jpg"] == "empty file"
  assert reasons["truncated.png"].startswith("unreadable")
  assert reasons["tiny.png"].startswith("too small: 3x3")
  assert source.num_examples == 6
  got = examples(source)
  assert [label for _, label in got] == [0, 0, 0, 1, 1, 1]
  cmyk = Image.open(root / "train" / "dog" / "f.jpg").convert("RGB")
  # CMYK is converted to RGB (decoders differ a little on JPEG noise).
  diff = np.abs(got[5][0].astype(float) - np.asarray(cmyk, float)).mean()
  assert got[5][0].shape == (9, 11, 3) and diff < 12, diff
  for image, _ in got:
    assert image.shape == (9, 11, 3) and image.dtype == np.uint8
  gray = np.asarray(Image.fromarray(rgb).convert("L"))
  np.testing.assert_array_equal(got[1][0], np.stack([gray] * 3, -1))
  np.testing.assert_array_equal(got[2][0], rgb)  # Alpha dropped.
  np.testing.assert_array_equal(got[3][0], rgb)  # BMP is lossless.
  with pytest.raises(ValueError, match="split 'test' not in .*train"):
    sources.load(str(root), "test")


def test_image_folder_without_split_folders(image_folder):
  root, _ = image_folder
  source = sources.load(str(root / "train"), "train")
  assert source.class_names == ["cat", "dog"] and source.num_examples == 7


def test_folder_without_usable_images(tmp_path):
  os.makedirs(tmp_path / "cat")
  (tmp_path / "cat" / "empty.png").write_bytes(b"")
  with pytest.raises(ValueError, match=r"no usable image in .*\.jpg"):
    sources.load(str(tmp_path), "train")


@pytest.mark.parametrize("dataset", ["no_such_dataset", "missing/file.npz"])
def test_unknown_dataset(dataset):
  with pytest.raises(ValueError, match="unknown data set.*TFDS name"):
    sources.load(dataset, "train")


def test_tfds_not_prepared(tmp_path):
  with pytest.raises(ValueError, match="'cifar10' is not downloaded.*tfds"):
    sources.load("cifar10", "train", data_dir=str(tmp_path))


class CpcTestGray(tfds.core.GeneratorBasedBuilder):
  """A tiny grayscale TFDS data set with a labeled and an unlabeled split."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(4, 5, 1)),
            "label": tfds.features.ClassLabel(names=["no", "yes"])}),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(True),
            "unlabeled": self._generate_examples(False)}

  def _generate_examples(self, labeled):
    for i in range(3):
      yield i, {"image": np.full((4, 5, 1), 10 * i, np.uint8),
                "label": i % 2 if labeled else -1}


def test_tfds_prepared(tmp_path):
  CpcTestGray(data_dir=str(tmp_path)).download_and_prepare()
  source = sources.load("cpc_test_gray", "train", data_dir=str(tmp_path))
  assert (source.num_examples, source.class_names) == (3, ["no", "yes"])
  got = examples(source)
  assert sorted(label for _, label in got) == [0, 0, 1]
  assert all(image.shape == (4, 5, 3) for image, _ in got)
  unlabeled = sources.load("cpc_test_gray", "unlabeled",
                           data_dir=str(tmp_path))
  assert [label for _, label in examples(unlabeled)] == [-1, -1, -1]
  with pytest.raises(ValueError, match="split 'test' not in"):
    sources.load("cpc_test_gray", "test", data_dir=str(tmp_path))
