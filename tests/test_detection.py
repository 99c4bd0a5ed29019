"""Detection transfer (§4.3): VOC converter, VOC07 metric, SavedModel
backbone, frozen vs fine-tuned encoder, one Model Garden training run."""

import ast
import collections
import copy
import json
import os
import subprocess
import sys
from xml.etree import ElementTree

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detection import augment
from detection import backbone as backbone_lib
from detection import experiment
from detection import train
from detection import voc
from detection import voc_eval
from detection import voc_records
from official.core import task_factory
from official.core import train_utils
from official.vision.dataloaders import tf_example_decoder
from official.vision.modeling.backbones import factory
from official.vision.ops import preprocess_ops

from conftest import ROOT as REPO
from conftest import SHARED_DATA

VOC_SUBSET = SHARED_DATA / "voc2007_subset"
CPU_CONFIG = str(REPO / "detection" / "configs" / "voc_subset_cpu.yaml")

needs_subset = pytest.mark.skipif(not VOC_SUBSET.is_dir(),
                                  reason=f"{VOC_SUBSET} not available")


@pytest.fixture(scope="module")
def encoder_export(tmp_path_factory):
  """A tiny CPC encoder exported by cpc_tf's own CLI (2 pretraining steps):
  detection/ sees cpc_tf only through this SavedModel. Returns the export
  base; its one version is `_version(base)`."""
  model_dir = tmp_path_factory.mktemp("pretrain")
  subprocess.run(
      [sys.executable, "-m", "cpc_tf.pretrain",
       "--flagfile=flags/demo_cpu.flags", f"--model_dir={model_dir}",
       "--train_steps=2", "--batch_size=4", "--directions=1"],
      cwd=REPO, check=True, capture_output=True)
  return str(model_dir / "export")


def _version(export_base):
  """The version pretraining's final export wrote: its last step."""
  return os.path.join(export_base, "2")


@pytest.fixture(scope="module")
def subset_records(tmp_path_factory):
  """The shipped subset's train and test splits as TFRecords + reports."""
  out = tmp_path_factory.mktemp("voc")
  return {split: (str(out / f"{split}.tfrecord"),
                  voc_records.convert(str(VOC_SUBSET), split,
                                          str(out / f"{split}.tfrecord")))
          for split in ("train", "test")}


def _xml_counts(split):
  """Objects and difficult objects per class, read straight from the XML."""
  ids = (VOC_SUBSET / "ImageSets" / "Main" / f"{split}.txt").read_text()
  ids = ids.split()
  objects, difficult = collections.Counter(), collections.Counter()
  for image_id in ids:
    root = ElementTree.parse(VOC_SUBSET / "Annotations" / f"{image_id}.xml")
    for obj in root.iter("object"):
      name = obj.find("name").text.strip()
      objects[name] += 1
      difficult[name] += int(obj.find("difficult").text)
  return ids, objects, difficult


def _read_records(path):
  return [tf.train.Example.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(path)]


def _feature(example, key):
  feature = example.features.feature[key]
  return list(feature.int64_list.value or feature.float_list.value
              or feature.bytes_list.value)


# --- detection/ depends on cpc_tf only through the SavedModel -------------


def test_detection_imports_no_cpc_tf_model_or_training_code():
  # Only the flag helper, shared by every binary.
  for path in (REPO / "detection").glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        names = [f"{node.module}.{alias.name}" for alias in node.names]
      else:
        continue
      assert all(n.split(".")[0] != "cpc_tf" or n == "cpc_tf.flag_utils"
                 for n in names), path


# --- VOC -> TFRecord ------------------------------------------------------


@needs_subset
@pytest.mark.parametrize("split", ["train", "test"])
def test_converter_counts_match_the_xml(subset_records, split):
  path, report = subset_records[split]
  ids, objects, difficult = _xml_counts(split)
  examples = _read_records(path)
  assert report.images == len(examples) == len(ids) and not report.skipped
  assert [_feature(e, "image/source_id")[0].decode() for e in examples] == ids
  got_objects, got_difficult = collections.Counter(), collections.Counter()
  for example in examples:
    labels = _feature(example, "image/object/class/label")
    flags = _feature(example, "image/object/difficult")
    assert _feature(example, "image/object/is_crowd") == flags
    assert all(1 <= label <= 20 for label in labels)
    for key in ("xmin", "ymin", "xmax", "ymax"):
      values = _feature(example, f"image/object/bbox/{key}")
      assert len(values) == len(labels)
      assert all(0.0 <= v <= 1.0 for v in values)
    for label, flag in zip(labels, flags):
      got_objects[voc.CLASSES[label - 1]] += 1
      got_difficult[voc.CLASSES[label - 1]] += flag
  assert got_objects == objects == report.objects
  assert got_difficult == difficult == report.difficult


@needs_subset
def test_model_garden_decodes_the_records(subset_records):
  path, _ = subset_records["train"]
  record = next(iter(tf.data.TFRecordDataset(path)))
  image_id = _xml_counts("train")[0][0]
  root = ElementTree.parse(VOC_SUBSET / "Annotations" / f"{image_id}.xml")
  width = float(root.find("size/width").text)
  height = float(root.find("size/height").text)
  decoded = tf_example_decoder.TfExampleDecoder().decode(record)
  assert decoded["source_id"].numpy().decode() == image_id
  assert tuple(decoded["image"].shape) == (int(height), int(width), 3)
  for i, obj in enumerate(root.iter("object")):
    box = [float(obj.find(f"bndbox/{k}").text)
           for k in ("ymin", "xmin", "ymax", "xmax")]
    # 1-based inclusive pixels -> continuous [min - 1, max], normalized.
    want = [(box[0] - 1) / height, (box[1] - 1) / width,
            box[2] / height, box[3] / width]
    np.testing.assert_allclose(decoded["groundtruth_boxes"][i], want,
                               rtol=1e-6)
    assert (decoded["groundtruth_classes"][i] ==
            voc.CLASSES.index(obj.find("name").text) + 1)
    assert (bool(decoded["groundtruth_is_crowd"][i]) ==
            (obj.find("difficult").text == "1"))


@needs_subset
def test_converter_reports_and_skips_bad_files(tmp_path):
  good = "000007"
  (tmp_path / "Annotations").mkdir()
  (tmp_path / "JPEGImages").mkdir()
  (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
  xml = (VOC_SUBSET / "Annotations" / f"{good}.xml").read_text()
  jpeg = (VOC_SUBSET / "JPEGImages" / f"{good}.jpg").read_bytes()
  broken = {
      "no_jpeg": (xml, None),
      "no_xml": (None, jpeg),
      "bad_xml": (xml[:len(xml) // 2], jpeg),
      "bad_class": (xml.replace("<name>car</name>", "<name>tank</name>"),
                    jpeg),
      "bad_box": (xml.replace("<xmax>", "<xmax>9"), jpeg),
      "bad_size": (xml.replace("<width>500</width>", "<width>600</width>"),
                   jpeg),
      "bad_jpeg": (xml, jpeg[:100]),
  }
  for name, (text, data) in {good: (xml, jpeg), **broken}.items():
    if text is not None:
      (tmp_path / "Annotations" / f"{name}.xml").write_text(text)
    if data is not None:
      (tmp_path / "JPEGImages" / f"{name}.jpg").write_bytes(data)
  (tmp_path / "ImageSets" / "Main" / "train.txt").write_text(
      "\n".join([good, *broken]) + "\n")
  output = tmp_path / "out" / "train.tfrecord"
  report = voc_records.convert(str(tmp_path), "train", str(output))
  assert report.images == 1 and len(_read_records(str(output))) == 1
  skipped = {os.path.basename(path): reason for path, reason in report.skipped}
  assert set(skipped) == {"no_jpeg.jpg", "no_xml.xml", "bad_xml.xml",
                          "bad_class.xml", "bad_box.xml", "bad_size.jpg",
                          "bad_jpeg.jpg"}
  assert skipped["no_jpeg.jpg"] == skipped["no_xml.xml"] == "missing"
  assert "tank" in skipped["bad_class.xml"]
  assert "500x" in skipped["bad_size.jpg"]
  assert "skipped" in report.summary() and "bad_box.xml" in report.summary()


# --- the VOC 2007 metric --------------------------------------------------


def _ap(detections, groundtruths):
  return voc_eval.class_average_precision(detections, groundtruths)


A, B = [0, 0, 10, 10], [20, 20, 30, 30]
FAR = [50, 50, 60, 60]


def test_iou():
  np.testing.assert_allclose(
      voc_eval.iou(np.array(A, float),
                   np.array([A, [0, 0, 10, 5], [5, 5, 15, 15], B], float)),
      [1.0, 0.5, 25 / 175, 0.0])


def test_ap_perfect_and_missed():
  assert _ap([(0, 0.9, A)], {0: ([A], [False])}) == 1.0
  assert _ap([(0, 0.9, FAR)], {0: ([A], [False])}) == 0.0
  assert _ap([], {0: ([A], [False])}) == 0.0


def test_ap_11_point_interpolation():
  # TP, FP, TP over 2 positives: recall .5 .5 1, precision 1 .5 2/3;
  # levels 0-.5 -> 1, levels .6-1 -> 2/3: (6 + 5 * 2/3) / 11.
  detections = [(0, 0.9, A), (0, 0.8, FAR), (1, 0.7, B)]
  groundtruths = {0: ([A], [False]), 1: ([B], [False])}
  assert _ap(detections, groundtruths) == pytest.approx(28 / 33)
  # Order is by score, not by list position.
  assert _ap(detections[::-1], groundtruths) == pytest.approx(28 / 33)


@pytest.mark.parametrize("found,levels", [(3, 3), (6, 7), (7, 8)])
def test_ap_recall_levels_are_matlabs(found, levels):
  """k of 10 found at precision 1. The devkit's 0:0.1:1 has 0.3 as
  3 * 0.1 > 3/10, so recall 3/10 reaches only 0, .1, .2; its 0.6 and 0.7
  are exact, so 6/10 and 7/10 reach them."""
  groundtruths = {i: ([A], [False]) for i in range(10)}
  assert _ap([(i, 1.0 - i / 100, A) for i in range(found)],
             groundtruths) == pytest.approx(levels / 11)


def test_ap_duplicates_are_false_positives():
  detections = [(0, 0.9, A), (0, 0.8, A), (1, 0.7, B)]
  groundtruths = {0: ([A], [False]), 1: ([B], [False])}
  assert _ap(detections, groundtruths) == pytest.approx(28 / 33)


def test_ap_difficult_is_neither_tp_nor_fp():
  # On the difficult box (ignored), a miss (FP), then the real box (TP):
  # recall 0 1, precision 0 .5 -> 0.5 at every level.
  detections = [(0, 0.9, B), (0, 0.85, FAR), (0, 0.8, A)]
  assert _ap(detections, {0: ([A, B], [False, True])}) == pytest.approx(0.5)
  # Counted as a positive it would give 28/33, as a false positive 1/3.
  assert _ap(detections, {0: ([A, B], [False, False])}) == pytest.approx(
      28 / 33)
  # An undetected difficult box is not a positive to recall.
  assert _ap([(0, 0.9, A)], {0: ([A, B], [False, True])}) == 1.0
  # A class with only difficult boxes has no AP.
  assert np.isnan(_ap([(0, 0.9, A)], {0: ([A], [True])}))
  # Every detection on a difficult box: precision 0/0 throughout, which
  # the devkit's max keeps as NaN; no detection at all is AP 0.
  assert np.isnan(_ap([(0, 0.9, B), (0, 0.8, B)],
                      {0: ([A, B], [False, True])}))
  assert _ap([], {0: ([A, B], [False, True])}) == 0.0


def test_ap_iou_threshold_is_inclusive():
  assert _ap([(0, 0.9, [0, 0, 10, 5])], {0: ([A], [False])}) == 1.0
  assert _ap([(0, 0.9, [0, 0, 10, 4.9])], {0: ([A], [False])}) == 0.0


def test_evaluator_mean_over_classes_with_positives():
  evaluator = voc_eval.VOC07Evaluator(["one", "two", "three"])
  # Image 0: class 1 found; class 2 detected in the wrong place; a class 3
  # detection though no class 3 box exists anywhere (AP undefined).
  evaluator.add_image([A, B], [1, 2], [False, False],
                      [A, FAR, B], [0.9, 0.8, 0.7], [1, 2, 3])
  # Image 1: a class 2 detection on a class 1 box is a false positive.
  evaluator.add_image([A], [1], [False], [A], [0.95], [2])
  results = evaluator.result()
  # 1 of 2 class-1 boxes at precision 1: levels 0 to .5 -> 6/11.
  assert results["VOC07_AP/one"] == pytest.approx(6 / 11)
  assert results["VOC07_AP/two"] == 0.0
  assert np.isnan(results["VOC07_AP/three"])
  assert results["VOC07_mAP"] == pytest.approx(3 / 11)
  assert results["VOC07_num_classes"] == 2
  evaluator.reset_states()
  assert np.isnan(evaluator.result()["VOC07_mAP"])


def test_evaluator_reads_model_garden_outputs():
  """Rescales predictions by image_info, drops padding, difficult=is_crowd,
  accepts per-replica tuples."""
  groundtruths = {
      "boxes": np.array([[A, B, [-1] * 4]], float),
      "classes": np.array([[1, 1, -1]]),
      "is_crowds": np.array([[0, 1, -1]]),
      "num_detections": np.array([2]),
  }
  predictions = {
      "detection_boxes": np.array([[np.array(B) / 2, np.array(A) / 2,
                                    [0, 0, 0, 0]]], float),
      "detection_scores": np.array([[0.9, 0.8, 0.0]]),
      "detection_classes": np.array([[1, 1, 0]]),
      "num_detections": np.array([2]),
      "image_info": np.array([[[100, 100], [50, 50], [0.5, 0.5], [0, 0]]]),
  }
  evaluator = voc_eval.VOC07Evaluator(voc.CLASSES)
  evaluator.update_state(
      {k: (v, v) for k, v in groundtruths.items()},
      {k: (v, v) for k, v in predictions.items()})
  results = evaluator.result()
  assert results["VOC07_AP/aeroplane"] == 1.0  # Difficult B ignored.
  assert results["VOC07_num_classes"] == 1


def test_evaluator_rounds_float32_ground_truth_to_pixels():
  """A box that came back from normalized float32 coordinates a hair too
  large still gives IoU 0.5 with a half-box detection."""
  groundtruths = {
      "boxes": np.array([[[0, 0, 10.000001, 10.000001]]], np.float32),
      "classes": np.array([[1]]), "is_crowds": np.array([[0]]),
      "num_detections": np.array([1]),
  }
  predictions = {
      "detection_boxes": np.array([[[0, 0, 10, 5]]], float),
      "detection_scores": np.array([[0.9]]),
      "detection_classes": np.array([[1]]),
      "num_detections": np.array([1]),
      "image_info": np.array([[[10, 10], [10, 10], [1, 1], [0, 0]]]),
  }
  evaluator = voc_eval.VOC07Evaluator(voc.CLASSES)
  evaluator.update_state(groundtruths, predictions)
  assert evaluator.result()["VOC07_AP/aeroplane"] == 1.0


# --- colour dropping ------------------------------------------------------


def test_drop_colors_keeps_one_channel_per_image():
  images = tf.random.normal([64, 8, 8, 3])
  dropped = augment.drop_colors(images).numpy()
  gray = [(0.5 - m) / s for m, s in zip(preprocess_ops.MEAN_NORM,
                                        preprocess_ops.STDDEV_NORM)]
  kept = []
  for original, image in zip(images.numpy(), dropped):
    same = [np.array_equal(image[..., c], original[..., c]) for c in range(3)]
    assert sum(same) == 1
    for c in range(3):
      if not same[c]:
        np.testing.assert_allclose(image[..., c], gray[c], rtol=1e-6)
    kept.append(same.index(True))
  assert set(kept) == {0, 1, 2}


# --- the SavedModel backbone ----------------------------------------------


@pytest.mark.parametrize("height,width", [(128, 128), (96, 160)])
def test_backbone_levels_and_values(encoder_export, height, width):
  config = experiment.FasterRCNN().backbone
  config.cpc_savedmodel.export_dir = encoder_export
  backbone = factory.build_backbone(
      tf_keras.layers.InputSpec(shape=[None, height, width, 3]), config,
      experiment.FasterRCNN().norm_activation)
  loaded = tf.saved_model.load(_version(encoder_export))
  pixels = tf.random.uniform([2, height, width, 3], 0, 256, tf.int32)
  want = loaded.features(tf.cast(pixels, tf.float32) / 255.0)
  # What Model Garden's parsers feed the model: uint8 normalized.
  got = backbone(preprocess_ops.normalize_image(tf.cast(pixels, tf.uint8)))
  assert sorted(backbone.output_specs) == ["2", "3", "4", "5"]
  for level, stride in backbone_lib.FEATURE_STRIDES.items():
    channels = want[level].shape[-1]
    shape = (height // stride, width // stride, channels)
    assert tuple(backbone.output_specs[level][1:]) == shape
    assert tuple(got[level].shape) == (2, *shape)
    np.testing.assert_allclose(got[level], want[level], atol=1e-4)


def test_backbone_takes_the_export_base_or_a_version(encoder_export,
                                                     tmp_path):
  version = _version(encoder_export)
  assert os.listdir(encoder_export) == ["2"]
  assert backbone_lib.saved_model_dir(encoder_export) == version
  assert backbone_lib.saved_model_dir(version) == version
  with pytest.raises(ValueError, match="no SavedModel in"):
    backbone_lib.saved_model_dir(str(tmp_path))


def _task_config(records, encoder, overrides=""):
  options = train_utils.ParseConfigOptions(
      experiment=experiment.EXPERIMENT, config_file=[CPU_CONFIG],
      params_override=",".join(filter(None, [
          f"task.train_data.input_path={records['train'][0]}",
          f"task.validation_data.input_path={records['test'][0]}",
          "task.model.input_size=[128,128,3]",
          "task.train_data.global_batch_size=1",
          "task.train_data.shuffle_buffer_size=2",
          "task.validation_data.global_batch_size=2", overrides])))
  return train.parse_params(options, encoder)


@needs_subset
def test_fine_tuning_updates_the_encoder_and_freezing_does_not(
    subset_records, encoder_export):
  params = _task_config(subset_records, encoder_export)
  n_encoder = len(tf.saved_model.load(
      _version(encoder_export)).trainable_variables)
  batch = None
  for freeze in (False, True):
    config = copy.deepcopy(params.task)
    config.freeze_backbone = freeze
    task = task_factory.get_task(config)
    model = task.build_model()
    if batch is None:
      batch = next(iter(task.build_inputs(config.train_data)))
    encoder = model.backbone.encoder.encoder_trainable_variables
    assert len(encoder) == n_encoder
    in_model = [any(v is w for w in model.trainable_variables)
                for v in encoder]
    assert all(in_model) if not freeze else not any(in_model)
    heads = model.decoder.trainable_variables
    before = [v.numpy().copy() for v in encoder + heads]
    task.train_step(batch, model, tf_keras.optimizers.SGD(0.01),
                    metrics=task.build_metrics(training=True))
    changed = [not np.array_equal(b, v.numpy())
               for b, v in zip(before, encoder + heads)]
    encoder_changed = changed[:len(encoder)]
    assert any(changed[len(encoder):])  # The detector did train.
    if freeze:
      assert not any(encoder_changed)
    else:
      assert all(encoder_changed)


# --- one step of the whole pipeline ---------------------------------------


@needs_subset
def test_train_and_eval_reports_voc07_map(subset_records, encoder_export,
                                          tmp_path):
  params = _task_config(subset_records, encoder_export, ",".join([
      "task.freeze_backbone=false", "task.train_data.global_batch_size=2",
      "trainer.train_steps=1",
      "trainer.validation_steps=1", "trainer.validation_interval=1",
      "trainer.steps_per_loop=1", "trainer.summary_interval=1",
      "trainer.checkpoint_interval=1"]))
  model_dir = str(tmp_path / "det")
  model, _ = train.run(params, model_dir, "train_and_eval")
  lines = (tmp_path / "det" / train.METRICS_FILE).read_text().splitlines()
  record = json.loads(lines[-1])
  assert record["step"] == 1
  # The recorded mAP is the mean of the recorded defined class APs.
  aps = np.array([record[f"VOC07_AP/{name}"] for name in voc.CLASSES])
  defined = ~np.isnan(aps)
  assert record["VOC07_num_classes"] == defined.sum() >= 1
  assert record["VOC07_mAP"] == pytest.approx(aps[defined].mean())
  assert 0.0 <= record["VOC07_mAP"] <= 1.0
  assert {f"VOC07_AP/{name}" for name in voc.CLASSES} <= set(record)
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-1")
  # Fine-tuned by Model Garden's trainer: the encoder moved off the export.
  exported = tf.saved_model.load(_version(encoder_export)).trainable_variables
  trained = model.backbone.encoder.encoder_trainable_variables
  assert any(not np.allclose(a.numpy(), b.numpy())
             for a, b in zip(exported, trained))


@pytest.mark.parametrize("root", ["local", "ram://detection_metrics"])
def test_metrics_file_holds_every_evaluation_and_survives_a_resume(tmp_path,
                                                                    root):
  """One JSON line per evaluation, on a local disk and on a TensorFlow
  filesystem where a "w" handle appends (ram://, as gs:// stands in here);
  a resumed run's writer keeps the earlier lines."""
  path = os.path.join(str(tmp_path) if root == "local" else root,
                      train.METRICS_FILE)
  step = tf.Variable(0, dtype=tf.int64)
  write = train.WriteMetrics(path, step)
  for value in (0.25, 0.5):
    step.assign_add(10)
    write({"AP50": np.float32(value), "per_class": np.zeros(3)})
  step.assign_add(10)
  train.WriteMetrics(path, step)({"AP50": np.float32(0.75)})
  with tf.io.gfile.GFile(path) as f:
    records = [json.loads(line) for line in f.read().splitlines()]
  assert records == [{"step": 10, "AP50": 0.25}, {"step": 20, "AP50": 0.5},
                     {"step": 30, "AP50": 0.75}]
  assert not tf.io.gfile.exists(path + ".partial")
