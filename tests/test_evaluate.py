"""Evaluation protocols (§2.2, A.3-A.4): heads, fixed vs fine-tuned encoder,
early stopping, results, resume, the supervised sweep, flags, report."""

import dataclasses
import json
import os
import signal

import keras
import matplotlib
import numpy as np
import pytest
import tensorflow as tf

from conftest import flag_error
from cpc_tf import checkpoints
from cpc_tf import config as config_lib
from cpc_tf import errors
from cpc_tf import eval_config
from cpc_tf import report
from cpc_tf import results
from cpc_tf.models import classifier
from cpc_tf.models import heads
from cpc_tf.train import accuracy
from cpc_tf.train import baseline
from cpc_tf.train import early_stopping
from cpc_tf.train import evaluation
from cpc_tf.train import loop
from cpc_tf.train import pretraining

NO_AUGMENT = dict(color_drop=False, auto_augment=False, elastic=False,
                  color_jitter=False, jitter=0, flip=False)
NUM_CLASSES = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """4 classes of 16x16 images with a class colour: 12 train, 4 test each."""
  root = tmp_path_factory.mktemp("data")
  rng = np.random.default_rng(0)
  for split, n in (("train", 12), ("test", 4)):
    y = np.repeat(np.arange(NUM_CLASSES), n)
    colour = np.eye(3)[y % 3] * 150 + 50 * (y >= 3)[:, None]
    x = colour[:, None, None] + rng.normal(0, 30, (len(y), 16, 16, 3))
    np.savez(root / f"{split}.npz", x=np.clip(x, 0, 255).astype(np.uint8),
             y=y)
  return str(root)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir):
  """A 2-step pretraining run (checkpoints + end-of-run SavedModel)."""
  model_dir = str(tmp_path_factory.mktemp("pretrain"))
  config = config_lib.PretrainConfig(
      model_dir=model_dir, dataset=data_dir, image_size=16, patch_size=8,
      patch_stride=4, steps_to_ignore=0, steps_to_predict=1, directions=1,
      context_dim=16, target_dim=8, batch_size=4, train_steps=2,
      warmup_steps=0, steps_per_loop=1, checkpoint_every=2, summary_every=2,
      **NO_AUGMENT)
  pretraining.pretrain(config)
  return model_dir


def eval_config_for(model_dir, encoder, data_dir, **overrides):
  values = dict(model_dir=str(model_dir), encoder=encoder, dataset=data_dir,
                label_fraction=0.5, validation_per_class=2, batch_size=4,
                eval_batch_size=8, train_steps=4, eval_every=2,
                steps_per_loop=2, summary_every=2, learning_rate=1e-2)
  values.update(overrides)
  return eval_config.EvalConfig(**values)


def weights_of_run(config, pretrained_dir, checkpoint):
  """The Classifier of `config` with `checkpoint` loaded."""
  encoder, pretrain_config = checkpoints.encoder_from_checkpoint(pretrained_dir)
  net = classifier.Classifier(
      encoder, evaluation.make_head(config, NUM_CLASSES),
      train_encoder=config.protocol == "finetune")
  rows, p = pretrain_config.grid_size, pretrain_config.patch_size
  net(tf.zeros([1, rows, rows, p, p, 3]))
  checkpoints.weights_checkpoint(net).restore(checkpoint).expect_partial(
  ).assert_existing_objects_matched()
  return net


def test_linear_head_matches_appendix_a3():
  head = heads.LinearHead(5)
  latents = tf.random.normal([3, 4, 4, 6], seed=1) * 2.0 + 1.0
  head(latents)
  norm = head.norm
  assert not norm.scale and norm.gamma is None  # BatchNorm without scale.
  norm.beta.assign(tf.random.normal([6], seed=2))
  norm.moving_mean.assign(tf.random.normal([6], seed=3))
  norm.moving_variance.assign(tf.random.uniform([6], 0.5, 2.0, seed=4))
  kernel, bias = head.classifier.kernel, head.classifier.bias
  assert tuple(kernel.shape) == (1, 1, 6, 5)  # A 1x1 convolution.
  bias.assign(tf.random.normal([5], seed=5))
  x, w = latents.numpy(), kernel.numpy()[0, 0]

  def manual(mean, var):
    normed = (x - mean) / np.sqrt(var + norm.epsilon) + norm.beta.numpy()
    logits = normed @ w + bias.numpy()  # Logits at every grid position,
    return logits.mean(axis=(1, 2))     # then their spatial mean.

  np.testing.assert_allclose(
      head(latents, training=False), manual(norm.moving_mean.numpy(),
                                            norm.moving_variance.numpy()),
      rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
      head(latents, training=True),
      manual(x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))),
      rtol=1e-4, atol=1e-4)


def test_resnet_head_is_eleven_blocks_of_the_paper_sizes():
  assert heads.HEAD_PRESETS["paper"] == (4096, 1024)
  head = heads.ResNetHead(7, preset="small", dropout=0.5)
  assert len(head.blocks) == 11
  logits = head(tf.zeros([2, 3, 3, 16]), training=True)
  assert logits.shape == (2, 7) and logits.dtype == tf.float32
  assert head.blocks[0].conv3.filters == heads.HEAD_PRESETS["small"][0]


def test_weights_checkpoint_saves_every_variable(tmp_path):
  net = classifier.Classifier(
      keras.Sequential([keras.layers.Dense(3)]), heads.ResNetHead(2), False)
  net(tf.zeros([2, 3, 3, 5]))
  values = [tf.random.normal(v.shape) for v in net.variables]
  for v, value in zip(net.variables, values):
    v.assign(value)
  path = checkpoints.weights_checkpoint(net).save(str(tmp_path / "ckpt"))
  for v in net.variables:
    v.assign(tf.zeros(v.shape))
  checkpoints.weights_checkpoint(net).restore(path).assert_consumed()
  # Including the head blocks' batch-norm statistics (Keras keeps the blocks
  # in a list, which tf.train.Checkpoint(model=net) would miss).
  assert any("block1/norm1/moving_mean" in v.path for v in net.variables)
  for v, value in zip(net.variables, values):
    np.testing.assert_array_equal(v.numpy(), value.numpy())


def test_saved_model_encoder_is_the_keras_one(pretrained):
  saved_model = os.path.join(pretrained, "export")  # The export base.
  from_checkpoint, _ = classifier.load_encoder(pretrained)
  for path in (saved_model, os.path.join(saved_model, "2")):
    from_export, config = classifier.load_encoder(path)
    assert config.image_size == 16
    for a, b in zip(from_checkpoint.variables, from_export.variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  random, _ = classifier.load_encoder(saved_model, random_init=True)
  untrained, _ = classifier.load_encoder(pretrained, random_init=True)
  for a, b in zip(random.variables, untrained.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_encoder_from_checkpoint_restores_every_layer(pretrained):
  trained, config = checkpoints.encoder_from_checkpoint(pretrained)
  untrained, _ = checkpoints.encoder_from_checkpoint(pretrained,
                                                     untrained=True)
  for a, b in zip(trained.weights, untrained.weights):
    assert not np.array_equal(a.numpy(), b.numpy()), a.path
  # The end-of-run export was written from the in-memory model.
  saved = tf.saved_model.load(os.path.join(pretrained, "export", "2"))
  patches = tf.random.uniform([2, config.grid_size, config.grid_size,
                               config.patch_size, config.patch_size, 3])
  np.testing.assert_allclose(trained(patches), saved.latents_train(patches),
                             atol=1e-5)


@pytest.fixture(scope="module")
def fixed_and_finetuned(tmp_path_factory, pretrained, data_dir):
  root = tmp_path_factory.mktemp("eval")
  fixed = eval_config_for(root / "efficient", pretrained, data_dir)
  tuned = eval_config_for(root / "finetune", pretrained, data_dir,
                          protocol="finetune", init_from=fixed.model_dir)
  return fixed, evaluation.run(fixed), tuned, evaluation.run(tuned)


def test_fixed_keeps_and_finetuning_updates_the_encoder(fixed_and_finetuned,
                                                        pretrained):
  fixed, _, tuned, _ = fixed_and_finetuned
  original, _ = checkpoints.encoder_from_checkpoint(pretrained)
  start_head = weights_of_run(fixed, pretrained, tf.train.latest_checkpoint(
      os.path.join(fixed.model_dir, "best"))).head.weights
  for config in (fixed, tuned):
    net = weights_of_run(config, pretrained,
                         tf.train.latest_checkpoint(config.model_dir))
    changed = [not np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(net.encoder.weights, original.weights)]
    if config is fixed:
      assert not any(changed)
    else:
      assert all(changed)
      # Fine-tuning continued from the efficient head, and trained it.
      assert any(not np.array_equal(a.numpy(), b.numpy())
                 for a, b in zip(net.head.weights, start_head))


def test_results_follow_the_schema(fixed_and_finetuned):
  fixed, fixed_results, tuned, tuned_results = fixed_and_finetuned
  on_disk = results.read(tuned.model_dir)
  assert on_disk == json.loads(json.dumps(tuned_results))
  assert tuned_results["method"] == "cpc_finetune"
  assert tuned_results["details"]["started_from"] == fixed.model_dir
  assert fixed_results["subset"] == "50%"
  assert (fixed_results["num_train"], fixed_results["num_validation"],
          fixed_results["num_test"]) == (20, 8, 16)
  assert set(fixed_results["test"]["per_class"]) == {"0", "1", "2", "3"}
  broken = dict(fixed_results, test=dict(fixed_results["test"], top5=1.5))
  with pytest.raises(ValueError, match="test.top5"):
    results.check(broken)
  with pytest.raises(ValueError, match="'num_test'"):
    results.check({k: v for k, v in fixed_results.items()
                   if k != "num_test"})


def test_finetuning_that_never_beats_its_start_selects_the_start(
    tmp_path, fixed_and_finetuned, pretrained, data_dir, monkeypatch):
  """The fixed solution fine-tuning starts from is validated at step 0 and
  kept when no fine-tuned step validates better."""
  fixed, _, _, _ = fixed_and_finetuned
  scores = iter([0.9, 0.5, 0.6])  # Steps 0, 2, 4; then the real test.
  evaluate = accuracy.evaluate

  def scripted(*args):
    metrics = evaluate(*args)
    return dict(metrics, top1=next(scores, metrics["top1"]))

  monkeypatch.setattr(accuracy, "evaluate", scripted)
  config = eval_config_for(tmp_path, pretrained, data_dir,
                           protocol="finetune", init_from=fixed.model_dir)
  got = evaluation.run(config)
  assert (got["best_step"], got["steps_trained"]) == (0, 4)
  assert got["validation"] == {"top1": 0.9}
  start = weights_of_run(fixed, pretrained, tf.train.latest_checkpoint(
      os.path.join(fixed.model_dir, "best")))
  kept = weights_of_run(config, pretrained, tf.train.latest_checkpoint(
      os.path.join(config.model_dir, "best")))
  last = weights_of_run(config, pretrained,
                        tf.train.latest_checkpoint(config.model_dir))
  for a, b, c in zip(start.weights, kept.weights, last.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert any(not np.array_equal(a.numpy(), c.numpy())
             for a, c in zip(start.weights, last.weights))


class _Scripted:
  """A validation with given scores that records the weights it saw."""

  def __init__(self, model, scores):
    self.model, self.scores, self.seen = model, list(scores), []

  def __call__(self):
    self.seen.append([v.numpy().copy() for v in self.model.weights])
    return {"top1": self.scores[len(self.seen) - 1]}


def test_early_stopping_restores_the_best_weights(tmp_path):
  model = keras.Sequential([keras.layers.Dense(1)])
  model.build((None, 2))
  validate = _Scripted(model, [0.2, 0.6, 0.4, 0.3, 0.1, 0.9])

  def loss(m, batch):
    return {"loss": tf.reduce_mean((m(batch[0]) - batch[1]) ** 2)}

  def dataset_fn(unused_context, skip):
    x = tf.random.stateless_normal([64, 2], [1, 2])
    return tf.data.Dataset.from_tensor_slices(
        (x, tf.reduce_sum(x, 1, keepdims=True))).repeat().batch(4).skip(skip)

  optimizer = keras.optimizers.SGD(0.1)
  best = None
  trainer = loop.Trainer(
      strategy=tf.distribute.get_strategy(), model_dir=str(tmp_path),
      model=model, optimizer=optimizer, compute_loss=loss,
      dataset_fn=dataset_fn, global_batch_size=4, train_steps=6,
      steps_per_loop=1, checkpoint_every=1, summary_every=1,
      on_checkpoint=lambda step: best(step))
  best = early_stopping.BestWeights(model, str(tmp_path / "best"), validate,
                                    patience=2, every=1)
  trainer.train()
  assert int(trainer.step) == 4  # Steps 3 and 4 brought no improvement.
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
  assert best.restore() == 2 and best.best_value == 0.6
  for v, want in zip(model.weights, validate.seen[1]):
    np.testing.assert_array_equal(v.numpy(), want)
  # The stopping state resumes from the best checkpoint alone.
  again = early_stopping.BestWeights(model, str(tmp_path / "best"), validate,
                                     patience=2, every=1)
  assert (again.best_step, again.best_value) == (2, 0.6)
  assert again.should_stop(4) and not again.should_stop(3)


def test_resume_after_interruption(tmp_path, pretrained, data_dir,
                                   monkeypatch):
  straight = dataclasses.replace(
      eval_config_for(tmp_path / "straight", pretrained, data_dir,
                      protocol="linear"), train_steps=8)
  want = evaluation.run(straight)
  resumed = dataclasses.replace(straight, model_dir=str(tmp_path / "resumed"))
  validate = early_stopping.BestWeights.__call__

  def interrupted(self, step):
    if step == 4:  # A preemption notice (SIGTERM) arrives during training.
      os.kill(os.getpid(), signal.SIGTERM)
    return validate(self, step)

  monkeypatch.setattr(early_stopping.BestWeights, "__call__", interrupted)
  with pytest.raises(errors.Preempted, match="rerun the same command"):
    evaluation.run(resumed)
  saved = int(tf.train.latest_checkpoint(resumed.model_dir).rsplit("-", 1)[1])
  assert 4 <= saved < resumed.train_steps
  assert results.read(resumed.model_dir) is None
  monkeypatch.setattr(early_stopping.BestWeights, "__call__", validate)
  got = evaluation.run(resumed)
  for key in ("test", "validation", "best_step", "steps_trained"):
    assert got[key] == want[key], key
  # A finished run is read back, not retrained.
  stamp = os.path.getmtime(os.path.join(resumed.model_dir, "results.json"))
  assert evaluation.run(resumed) == got
  assert os.path.getmtime(
      os.path.join(resumed.model_dir, "results.json")) == stamp
  with pytest.raises(ValueError, match="other values of --train_steps"):
    evaluation.run(dataclasses.replace(resumed, train_steps=6))


def test_supervised_sweep_tests_only_the_best_on_validation(tmp_path,
                                                            data_dir):
  config = eval_config.SupervisedConfig(
      model_dir=str(tmp_path), dataset=data_dir, image_size=16,
      label_fraction=0.5, validation_per_class=2, learning_rate=(0.05, 0.2),
      dropout=(0.5,), batch_size=(4,), augment=("crop_flip",),
      train_steps=2, eval_every=1, steps_per_loop=1, summary_every=1,
      eval_batch_size=8, **NO_AUGMENT)
  grid = dataclasses.replace(config, augment=("full", "crop_flip"),
                             weight_decay=(0.0, 1e-3))
  assert [t.name for t in baseline.trials(grid)][:3] == [
      "tiny_full_lr0.05_wd0_do0.5_bs4", "tiny_full_lr0.05_wd0.001_do0.5_bs4",
      "tiny_full_lr0.2_wd0_do0.5_bs4"]
  assert len(baseline.trials(grid)) == 8
  got = baseline.run(config)
  trials = got["details"]["trials"]
  assert len(trials) == 2
  best = max(trials, key=lambda t: t["validation"]["top1"])
  assert got["validation"] == best["validation"]
  assert got["method"] == "supervised" and got["test"]["examples"] == 16
  results.check(got)
  model = classifier.PixelClassifier("tiny", NUM_CLASSES, dropout=0.5)
  model(tf.zeros([1, 1, 1, 16, 16, 3]))
  assert model.dropout.rate == 0.5  # Dropout before the classifier (A.4).


@pytest.mark.parametrize("overrides, message", [
    (dict(label_fraction=0.0), "--label_fraction=0.0; allowed: 0 < "),
    (dict(label_fraction=1.5), "--label_fraction=1.5; allowed: 0 < "),
    (dict(encoder=""), "--encoder is required"),
    (dict(init_from="x"), "--init_from with --protocol=efficient"),
    (dict(encoder_lr_scale=2.0), "--encoder_lr_scale=2.0; allowed"),
    (dict(head="huge"), "--head='huge'; allowed: paper, small"),
    (dict(dataset="imagenet2012_subset/1pct", label_fraction=0.1),
     "allowed: 1 "),
])
def test_bad_flag_values(overrides, message):
  config = eval_config_for("m", **dict(dict(encoder="e", data_dir="d"),
                                       **overrides))
  with pytest.raises(ValueError, match=message):
    config.validate()


@pytest.mark.parametrize("config_cls, args, message", [
    (eval_config.SupervisedConfig, ["--dropout=0.2,1.0"],
     "error: --dropout=0.2,1; allowed: 0 <= dropout < 1"),
    (eval_config.SupervisedConfig, ["--batch_size=32,x"],
     "error: --batch_size=32,x; expected comma-separated int values"),
    (eval_config.SupervisedConfig, ["--architecture=tiny,resnet9"],
     "error: --architecture='resnet9'; allowed: resnet161, "),
    (eval_config.SupervisedConfig, ["--augment="],
     "error: --augment is empty; give at least one value"),
    (eval_config.EvalConfig, ["--encoder=e", "--patience=-1"],
     "error: --patience=-1; must be >= 0"),
    (eval_config.EvalConfig, ["--encoder=e", "--warmup_steps=-1"],
     "error: --warmup_steps=-1; must be >= 0"),
    (eval_config.EvalConfig, [], "error: --encoder is required"),
])
def test_binaries_stop_with_one_line_naming_the_flag(config_cls, args,
                                                     message):
  got = flag_error(config_cls, "--model_dir=m", *args)
  assert got.startswith(message) and "\n" not in got, got


def _fake_results(method, fraction, top1, validation=None):
  return {"method": method, "subset": f"{100 * fraction:g}%",
          "dataset": "d", "train_split": "train", "test_split": "test",
          "num_train": int(1000 * fraction), "num_validation": 50,
          "num_test": 100,
          "validation": {"top1": top1 if validation is None else validation},
          "test": {"top1": top1, "top5": min(1.0, 2 * top1)}}


def _fake_runs(method, fraction, top1s, validation=None):
  """{seed: results} of seeds 0, 1, ... with these test (and validation)
  Top-1s."""
  validation = validation or top1s
  return {seed: _fake_results(method, fraction, t, v)
          for seed, (t, v) in enumerate(zip(top1s, validation))}


def _mean_std(values):
  return (f"{100 * np.mean(values):.1f} ± "
          f"{100 * np.std(values, ddof=1):.1f}")


def test_report_table_claim_and_plot(tmp_path):
  fractions = [0.01, 0.1]
  found = {("cpc_efficient", 0.01): _fake_runs("cpc_efficient", .01, [.4]),
           ("cpc_finetune", 0.01): _fake_runs("cpc_finetune", .01, [.45]),
           ("supervised", 0.01): _fake_runs("supervised", .01, [.3]),
           ("random_efficient", 0.01): _fake_runs("random_efficient",
                                                  .01, [.2]),
           ("cpc_efficient", 0.1): _fake_runs("cpc_efficient", .1, [.5]),
           ("supervised", 0.1): _fake_runs("supervised", .1, [.6])}
  methods = ["cpc_efficient", "cpc_finetune", "supervised",
             "random_efficient"]
  assert report.plan(["cpc_finetune", "supervised"], [0.01]) == [
      ("cpc_efficient", 0.01, None), ("supervised", 0.01, None),
      ("cpc_finetune", 0.01, None)]
  command = report.command("random_finetune", 0.1, "sweep", "enc",
                           {"finetune": "ft.flags"})
  assert command[1:] == [
      "-m", "cpc_tf.evaluate", "--flagfile=ft.flags", "--protocol=finetune",
      "--encoder=enc", "--label_fraction=0.1",
      "--model_dir=sweep/random_finetune/10pct", "--random_init",
      "--init_from=sweep/random_efficient/10pct"]
  text = report.markdown(found, methods, fractions, [command], "T")
  assert "| ResNet on CPC v2 (fine-tuned) | 45.0 / 90.0 | — |" in text
  assert ("  - CPC (fine-tuned, chosen on validation) 45.0 vs supervised "
          "30.0: margin +15.0 points\n") in text
  assert ("  - CPC (fine-tuned, chosen on validation) 45.0 vs random-init "
          "(fixed) 20.0: margin +25.0 points\n") in text
  assert ("- 10% labels:\n  - CPC (fixed) 50.0 vs supervised 60.0: margin "
          "**-10.0 points**\n\n") in text  # No random-init run at 10%.
  assert "| images | 10 train / 50 val / 100 test |" in text


def test_report_runs_one_dir_per_seed():
  """--eval_seeds=0 keeps the single-seed layout; other seeds get their
  own directory, --seed and the efficient run of their seed to fine-tune."""
  assert report.run_seeds((0,)) == (None,)
  assert report.run_seeds((0, 1)) == (0, 1)
  assert report.run_dir("s", "supervised", 0.5) == "s/supervised/50pct"
  assert report.run_dir("s", "supervised", 0.5, 0) == (
      "s/supervised/50pct/seed0")
  command = report.command("cpc_finetune", 0.01, "s", "enc",
                           {"finetune": "ft.flags"}, 3)
  assert command[1:] == [
      "-m", "cpc_tf.evaluate", "--flagfile=ft.flags", "--protocol=finetune",
      "--encoder=enc", "--label_fraction=0.01",
      "--model_dir=s/cpc_finetune/1pct/seed3", "--seed=3",
      "--init_from=s/cpc_efficient/1pct/seed3"]
  command = report.command("supervised", 1.0, "s", "", {"supervised": "x"},
                           0)
  assert command[-3:] == ["--label_fraction=1",
                          "--model_dir=s/supervised/100pct/seed0",
                          "--seed=0"]
  assert report.plan(["cpc_finetune"], [0.01, 0.1], (0, 3)) == [
      ("cpc_efficient", 0.01, 0), ("cpc_finetune", 0.01, 0),
      ("cpc_efficient", 0.1, 0), ("cpc_finetune", 0.1, 0),
      ("cpc_efficient", 0.01, 3), ("cpc_finetune", 0.01, 3),
      ("cpc_efficient", 0.1, 3), ("cpc_finetune", 0.1, 3)]
  # The linear methods at their own fractions (A.3: 100%), the others not.
  assert report.plan(["cpc_linear", "cpc_efficient"], [0.01, 0.1], (0,),
                     [0.1, 1.0]) == [
      ("cpc_efficient", 0.01, None), ("cpc_linear", 0.1, None),
      ("cpc_efficient", 0.1, None), ("cpc_linear", 1.0, None)]
  config = report.ReportConfig(sweep_dir="s", output_dir="o",
                               label_fractions=(0.1, 0.01),
                               linear_fractions=(1.0, 0.1))
  assert config.fractions == (0.01, 0.1, 1.0)  # The table's columns.


def test_report_collects_every_seed_and_shows_mean_and_std(tmp_path,
                                                           monkeypatch):
  cpc, supervised = [.40, .43, .47], [.28, .33]
  runs = {f"s/cpc_efficient/1pct/seed{seed}": r for seed, r in
          _fake_runs("cpc_efficient", .01, cpc, [.5, .6, .7]).items()}
  runs |= {f"s/supervised/1pct/seed{2 * seed}": r for seed, r in
           _fake_runs("supervised", .01, supervised).items()}  # Seeds 0, 2.
  runs["s/supervised/1pct"] = _fake_results("supervised", .01, .9)
  monkeypatch.setattr(results, "read", runs.get)
  methods, seeds = ["cpc_efficient", "supervised"], (0, 1, 2)
  found = report.collect("s", methods, [0.01, 0.1], seeds)
  assert set(found) == {("cpc_efficient", 0.01), ("supervised", 0.01)}
  assert sorted(found["supervised", 0.01]) == [0, 2]
  text = report.write_report("s", str(tmp_path), methods, [0.01], [], "T",
                             "top1", seeds)
  top5 = np.mean([2 * t for t in cpc])
  assert (f"| ResNet on CPC v2 (fixed) | {_mean_std(cpc)} / "
          f"{100 * top5:.1f} |") in text
  assert (f"| ResNet trained on pixels | {_mean_std(supervised)} / "
          f"{100 * np.mean(supervised) * 2:.1f} (2 of 3 seeds) |") in text
  with open(tmp_path / "results.json") as f:
    entry = json.load(f)["cpc_efficient/1pct"]
  assert list(entry["seeds"]) == ["0", "1", "2"]
  assert entry["seeds"]["1"]["top1"] == .43
  assert entry["seeds"]["1"]["validation_top1"] == .6
  np.testing.assert_allclose(
      [entry["mean"][k] for k in ("top1", "top5", "validation_top1")],
      [np.mean(cpc), top5, .6])
  np.testing.assert_allclose(entry["std"]["top1"], np.std(cpc, ddof=1))
  # The single-seed layout: <method>/<N>pct, seed 0, no ± nor seed count.
  found = report.collect("s", ["supervised"], [0.01])
  assert list(found["supervised", 0.01]) == [0]
  text = report.markdown(found, ["supervised"], [0.01], [], "T")
  assert "| ResNet trained on pixels | 90.0 / 100.0 |" in text


def test_report_claim_chooses_fixed_or_finetuned_on_validation():
  """At 1%, CPC fixed and random-init fine-tuned validate better but test
  worse than their alternatives: choosing on test would give other
  margins."""
  found = {
      ("cpc_efficient", 0.01): _fake_runs("cpc_efficient", .01, [.38, .42],
                                          [.6, .6]),
      ("cpc_finetune", 0.01): _fake_runs("cpc_finetune", .01, [.45, .45],
                                         [.5, .5]),
      ("supervised", 0.01): _fake_runs("supervised", .01, [.3]),
      ("random_efficient", 0.01): _fake_runs("random_efficient", .01,
                                             [.25], [.2]),
      ("random_finetune", 0.01): _fake_runs("random_finetune", .01,
                                            [.2], [.3]),
      ("cpc_linear", 0.01): _fake_runs("cpc_linear", .01, [.3]),
      ("random_linear", 0.01): _fake_runs("random_linear", .01, [.1])}
  cpc = f"CPC (fixed, chosen on validation) {_mean_std([.38, .42])}"
  assert report.claim(found, 0.01) == [
      f"{cpc} vs supervised 30.0: margin +10.0 points",
      f"{cpc} vs random-init (fine-tuned, chosen on validation) 20.0: "
      "margin +20.0 points",
      "Linear: CPC 30.0 vs random-init 10.0: margin +20.0 points"]
  # Every fraction of the sweep is checked, not only 1% and 10%.
  text = report.markdown(found, list(report.METHODS), [0.01, 0.5], [], "T")
  assert "- 1% labels:\n  - CPC (fixed, chosen on validation)" in text
  assert "- 50% labels:\n  - not enough runs to compare\n" in text


def test_report_plot_draws_each_method_at_its_results(tmp_path):
  fractions = [0.01, 0.1]
  found = {("cpc_finetune", 0.01): _fake_runs("cpc_finetune", .01, [.45]),
           ("cpc_finetune", 0.1): _fake_runs("cpc_finetune", .1, [.7]),
           ("supervised", 0.01): _fake_runs("supervised", .01, [.28, .34]),
           ("supervised", 0.1): _fake_runs("supervised", .1, [.6])}
  methods = ["cpc_finetune", "supervised", "random_efficient"]
  fig = report.figure(found, methods, fractions, "top1", "T")
  bars = {c.get_label(): c for c in fig.axes[0].containers}
  assert set(bars) == {"ResNet on CPC v2 (fine-tuned)",
                       "ResNet trained on pixels"}  # No random-init runs.
  for method, label in (("cpc_finetune", "ResNet on CPC v2 (fine-tuned)"),
                        ("supervised", "ResNet trained on pixels")):
    line, _, (bar_lines,) = bars[label].lines
    means = [100 * np.mean([r["test"]["top1"]
                            for r in found[method, f].values()])
             for f in fractions]
    # errorbar keeps the data as object arrays (for units).
    np.testing.assert_allclose(line.get_xdata().astype(float), [1, 10])
    np.testing.assert_allclose(line.get_ydata().astype(float), means)
    stds = [100 * np.std([r["test"]["top1"]
                          for r in found[method, f].values()], ddof=1)
            if len(found[method, f]) > 1 else 0 for f in fractions]
    np.testing.assert_allclose(  # Error bars: mean ± std; 0 for one seed.
        [s[:, 1] for s in bar_lines.get_segments()],
        [[m - s, m + s] for m, s in zip(means, stds)])
  # The PNG holds that figure: both lines' colours inside the axes.
  report.plot(found, methods, fractions, "top1", "T",
              str(tmp_path / "plot.png"))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.asarray(Image.open(tmp_path / "plot.png").convert("RGB"))
  assert image.shape == (540, 720, 3)  # 6 x 4.5 inches at 120 dpi.
  box = fig.axes[0].get_window_extent()
  scale = 120 / fig.dpi
  inside = image[int(image.shape[0] - box.y1 * scale):
                 int(image.shape[0] - box.y0 * scale),
                 int(box.x0 * scale):int(box.x1 * scale)]
  for colour in ("tab:blue", "tab:red"):
    rgb = np.round(255 * np.array(matplotlib.colors.to_rgb(colour)))
    assert (np.abs(inside - rgb).max(-1) < 8).sum() > 100, colour
