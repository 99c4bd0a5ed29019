"""The PASCAL VOC 2007 detection metric, the mAP of §4.3 / Table 3.

Per class, as the VOC 2007 devkit (VOCevaldet) computes it:
  * detections of all images sorted by decreasing score (stable sort);
  * each one is matched to the ground-truth box of its class in its image
    with the highest IoU; IoU >= 0.5 with a box not yet matched is a true
    positive, with an already matched box a false positive (duplicate),
    below 0.5 a false positive;
  * "difficult" ground truth is ignored: a detection matched to it is
    neither a true nor a false positive, and it is not counted among the
    positives to recall;
  * AP is the 11-point interpolated average: the mean over the recall
    levels t of MATLAB's `0:0.1:1` of the highest precision at recall >= t.
    MATLAB builds that range as k * 0.1 up to its middle and 1 - (10 - k) *
    0.1 after it, so its 0.3 is 3 * 0.1 = 0.30000000000000004 (a recall of
    exactly 3/10 misses it) while 0.6 and 0.7 are the doubles nearest 0.6
    and 0.7 (recalls 6/10 and 7/10 reach them);
  * detections matched to a difficult box stay in the ranking with neither
    a true nor a false positive, so their precision is 0/0: MATLAB's max
    ignores it, and a class whose every detection is such gets AP NaN.
mAP is the mean AP over the classes that have at least one non-difficult
ground-truth box (all 20 on the VOC 2007 test set); a class without one has
an undefined AP (NaN) and is left out of the mean.

Boxes are [ymin, xmin, ymax, xmax] (Model Garden's order; IoU does not care)
in continuous pixel coordinates of the original image (see voc.py).
"""

import numpy as np

from detection import voc

METRIC_PREFIX = "VOC07_"
# MATLAB's 0:0.1:1, element for element (see the module docstring).
RECALL_LEVELS = np.array([k * 0.1 for k in range(6)] +
                         [1 - (10 - k) * 0.1 for k in range(6, 11)])


def iou(box, boxes):
  """IoU of one box [4] with each of boxes [N, 4]."""
  low = np.maximum(box[:2], boxes[:, :2])
  high = np.minimum(box[2:], boxes[:, 2:])
  intersection = np.prod(np.clip(high - low, 0, None), axis=1)
  area = np.prod(box[2:] - box[:2])
  areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
  return intersection / np.maximum(area + areas - intersection,
                                   np.finfo(np.float64).tiny)


def voc07_average_precision(recall, precision):
  """11-point interpolated AP from the recall and precision after each
  detection (in score order; precision NaN where nothing counted yet).

  As the devkit: no detection at a level counts 0; MATLAB's max skips
  NaN, and returns NaN when every value is NaN, which then makes the AP NaN.
  """
  recall, precision = np.asarray(recall), np.asarray(precision)
  total = 0.0
  for level in RECALL_LEVELS:
    reached = precision[recall >= level]
    if reached.size:
      total += (np.nan if np.isnan(reached).all()
                else np.nanmax(reached))
  return total / len(RECALL_LEVELS)


def class_average_precision(detections, groundtruths, iou_threshold=0.5):
  """VOC 2007 AP of one class.

  Args:
    detections: (image, score, box) triples of this class.
    groundtruths: {image: (boxes [N, 4], difficult [N] bool)} of this class.
    iou_threshold: the minimum IoU of a true positive.

  Returns:
    The AP, NaN if the class has no non-difficult ground truth.
  """
  num_positives = sum(int(np.sum(~np.asarray(d, bool)))
                      for _, d in groundtruths.values())
  if num_positives == 0:
    return float("nan")
  scores = np.array([score for _, score, _ in detections], np.float64)
  order = np.argsort(-scores, kind="stable")
  matched = {image: np.zeros(len(d), bool)
             for image, (_, d) in groundtruths.items()}
  true_positive, false_positive = [], []
  for index in order:
    image, _, box = detections[index]
    boxes, difficult = groundtruths.get(image, (np.zeros([0, 4]), []))
    if len(boxes):
      overlaps = iou(np.asarray(box, np.float64),
                     np.asarray(boxes, np.float64))
      best = int(np.argmax(overlaps))
      if overlaps[best] >= iou_threshold:
        if difficult[best]:  # Neither a true nor a false positive.
          true_positive.append(False)
          false_positive.append(False)
          continue
        duplicate = matched[image][best]
        matched[image][best] = True
        true_positive.append(not duplicate)
        false_positive.append(duplicate)
        continue
    true_positive.append(False)
    false_positive.append(True)
  tp = np.cumsum(true_positive, dtype=np.float64)
  fp = np.cumsum(false_positive, dtype=np.float64)
  recall = tp / num_positives
  with np.errstate(invalid="ignore"):  # 0/0 before the first count.
    precision = tp / (tp + fp)
  return voc07_average_precision(recall, precision)


def _numpy(value):
  """A tensor, or a tuple of per-replica tensors, as one numpy array."""
  if isinstance(value, (tuple, list)):
    return np.concatenate([np.asarray(v) for v in value])
  return np.asarray(value)


class VOC07Evaluator:
  """Accumulates images, then reports the VOC 2007 AP per class and mAP.

  Class ids are 1-based (1..len(class_names)); other ids are ignored.
  """

  name = "voc07"

  def __init__(self, class_names=voc.CLASSES, iou_threshold=0.5):
    self._class_names = tuple(class_names)
    self._iou_threshold = iou_threshold
    self.reset_states()

  def reset_states(self):
    self._groundtruths = []
    self._detections = []

  def add_image(self, gt_boxes, gt_classes, gt_difficult, boxes, scores,
                classes):
    """One image: its ground truth and its detections (numpy arrays)."""
    self._groundtruths.append((np.asarray(gt_boxes, np.float64).reshape(-1, 4),
                               np.asarray(gt_classes, np.int64),
                               np.asarray(gt_difficult, bool)))
    self._detections.append((np.asarray(boxes, np.float64).reshape(-1, 4),
                             np.asarray(scores, np.float64),
                             np.asarray(classes, np.int64)))

  def update_state(self, groundtruths, predictions):
    """A batch of Model Garden's Mask R-CNN evaluation outputs.

    Args:
      groundtruths: `labels["groundtruths"]` of the detection parser:
        boxes [B, K, 4] in original-image pixels, classes [B, K],
        is_crowds [B, K] (VOC "difficult", see voc_records.py) and
        num_detections [B] (the number of real rows of each).
      predictions: detection_boxes [B, N, 4] in the resized network input,
        detection_scores, detection_classes [B, N], num_detections [B] and
        image_info [B, 4, 2] (row 2 is the resize scale).
      Values may be tuples of per-replica tensors.
    """
    gt = {k: _numpy(groundtruths[k])
          for k in ("boxes", "classes", "is_crowds", "num_detections")}
    pred = {k: _numpy(predictions[k])
            for k in ("detection_boxes", "detection_scores",
                      "detection_classes", "num_detections", "image_info")}
    # Ground truth comes back from normalized float32 coordinates; VOC's
    # boxes lie on the pixel grid, so round off the float32 error.
    gt["boxes"] = np.round(gt["boxes"])
    for i in range(len(gt["num_detections"])):
      n, m = int(gt["num_detections"][i]), int(pred["num_detections"][i])
      scale = np.tile(pred["image_info"][i, 2], 2)
      self.add_image(gt["boxes"][i, :n], gt["classes"][i, :n],
                     gt["is_crowds"][i, :n] > 0,
                     pred["detection_boxes"][i, :m] / scale,
                     pred["detection_scores"][i, :m],
                     pred["detection_classes"][i, :m])

  def average_precisions(self):
    """AP of each class, in class order (NaN: no non-difficult positive)."""
    aps = []
    for label in range(1, len(self._class_names) + 1):
      groundtruths, detections = {}, []
      for image, (gt, det) in enumerate(zip(self._groundtruths,
                                            self._detections)):
        boxes, classes, difficult = gt
        mine = classes == label
        if mine.any():
          groundtruths[image] = (boxes[mine], difficult[mine])
        det_boxes, scores, det_classes = det
        detections.extend((image, score, box) for box, score in zip(
            det_boxes[det_classes == label], scores[det_classes == label]))
      aps.append(class_average_precision(detections, groundtruths,
                                         self._iou_threshold))
    return np.array(aps)

  def result(self):
    """{"VOC07_mAP", "VOC07_AP/<class>" ...} (floats; AP NaN if undefined),
    plus "VOC07_num_classes", the number of classes averaged."""
    aps = self.average_precisions()
    defined = ~np.isnan(aps)
    results = {
        f"{METRIC_PREFIX}mAP": float(np.mean(aps[defined]))
                               if defined.any() else float("nan"),
        f"{METRIC_PREFIX}num_classes": int(defined.sum()),
    }
    for name, ap in zip(self._class_names, aps):
      results[f"{METRIC_PREFIX}AP/{name}"] = float(ap)
    return results
