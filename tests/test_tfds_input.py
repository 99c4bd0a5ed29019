"""TFDS input at scale (cpc_tf/data/records.py): each host reads its own
files and decodes only what it trains on; a resume decodes O(batch)."""

import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import shared_data
from cpc_tf.data import augment
from cpc_tf.data import labeled
from cpc_tf.data import pipeline
from cpc_tf.data import records
from cpc_tf.data import sources
from cpc_tf.data import subsets

NAME = "cpc_test_jpegs"
NUM_TRAIN, NUM_TEST, SHARDS, CLASSES = 200, 40, 8, 10
BATCH = 6  # 200 is no multiple of it: resumes land inside an epoch.
GEOMETRY = dict(image_size=32, patch_size=16, patch_stride=8,
                augment=augment.AugmentConfig(flip=True))


class CpcTestJpegs(tfds.core.GeneratorBasedBuilder):
  """Real VOC 2007 JPEGs in imagenet2012's feature layout."""
  VERSION = tfds.core.Version("1.0.0")
  jpegs = []  # Paths, set before download_and_prepare.

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=CLASSES),
            "file_name": tfds.features.Text()}),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0, NUM_TRAIN),
            "test": self._generate_examples(NUM_TRAIN, NUM_TEST)}

  def _generate_examples(self, first, count):
    for index in range(first, first + count):
      path = self.jpegs[index]
      yield index, {"image": path, "label": index % CLASSES,
                    "file_name": os.path.basename(path)}


def digest(image):
  return hashlib.sha1(np.asarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """(data_dir, {decoded image digest: label}) of the training split."""
  folder = shared_data("voc2007_subset") / "JPEGImages"
  CpcTestJpegs.jpegs = sorted(str(p) for p in folder.glob("*.jpg"))[
      :NUM_TRAIN + NUM_TEST]
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  CpcTestJpegs(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=SHARDS))
  labels = {digest(records.decode_image(tf.io.read_file(path))): index %
            CLASSES for index, path in
            enumerate(CpcTestJpegs.jpegs[:NUM_TRAIN])}
  assert len(labels) == NUM_TRAIN  # Distinct images.
  return data_dir, labels


@pytest.fixture
def decoded(monkeypatch):
  """Digests of the images decoded from now on, one per decode."""
  seen = []
  original = records.decode_image

  def note(image):
    seen.append(digest(image.numpy()))
    return 0

  def counting(encoded):
    image = original(encoded)
    with tf.control_dependencies([tf.py_function(note, [image], tf.int32)]):
      return tf.identity(image)

  monkeypatch.setattr(records, "decode_image", counting)
  return seen


def train_batches(source, count, **kwargs):
  dataset = pipeline.patch_dataset(source, batch_size=BATCH, seed=4,
                                   with_labels=True, **GEOMETRY, **kwargs)
  return [tf.nest.map_structure(np.asarray, b) for b in dataset.take(count)]


def context(worker, workers=2):
  return tf.distribute.InputContext(num_input_pipelines=workers,
                                    input_pipeline_id=worker)


def test_two_hosts_each_decode_their_half(data, decoded):
  data_dir, labels = data
  source = sources.load(NAME, "train", data_dir=data_dir)
  assert len(source.records.instructions) == SHARDS
  halves = []
  for worker in range(2):
    decoded.clear()
    # Two epochs of this host's 4 of the 8 files (100 images).
    train_batches(source, -(-2 * NUM_TRAIN // 2 // BATCH),
                  input_context=context(worker))
    assert len(decoded) <= NUM_TRAIN + 4 * BATCH  # Two epochs + prefetch.
    halves.append(set(decoded))
  assert [len(h) for h in halves] == [NUM_TRAIN // 2] * 2
  assert not halves[0] & halves[1]
  assert halves[0] | halves[1] == set(labels)


@pytest.mark.parametrize("workers, worker, step", [(1, 0, 50), (2, 1, 20)])
def test_resume_decodes_a_few_batches_and_continues_exactly(
    data, decoded, workers, worker, step):
  data_dir, _ = data
  source = sources.load(NAME, "train", data_dir=data_dir)
  straight = train_batches(source, step + 2,
                           input_context=context(worker, workers))
  decoded.clear()
  resumed = iter(pipeline.patch_dataset(
      source, batch_size=BATCH, seed=4, with_labels=True,
      skip_batches=step, input_context=context(worker, workers), **GEOMETRY))
  first = next(resumed)
  assert len(decoded) <= 4 * BATCH, len(decoded)
  for want, got in zip(straight[step:], [first, next(resumed)]):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_global_seed_leaves_the_order_deterministic(data):
  # Runs set Keras's (and so TensorFlow's) global seed from --seed, 0 by
  # default.
  data_dir, _ = data
  source = sources.load(NAME, "train", data_dir=data_dir)
  try:
    tf.random.set_seed(0)
    first, again = (train_batches(source, 3) for _ in range(2))
  finally:
    tf.random.set_seed(None)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a[0], b[0])


def test_label_subset_decodes_only_its_images(data, decoded):
  data_dir, labels = data
  subset = labeled.load(NAME, data_dir=data_dir, label_fraction=0.1,
                        validation_per_class=2, seed=1)
  assert not decoded  # Subsets are chosen from the labels alone.
  assert (subset.num_train, subset.num_validation, subset.num_test) == (
      20, 20, NUM_TEST)  # 2 + 2 of the 20 images of each class.
  train_batches(subset.train_source, -(-subset.num_train // BATCH))
  assert len(decoded) <= subset.num_train + 4 * BATCH
  list(subset.validation)
  chosen = set(decoded)
  assert len(chosen) == subset.num_train + subset.num_validation
  assert sorted(labels[d] for d in chosen) == sorted(list(range(10)) * 4)
  # Exactly the images split_indices picks from the split's labels.
  source = sources.load(NAME, "train", data_dir=data_dir)
  train_idx, val_idx = subsets.split_indices(
      source.labels(), fraction=0.1, validation_per_class=2, seed=1)
  images = [digest(image) for image, _ in source.dataset]
  assert chosen == {images[i] for i in np.concatenate([train_idx, val_idx])}


def test_cache_keeps_the_order_and_decodes_a_host_share_once(data, decoded,
                                                             monkeypatch):
  data_dir, _ = data
  source = sources.load(NAME, "train", data_dir=data_dir)
  want = train_batches(source, 3, input_context=context(1))
  decoded.clear()
  got = train_batches(source, 3, input_context=context(1), cache=True)
  assert len(decoded) == NUM_TRAIN // 2
  for a, b in zip(want, got):
    np.testing.assert_array_equal(a[0], b[0])
  # auto: cached only if a host's share fits the budget.
  share = source.records.decoded_bytes(2)
  assert 0.5 < share / (NUM_TRAIN // 2 * 500 * 375 * 3) < 2  # VOC sizes.
  budget = share / pipeline.CACHE_MEMORY_FRACTION
  memory = pipeline.machine
  monkeypatch.setattr(memory, "available_bytes", lambda: budget * 1.1)
  assert pipeline.use_cache(source, "auto", workers=2)
  monkeypatch.setattr(memory, "available_bytes", lambda: budget * 0.9)
  assert not pipeline.use_cache(source, "auto", workers=2)
  assert pipeline.use_cache(source, "true", workers=2)
  npz = sources.from_arrays(np.zeros([2, 4, 4, 3], np.uint8), [0, 1])
  assert not pipeline.use_cache(npz, "true")  # Decoded in memory already.
  with pytest.raises(ValueError, match="cache_images='yes'; allowed: auto"):
    pipeline.use_cache(source, "yes")


def test_too_few_files_for_the_hosts(data):
  source = sources.load(NAME, "train", data_dir=data[0])
  with pytest.raises(ValueError, match="8 files, fewer than the 9 input"):
    train_batches(source, 1, input_context=context(0, 9))
