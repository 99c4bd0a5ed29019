"""Transfer of the exported CPC encoder to detection (§4.3, Table 3).

Faster R-CNN on PASCAL VOC 2007 with TF Model Garden (`official.vision`,
tf_keras). This package reads the encoder only through the SavedModel that
`python -m cpc_tf.export` writes; from `cpc_tf` it imports only
`flag_utils` (flags from a config dataclass, as every binary defines them),
no model or training code.

  voc.py            VOC classes and annotation XML parsing
  voc_records.py    VOC XML + JPEG -> Model Garden tf.train.Examples
  voc_to_tfrecord.py  the converter binary
  voc_eval.py       the VOC 2007 metric: 11-point AP at IoU 0.5, mAP
  augment.py        colour dropping for detection training (§2.2)
  backbone.py       SavedModel -> Model Garden backbone `cpc_savedmodel`
  experiment.py     task + experiment `cpc_faster_rcnn_voc` (registered)
  train.py          Model Garden trainer binary
  configs/          YAML for the paper setting and the CPU subset
"""
