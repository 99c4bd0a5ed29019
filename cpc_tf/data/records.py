"""A split held still encoded, decoded only where a host trains on it.

Records are image arrays already in memory (npz), image file paths
(folders) or a TFDS split's TFRecord shards. Each example is a key
`(index, data)`: its index in the split's order and, for TFDS, its
serialized record. `stream` gives one host's training keys in an order that
depends only on (seed, epoch), so a run resumed at step k jumps to its epoch
and skips the rest of the way on keys; `decode` turns a chosen key into
`(image uint8 [H, W, 3], label int64)`.
"""

from absl import logging
import numpy as np
import tensorflow as tf

# TFDS shards read at once, records taken from each in turn (tfds.ReadConfig's
# defaults, so a host reads its files as tfds would).
INTERLEAVE_CYCLE = 16
INTERLEAVE_BLOCK = 16
_FOREVER = np.iinfo(np.int64).max
_NO_DATA = ""


def decode_image(data):
  """Encoded JPEG, PNG, GIF, BMP or WebP bytes -> uint8 [H, W, 3];
  grayscale, CMYK and alpha become RGB."""
  return tf.io.decode_image(data, channels=3, expand_animations=False)


def _epoch_seed(seed, epoch):
  return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])


class _Records:
  """What every kind of records shares: decoded views and the cache."""
  skip_errors = False  # Drop examples whose decoding fails (image files).

  def dataset(self):
    """(image, label) of every example in the split's order, decoded."""
    data = self.keys().map(self.decode, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True)
    return data.ignore_errors(log_warning=True) if self.skip_errors else data

  def cached(self, workers, worker):
    """These records with the images host `worker` of `workers` can read
    decoded once and kept in memory; same keys, same order."""
    key = (workers, worker) if self.per_host_files else (1, 0)
    if key not in self._stores:
      self._stores[key] = _Cached(self, *key)
    return self._stores[key]


class ArrayRecords(_Records):
  """Random-access records: uint8 images [N, H, W, 3] in memory, or image
  file paths [N] read and decoded when chosen.

  The training stream is the same for every host: epoch e is a permutation
  of the split seeded by (seed, e), epochs follow each other, and host w of
  W takes every W-th example; so the hosts' batches at a step together are
  one global batch, whatever the number of hosts.
  """
  per_host_files = False

  def __init__(self, items, labels, pixels=None):
    """items: uint8 images [N, H, W, 3] or file paths [N]; labels: int64
    [N]; pixels: H * W of each file's image (paths only)."""
    self.items = np.asarray(items)
    self._labels = np.asarray(labels, np.int64)
    self.pixels = pixels
    self.in_memory = self.items.dtype == np.uint8
    self.skip_errors = not self.in_memory
    self.num_examples = self.size = len(self._labels)
    self._items = tf.constant(self.items)
    self._label_tensor = tf.constant(self._labels)
    self._stores = {}

  def labels(self):
    return self._labels

  def select(self, indices):
    return ArrayRecords(self.items[indices], self._labels[indices],
                        None if self.pixels is None else self.pixels[indices])

  def decoded_bytes(self, workers=1):
    """Bytes of the decoded images one host would cache; 0 when they are
    in memory already."""
    del workers  # Every host reads every example over the epochs.
    return 0 if self.in_memory else int(np.sum(self.pixels)) * 3

  def keys(self, with_data=True):
    del with_data
    return tf.data.Dataset.range(self.num_examples).map(
        lambda i: (i, tf.constant(_NO_DATA)))

  def stream(self, *, seed, start, workers, worker, shuffle_buffer,
             with_data=True):
    """Host `worker`'s keys from its `start`-th example on, as (position in
    the global stream, key), forever."""
    del shuffle_buffer, with_data  # Whole permutations; keys hold no data.
    size = self.num_examples
    first = start * workers + worker  # Position of this host's next key.

    def epoch(e):
      return tf.data.Dataset.from_tensor_slices(
          tf.random.experimental.stateless_shuffle(
              tf.range(size, dtype=tf.int64), _epoch_seed(seed, e)))

    keys = (tf.data.Dataset.range(first // size, _FOREVER).flat_map(epoch)
            .skip(first % size).enumerate(first).shard(workers, 0))
    return keys.map(lambda n, i: (n, (i, tf.constant(_NO_DATA))))

  def decode(self, index, data):
    del data
    item = tf.gather(self._items, index)
    if not self.in_memory:
      item = decode_image(tf.io.read_file(item))
    return item, tf.gather(self._label_tensor, index)


class FileRecords(_Records):
  """A TFDS split's TFRecord shards, read as tfds reads them.

  `tfds.ReadConfig(input_context=...)` gives host w the shards w, w + W, ...
  and shuffles their order with a seed drawn anew every epoch, so epoch e's
  order can only be reached by replaying the epochs before it; here the
  same shards are read from the split's file instructions in an order drawn
  from (seed, epoch), interleaved as tfds does and shuffled in a buffer of
  records still encoded.
  """
  per_host_files = True

  def __init__(self, instructions, parse, image_shape, keep=None):
    """instructions: the split's `tfds` file instructions; parse:
    serialized record -> (encoded image, label), label_only=True -> label;
    image_shape: the image feature's (H, W, C), None where unknown; keep:
    bool [split size], the examples of a subset, or None for all."""
    self.instructions = list(instructions)
    self.parse = parse
    self.image_shape = image_shape
    takes = np.array([f.take for f in self.instructions], np.int64)
    self.starts = np.concatenate([[0], np.cumsum(takes)[:-1]]).astype(
        np.int64)
    self.takes = takes
    self.keep = keep
    self.size = int(takes.sum())
    self.num_examples = int(self.size if keep is None else keep.sum())
    self._stores = {}

  def _kept(self, files):
    """Examples of the shards `files` that these records hold."""
    if self.keep is None:
      return int(self.takes[files].sum())
    return int(sum(self.keep[s:s + t].sum()
                   for s, t in zip(self.starts[files], self.takes[files])))

  def _host_files(self, workers, worker):
    if len(self.instructions) < workers:
      raise ValueError(
          f"the TFDS split has {len(self.instructions)} files, fewer than "
          f"the {workers} input pipelines; each host reads whole files")
    return np.arange(len(self.instructions))[worker::workers]

  def _read(self, with_data):
    files = tf.constant([f.filename for f in self.instructions])
    skips = tf.constant([f.skip for f in self.instructions], tf.int64)
    starts, takes = tf.constant(self.starts), tf.constant(self.takes)
    keep = None if self.keep is None else tf.constant(self.keep)

    def read(f):
      start, take = starts[f], takes[f]
      index = tf.data.Dataset.range(start, start + take)
      if with_data:
        data = tf.data.TFRecordDataset(files[f]).skip(skips[f]).take(take)
      else:
        data = tf.data.Dataset.from_tensors(_NO_DATA).repeat(take)
      records = tf.data.Dataset.zip(index, data)
      if keep is not None:
        records = records.filter(lambda i, _: keep[i])
      return records
    return read

  def keys(self, with_data=True):
    return tf.data.Dataset.range(len(self.instructions)).flat_map(
        self._read(with_data))

  def labels(self):
    labels = self.keys().map(lambda i, data: self.parse(data, True),
                             num_parallel_calls=tf.data.AUTOTUNE)
    return np.concatenate(list(labels.batch(4096).as_numpy_iterator()) or
                          [np.zeros([0], np.int64)]).astype(np.int64)

  def select(self, indices):
    held = (np.arange(self.num_examples) if self.keep is None
            else np.flatnonzero(self.keep))
    keep = np.zeros([self.size], bool)
    keep[held[indices]] = True
    return FileRecords(self.instructions, self.parse, self.image_shape, keep)

  def decoded_bytes(self, workers=1):
    """Estimated bytes of one host's share decoded: from the image
    feature's shape, else from the first 32 images."""
    count = self.num_examples / workers
    height, width = (self.image_shape or (None, None))[:2]
    if height and width:
      return int(count * height * width * 3)
    sample = [image.size for image, _ in
              self.dataset().take(32).as_numpy_iterator()]
    return int(count * np.mean(sample)) if sample else 0

  def stream(self, *, seed, start, workers, worker, shuffle_buffer,
             with_data=True):
    """This host's keys from its `start`-th example on, as (position, key),
    forever; positions k * workers + worker are unique across hosts."""
    files = self._host_files(workers, worker)
    size = self._kept(files)
    if not size:
      raise ValueError(f"input pipeline {worker} of {workers} has no "
                       "example in its TFDS files")
    read = self._read(with_data)
    buffer = min(shuffle_buffer, size)

    def epoch(e):
      order = tf.random.experimental.stateless_shuffle(
          tf.constant(files, tf.int64), _epoch_seed(seed, e))
      records = tf.data.Dataset.from_tensor_slices(order).interleave(
          read, cycle_length=min(INTERLEAVE_CYCLE, len(files)),
          block_length=INTERLEAVE_BLOCK, num_parallel_calls=tf.data.AUTOTUNE,
          deterministic=True)
      # A Python seed: a tensor one fails when the global seed is 0
      # (tf.random.set_seed(0)); epochs differ by their file order.
      return records.shuffle(buffer, seed=seed)

    keys = (tf.data.Dataset.range(start // size, _FOREVER).flat_map(epoch)
            .skip(start % size).enumerate(start))
    return keys.map(lambda k, key: (k * workers + worker, key))

  def host_keys(self, workers, worker):
    files = self._host_files(workers, worker)
    return tf.data.Dataset.from_tensor_slices(files).flat_map(
        self._read(True))

  def decode(self, index, data):
    del index
    image, label = self.parse(data, False)
    return decode_image(image), label


class _Cached(_Records):
  """Records whose images one host reads are decoded once, kept in memory
  (ragged, any size), and looked up by index; keys and order unchanged."""

  def __init__(self, records, workers, worker):
    self.records = records
    self.per_host_files = records.per_host_files
    self.num_examples = records.num_examples
    host = (records.host_keys(workers, worker) if records.per_host_files
            else records.keys())
    decoded = host.map(lambda i, data: (i, records.decode(i, data)),
                       num_parallel_calls=tf.data.AUTOTUNE)
    if records.skip_errors:
      decoded = decoded.ignore_errors(log_warning=True)
    indices, images, labels = [], [], []
    for index, (image, label) in decoded.as_numpy_iterator():
      indices.append(index)
      images.append(image)
      labels.append(label)
    logging.info("Cached %d decoded images (%.2f GiB)", len(images),
                 sum(image.nbytes for image in images) / 2**30)
    rows = np.full([records.size], -1, np.int64)
    rows[indices] = np.arange(len(indices))
    self._rows = tf.constant(rows)
    self._shapes = tf.constant(np.array([i.shape for i in images], np.int64)
                               .reshape(-1, 3))
    self._pixels = tf.RaggedTensor.from_row_lengths(
        np.concatenate([i.ravel() for i in images] or
                       [np.zeros([0], np.uint8)]),
        np.array([i.size for i in images], np.int64))
    self._labels = tf.constant(np.array(labels, np.int64))

  def labels(self):
    return self.records.labels()

  def _held(self, index):
    return self._rows[index] >= 0

  def keys(self, with_data=False):
    del with_data
    return self.records.keys(with_data=False).filter(
        lambda i, _: self._held(i))

  def stream(self, **kwargs):
    return self.records.stream(**dict(kwargs, with_data=False)).filter(
        lambda n, key: self._held(key[0]))

  def decode(self, index, data):
    del data
    row = self._rows[index]
    return (tf.reshape(self._pixels[row], self._shapes[row]),
            self._labels[row])
