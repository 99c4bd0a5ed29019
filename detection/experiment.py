"""Faster R-CNN on PASCAL VOC 2007 from the CPC encoder (§4.3, Table 3).

Registers with Model Garden's factories on import:
  * task config `CpcFasterRCNNTask` -> task `CpcFasterRCNN`: Model Garden's
    Mask R-CNN task (Faster R-CNN when `model.include_mask` is false) with
    colour dropping for training (§2.2, `parser.color_drop`) and the VOC
    2007 metric (voc_eval.py) in evaluation, so `train_and_eval` reports
    `VOC07_mAP` and the AP of every class;
  * experiment `cpc_faster_rcnn_voc`: the paper setting on VOC 2007
    trainval (5011 images) -> test (4952), backbone `cpc_savedmodel`.

The paper fixes the architecture (Faster R-CNN, ResNet-161 CPC encoder),
the data, the augmentation (colour dropping + scale) and the protocol
(f_theta frozen, then fine-tuned with a smaller learning rate). Input size,
FPN, schedule, batch and weight decay are not given; the values here are
ours (Detectron2's VOC recipe: batch 16, 18k steps, lr 0.02, FPN, 2-fc box
head). configs/voc07_frozen.yaml and configs/voc07_finetune.yaml are the
two stages.
"""

import dataclasses
from typing import Optional

import tensorflow as tf

from detection import augment
from detection import backbone as backbone_lib
from detection import voc
from detection import voc_eval
from official.core import config_definitions as cfg
from official.core import exp_factory
from official.core import task_factory
from official.modeling import optimization
from official.vision.configs import decoders
from official.vision.configs import maskrcnn
from official.vision.tasks import maskrcnn as maskrcnn_task

EXPERIMENT = "cpc_faster_rcnn_voc"
NUM_CLASSES = len(voc.CLASSES) + 1  # + background.


@dataclasses.dataclass
class Parser(maskrcnn.Parser):
  """Model Garden's Mask R-CNN parser config, plus colour dropping.

  Attributes:
    color_drop: in training, keep one random channel per image and set the
      other two to mid-gray (§2.2).
  """
  color_drop: bool = False


@dataclasses.dataclass
class DataConfig(maskrcnn.DataConfig):
  parser: Parser = dataclasses.field(default_factory=Parser)


@dataclasses.dataclass
class FasterRCNN(maskrcnn.MaskRCNN):
  """Model Garden's Mask R-CNN model config without masks, backbone
  `cpc_savedmodel` by default."""
  num_classes: int = NUM_CLASSES
  include_mask: bool = False
  mask_head: Optional[maskrcnn.MaskHead] = None
  mask_sampler: Optional[maskrcnn.MaskSampler] = None
  mask_roi_aligner: Optional[maskrcnn.MaskROIAligner] = None
  backbone: backbone_lib.Backbone = dataclasses.field(
      default_factory=lambda: backbone_lib.Backbone(
          type=backbone_lib.BACKBONE_TYPE))


@dataclasses.dataclass
class CpcFasterRCNNTask(maskrcnn.MaskRCNNTask):
  """Model Garden's Mask R-CNN task config, plus the VOC 2007 metric.

  Attributes:
    use_voc07_metrics: evaluate with the VOC 2007 metric (voc_eval.py); the
      ground truth's `is_crowd` marks VOC's difficult objects.
  """
  model: FasterRCNN = dataclasses.field(default_factory=FasterRCNN)
  train_data: DataConfig = dataclasses.field(
      default_factory=lambda: DataConfig(is_training=True))
  validation_data: DataConfig = dataclasses.field(
      default_factory=lambda: DataConfig(is_training=False,
                                         drop_remainder=False))
  use_coco_metrics: bool = False
  use_voc07_metrics: bool = True


@task_factory.register_task_cls(CpcFasterRCNNTask)
class CpcFasterRCNN(maskrcnn_task.MaskRCNNTask):
  """Model Garden's Mask R-CNN task with colour dropping and VOC07 mAP."""

  def build_inputs(self, params, input_context=None, dataset_fn=None):
    dataset = super().build_inputs(params, input_context, dataset_fn)
    if params.is_training and params.parser.color_drop:
      dataset = dataset.map(
          lambda images, labels: (augment.drop_colors(images), labels),
          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset

  def build_metrics(self, training=True):
    metrics = super().build_metrics(training)
    if not training and self.task_config.use_voc07_metrics:
      self.voc07_metric = voc_eval.VOC07Evaluator(voc.CLASSES)
    return metrics

  def _update_metrics(self, labels, outputs, logs):
    # The hook of MaskRCNNTask.validation_step that sees model outputs.
    super()._update_metrics(labels, outputs, logs)
    if self.task_config.use_voc07_metrics:
      groundtruths = labels["groundtruths"]
      logs[voc_eval.VOC07Evaluator.name] = (
          {k: groundtruths[k]
           for k in ("boxes", "classes", "is_crowds", "num_detections")},
          {"detection_boxes": outputs["detection_boxes"],
           "detection_scores": outputs["detection_scores"],
           "detection_classes": outputs["detection_classes"],
           "num_detections": outputs["num_detections"],
           "image_info": labels["image_info"]})

  def aggregate_logs(self, state=None, step_outputs=None):
    if self.task_config.use_voc07_metrics:
      if not state:
        self.voc07_metric.reset_states()
      self.voc07_metric.update_state(
          *step_outputs[voc_eval.VOC07Evaluator.name])
    return super().aggregate_logs(state, step_outputs)

  def reduce_aggregated_logs(self, aggregated_logs, global_step=None):
    logs = super().reduce_aggregated_logs(aggregated_logs, global_step)
    if self.task_config.use_voc07_metrics:
      logs.update(self.voc07_metric.result())
    return logs


@exp_factory.register_config_factory(EXPERIMENT)
def cpc_faster_rcnn_voc():
  """The paper setting (§4.3): VOC 2007 trainval -> test, fine-tuned.

  Set the encoder with `--encoder` (train.py) or
  `task.model.backbone.cpc_savedmodel.export_dir`.
  """
  train_batch_size, eval_batch_size = 16, 8
  return cfg.ExperimentConfig(
      task=CpcFasterRCNNTask(
          model=FasterRCNN(
              input_size=[800, 800, 3],
              min_level=2,
              max_level=6,
              decoder=decoders.Decoder(type="fpn", fpn=decoders.FPN()),
              # Faster R-CNN's box head on FPN: two 1024-d fc layers.
              detection_head=maskrcnn.DetectionHead(num_convs=0, num_fcs=2,
                                                    fc_dims=1024)),
          losses=maskrcnn.Losses(l2_weight_decay=1e-4),
          train_data=DataConfig(
              input_path="voc2007/trainval.tfrecord",
              is_training=True,
              global_batch_size=train_batch_size,
              dtype="float32",
              parser=Parser(aug_rand_hflip=True, aug_scale_min=0.8,
                            aug_scale_max=1.25, color_drop=True)),
          validation_data=DataConfig(
              input_path="voc2007/test.tfrecord",
              is_training=False,
              global_batch_size=eval_batch_size,
              dtype="float32",
              drop_remainder=False)),
      trainer=cfg.TrainerConfig(
          train_steps=18000,
          validation_steps=-1,  # The whole test set.
          validation_interval=2000,
          steps_per_loop=100,
          summary_interval=100,
          checkpoint_interval=2000,
          optimizer_config=optimization.OptimizationConfig({
              "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
              "learning_rate": {
                  "type": "stepwise",
                  "stepwise": {"boundaries": [12000, 16000],
                               "values": [0.02, 0.002, 0.0002]}},
              "warmup": {
                  "type": "linear",
                  "linear": {"warmup_steps": 500,
                             "warmup_learning_rate": 0.001}},
          })),
      restrictions=[
          "task.train_data.is_training != None",
          "task.validation_data.is_training != None",
      ])
