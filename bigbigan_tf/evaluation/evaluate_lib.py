"""Evaluates a BigBiGAN run: IS / FID / KID, linear probe, digit metrics, grids.

`evaluate(workdir, metrics=[...])` takes G and E from the workdir's latest
checkpoint (the EMA networks) or from an exported module, the real images
from the run's config, computes the requested metrics and writes

  W/eval/results_step{STEP}.json   every setting and metric (and a copy in
  W/eval/results_latest.json)
  W/eval/events.*                  the same scalars, and the grids, for
                                   TensorBoard
  W/eval/samples_step{STEP}.png    G(z) for fixed z
  W/eval/reconstructions_step{STEP}.png
                                   rows of eval images over G(E(x).z_mean)
  W/eval/digit_classifier.keras    the cached digit classifier (digit data)

Metrics (names for `metrics=`):
  is, fid, kid     Inception Score / FID / KID of `num_samples` EMA-G samples
                   (z ~ N(0, I), fixed seed) against up to `num_samples` eval
                   images average-pooled to G's resolution, through
                   `metrics` here and TF-GAN's Inception (or
                   `classifier_fn`).
  linear_probe     the paper's logistic regression on frozen E features of
                   the training split (train_val held out of it), evaluated
                   on the eval split.
  digit_fid        Frechet distance in the feature space of a small digit CNN
                   (`digit_classifier` here) trained on the training
                   split: an offline stand-in for FID on digit data, NOT
                   comparable with Inception FID.
  prdc             improved precision / recall (Kynkaenniemi et al. 2019) and
                   density / coverage (Naeem et al. 2020), k = prdc_k, on
                   FID's features and samples (`prdc` here): Inception's
                   pool_3 where it loads, else the digit CNN's features on
                   digit data.
  recon_accuracy   how often the digit CNN gives a reconstruction
                   G(E(x).z_mean) the label of x, with the CNN's accuracy on
                   the real images for scale.
  grids            the PNG grids above.

Failure policy: a metric that cannot be computed here (Inception weights not
reachable offline, no labels for the probe, digit metrics on non-digit data)
does not stop the others. Its message goes under the result's "errors" key
(the metric is missing from "metrics"); the command line then exits with
status 2. Usage errors (unknown metric, no workdir or checkpoint, bad module
path) raise before any work.
"""

import datetime
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import data as data_lib
from bigbigan_tf import defaults
from bigbigan_tf import files
from bigbigan_tf import grids
from bigbigan_tf.evaluation import digit_classifier as digit_lib
from bigbigan_tf.evaluation import features as features_lib
from bigbigan_tf.evaluation import linear_probe as probe_lib
from bigbigan_tf.evaluation import metrics as metrics_lib
from bigbigan_tf.evaluation import prdc as prdc_lib

GENERATIVE_METRICS = defaults.GENERATIVE_METRICS
DIGIT_METRICS = defaults.DIGIT_METRICS
METRICS = defaults.METRICS
EVAL_DIR = 'eval'
DIGIT_CLASSIFIER_FILE = 'digit_classifier.keras'
LATEST_RESULTS_FILE = 'results_latest.json'
# Datasets of the ten digits 0-9 whose labels are the digits, on which the
# digit classifier applies: the offline MNIST and TFDS datasets.
DIGIT_TFDS_DATASETS = ('mnist', 'svhn_cropped', 'emnist/digits')
# Grid side when the config has none (e.g. an official module's run).
_DEFAULT_GRID_SIZE = 8
# Standard IS protocol: 10 splits.
_IS_SPLITS = 10

DIGIT_FID_NOTE = ('digit Frechet distance (penultimate features of a small '
                  'CNN trained on the training split), NOT comparable with '
                  'Inception FID')

ClassifierFn = metrics_lib.ClassifierFn


class EvaluationError(ValueError):
  """The evaluation was asked for in a way that cannot work (see message)."""


class MetricUnavailableError(RuntimeError):
  """One metric cannot be computed on this run or machine."""


def is_digit_data(config: ml_collections.ConfigDict) -> bool:
  """Whether the digit classifier applies: 10 digit classes labelled 0-9."""
  kind, arg = data_lib.parse_data_name(config.data.name)
  if kind == 'mnist':
    return True
  # 'mnist:3.0.1' names a version of 'mnist'.
  return kind == 'tfds' and arg.split(':')[0] in DIGIT_TFDS_DATASETS


def default_metrics(config: ml_collections.ConfigDict) -> List[str]:
  """is, fid, kid, linear_probe, grids; plus the digit metrics on digits."""
  names = list(GENERATIVE_METRICS) + ['linear_probe', 'grids']
  return names + (list(DIGIT_METRICS) if is_digit_data(config) else [])


def check_metrics(metrics: Sequence[str]) -> List[str]:
  """Validates metric names; returns them without duplicates, in order.

  Raises:
    EvaluationError: naming the unknown ones and the known names.
  """
  if isinstance(metrics, str):
    metrics = metrics.split(',')
  names = [m.strip() for m in metrics if m.strip()]
  unknown = [m for m in names if m not in METRICS]
  if unknown:
    raise EvaluationError(
        f'Unknown metric name(s) {unknown}: choose from {",".join(METRICS)}, '
        'e.g. --metrics=fid,linear_probe.')
  if not names:
    raise EvaluationError(
        f'No metric requested; choose from {",".join(METRICS)}, e.g. '
        '--metrics=fid,linear_probe.')
  return list(dict.fromkeys(names))


class _Collector:
  """Concatenates arrays of the same keys over batches."""

  def __init__(self):
    self._chunks: Dict[str, list] = {}

  def add(self, **arrays):
    for key, value in arrays.items():
      self._chunks.setdefault(key, []).append(np.asarray(value))

  def __contains__(self, key):
    return key in self._chunks

  def __getitem__(self, key) -> np.ndarray:
    return np.concatenate(self._chunks[key])


def _prefixed(outputs: Mapping[str, Any], prefix: str) -> Dict[str, np.ndarray]:
  return {prefix + key: np.asarray(value) for key, value in outputs.items()}


def _train_pass(config, nets, *, batch_size: int, feature: Optional[str],
                keep_small_images: bool) -> _Collector:
  """Training split: E features and labels; G-resolution images if asked."""
  out = _Collector()
  for batch in features_lib.real_batches(
      config, split=config.data.split, image_size=nets.encoder_resolution,
      batch_size=batch_size):
    x, labels = batch['image'].numpy(), batch['label'].numpy()
    out.add(labels=labels)
    if feature:
      out.add(features=nets.encode(x)[feature])
    if keep_small_images:
      out.add(small=features_lib.downsample(x, nets.resolution))
  if 'labels' not in out:
    raise data_lib.DataError(
        f'The training split {config.data.split!r} of data.name='
        f'{config.data.name!r} is empty.')
  return out


def _eval_pass(config, nets, *, batch_size: int, limit: int,
               feature: Optional[str], inception_fn: Optional[ClassifierFn],
               digit: Optional[digit_lib.DigitClassifier], recon: bool,
               grid_n: int) -> Dict[str, Any]:
  """One ordered pass over the eval split, feeding every consumer.

  The first `limit` images feed Inception (FID / KID), the digit classifier
  (digit_fid, its accuracy, reconstructions); all images feed the probe
  (when `feature` is set); the first `grid_n` the reconstruction grid. The
  pass stops early when only limited consumers remain.
  """
  limited, probe = _Collector(), _Collector()
  grid_real, grid_recon = [], []
  seen, exhausted = 0, True
  needs_limited = inception_fn is not None or digit is not None
  if not (needs_limited or feature or grid_n):  # E.g. IS alone.
    return {'limited': limited, 'probe': probe, 'num_limited': 0,
            'split_size': None, 'grid_real': None, 'grid_recon': None}
  for batch in features_lib.real_batches(
      config, split=config.data.eval_split,
      image_size=nets.encoder_resolution, batch_size=batch_size):
    x, labels = batch['image'].numpy(), batch['label'].numpy()
    n_lim = max(0, min(len(x), limit - seen)) if needs_limited else 0
    n_grid = max(0, min(len(x), grid_n - seen))
    enc = None
    if feature or (recon and n_lim) or n_grid:
      enc = nets.encode(x)
    if feature:
      probe.add(features=enc[feature], labels=labels)
    if n_lim or n_grid:
      small = features_lib.downsample(x[:max(n_lim, n_grid)], nets.resolution)
    if n_lim:
      limited.add(labels=labels[:n_lim])
      if inception_fn is not None:
        limited.add(**_prefixed(inception_fn(small[:n_lim]), 'inception/'))
      if digit is not None:
        limited.add(**_prefixed(digit(small[:n_lim]), 'digit/'))
    recon_images = None
    if (recon and n_lim) or n_grid:
      recon_images = nets.generate(enc['z_mean'][:max(n_lim if recon else 0,
                                                      n_grid)])
    if recon and n_lim:
      limited.add(recon_logits=digit(recon_images[:n_lim])['logits'])
    if n_grid:
      grid_real.append(small[:n_grid])
      grid_recon.append(recon_images[:n_grid])
    seen += len(x)
    if not feature and seen >= max(limit if needs_limited else 0, grid_n):
      exhausted = False
      break
  if not seen:
    raise data_lib.DataError(
        f'The eval split {config.data.eval_split!r} of data.name='
        f'{config.data.name!r} is empty; set --config.data.eval_split.')
  return {
      'limited': limited, 'probe': probe,
      'num_limited': min(seen, limit) if needs_limited else 0,
      # The split's size, when the pass read all of it.
      'split_size': seen if exhausted else None,
      'grid_real': np.concatenate(grid_real) if grid_real else None,
      'grid_recon': np.concatenate(grid_recon) if grid_recon else None,
  }


def probe_labels(labels: np.ndarray, split: str) -> np.ndarray:
  """Indices of labelled examples; raises if the probe cannot run."""
  keep = np.flatnonzero(labels >= 0)
  if not len(keep):
    raise MetricUnavailableError(
        f'linear_probe needs class labels, but the {split!r} split has none '
        '(label -1): use a labelled dataset (a TFDS dataset with labels, or '
        'a folder with one subfolder per class).')
  return keep


def _linear_probe(train: _Collector, probe: _Collector, *, config,
                  feature: str, epochs: int, seed: int) -> Dict[str, Any]:
  train_keep = probe_labels(train['labels'], config.data.split)
  eval_keep = probe_labels(probe['labels'], config.data.eval_split)
  train_y, eval_y = train['labels'][train_keep], probe['labels'][eval_keep]
  num_classes = int(max(train_y.max(), eval_y.max())) + 1
  if len(np.unique(train_y)) < 2:
    raise MetricUnavailableError(
        f'linear_probe needs at least 2 classes in the training split; '
        f'{config.data.name!r} has only class {int(train_y[0])}. Use a '
        'labelled dataset (or a folder with one subfolder per class).')
  result = probe_lib.linear_probe(
      train['features'][train_keep], train_y, probe['features'][eval_keep],
      eval_y, num_classes=num_classes, epochs=epochs, seed=seed)
  result['num_classes'] = num_classes
  result['feature'] = feature
  result['dropped_unlabelled'] = int(len(train['labels']) - len(train_keep) +
                                     len(probe['labels']) - len(eval_keep))
  return result


def _digit_classifier(workdir: str, train: Optional[_Collector], *,
                      epochs: int, seed: int
                      ) -> tuple[digit_lib.DigitClassifier, Dict[str, Any]]:
  """The cached digit classifier of the workdir, trained if missing."""
  path = os.path.join(workdir, EVAL_DIR, DIGIT_CLASSIFIER_FILE)
  if tf.io.gfile.exists(path):
    logging.info('Using the cached digit classifier %s.', path)
    return digit_lib.DigitClassifier.load(path), {'path': path,
                                                  'trained_now': False}
  labels = train['labels']
  if labels.min() < 0 or labels.max() >= digit_lib.NUM_CLASSES:
    raise MetricUnavailableError(
        f'The digit classifier needs labels 0-9 on the training split; got '
        f'range [{labels.min()}, {labels.max()}].')
  logging.info('Training the digit classifier on %d training images (%d '
               'epochs); cached at %s.', len(labels), epochs, path)
  classifier = digit_lib.train_digit_classifier(
      train['small'], labels, epochs=epochs, seed=seed)
  classifier.save(path)
  return classifier, {'path': path, 'trained_now': True, 'epochs': epochs,
                      'num_train': int(len(labels))}


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def _grid_size(config) -> int:
  train_config = config.get('train') or {}
  return int(train_config.get('grid_size', _DEFAULT_GRID_SIZE))


def _check_arguments(*, module, checkpoint, num_samples, batch_size, feature,
                     probe_epochs, digit_classifier_epochs,
                     standing_stats_batches):
  if module is not None and checkpoint is not None:
    raise EvaluationError(
        f'Pass either --module ({module}) or --checkpoint ({checkpoint}), not '
        'both: a module already holds its weights.')
  if feature not in features_lib.FEATURES:
    raise EvaluationError(
        f'Unknown --feature={feature!r}; choose from '
        f'{", ".join(features_lib.FEATURES)}.')
  if num_samples < 2 or batch_size < 1:
    raise EvaluationError(
        f'Need --num_samples >= 2 and --batch_size >= 1; got num_samples='
        f'{num_samples}, batch_size={batch_size}.')
  if probe_epochs < 1 or digit_classifier_epochs < 1:
    raise EvaluationError(
        f'Need probe_epochs >= 1 and digit_classifier_epochs >= 1; got '
        f'{probe_epochs} and {digit_classifier_epochs}.')
  if standing_stats_batches < 0:
    raise EvaluationError(
        f'Need --standing_stats_batches >= 0 (0 keeps the checkpoint\'s '
        f'batch-norm statistics); got {standing_stats_batches}.')


def _check_sources(workdir: str, module: Optional[str],
                   checkpoint: Optional[str]) -> None:
  """Fails before any slow work if the checkpoint to evaluate is missing."""
  if module is None:
    checkpoints.find_checkpoint(workdir, checkpoint,
                                otherwise=', or pass --module=EXPORT_DIR')


def _unavailable(metrics: Sequence[str], config, *, inception: str,
                 classifier_fn: Optional[ClassifierFn]
                 ) -> tuple[Optional[ClassifierFn], Optional[str],
                            Dict[str, str]]:
  """Loads the IS / FID / KID classifier; finds metrics that cannot run.

  Runs first: offline, Inception fails here within seconds, before any slow
  work.

  Returns:
    (classifier function or None, its source for the settings, errors:
    metric -> message).
  """
  errors = {}
  generative = [m for m in metrics if m in GENERATIVE_METRICS]
  # prdc uses FID's features: Inception, else (offline) the digit CNN's.
  inception_users = generative + [m for m in metrics if m == 'prdc']
  classify, source = None, None
  if inception_users and classifier_fn is not None:
    classify, source = classifier_fn, 'classifier_fn'
  elif inception_users:
    source = inception
    try:
      classify = metrics_lib.load_inception(inception)
    except metrics_lib.ClassifierUnavailableError as e:
      errors.update({name: str(e) for name in generative})
      if 'prdc' in metrics and not is_digit_data(config):
        errors['prdc'] = (f'{e} Without Inception, prdc uses the digit '
                          'classifier\'s features, which need digit data.')
  if not is_digit_data(config):
    for name in DIGIT_METRICS:
      if name in metrics:
        errors[name] = (
            f'{name} applies to digit data (data.name=mnist or tfds:'
            f'{"/".join(DIGIT_TFDS_DATASETS)}); this run has data.name='
            f'{config.data.name!r}. Use is/fid/kid with Inception instead.')
  return classify, source, errors


def _generated_activations(nets, classifiers: Dict[str, Any], *,
                           num_samples: int, batch_size: int,
                           seed: int) -> Dict[str, np.ndarray]:
  """One pass of G through every classifier that needs generated images."""
  if not classifiers:
    return {}

  def classify(images):
    outputs = {}
    for prefix, fn in classifiers.items():
      outputs.update(_prefixed(fn(images), prefix))
    return outputs

  return metrics_lib.compute_activations(
      features_lib.generated_batches(nets, num=num_samples,
                                     batch_size=batch_size, seed=seed),
      classify, num_examples=num_samples)


def _generative_results(result, names: Sequence[str], real, fake, *,
                        num_samples: int, resolution: int,
                        injected: bool, shortfall: str) -> None:
  """IS / FID / KID into result['metrics'], with notes and counts."""
  values, notes = result['metrics'], result['notes']
  pool_key = 'inception/' + metrics_lib.POOL_KEY
  if 'is' in names:
    splits = min(_IS_SPLITS, num_samples)
    scores = metrics_lib.inception_score_splits(
        fake['inception/' + metrics_lib.LOGITS_KEY], num_splits=splits)
    values['is'] = float(np.mean(scores))
    values['is_std'] = float(np.std(scores))
    notes['is'] = (f'mean and std over {splits} splits of {num_samples} '
                   'samples' + ('; scored by the injected classifier_fn, not '
                                'Inception' if injected else ''))
  for name, distance in (('fid', metrics_lib.frechet_distance),
                         ('kid', metrics_lib.kernel_distance)):
    if name in names:
      values[name] = distance(real['limited'][pool_key], fake[pool_key])
      notes[name] = (f'{num_samples} generated vs {real["num_limited"]} real '
                     f'images (eval split, average-pooled to {resolution}px)'
                     + shortfall)
  result['details']['generative'] = {
      'num_generated': num_samples, 'num_real': real['num_limited'],
      'eval_split_smaller': bool(shortfall)}


def _digit_results(result, names: Sequence[str], real, fake, *,
                   num_samples: int, shortfall: str) -> None:
  """digit_fid / recon_accuracy and the classifier's accuracy on real x."""
  values, notes = result['metrics'], result['notes']
  limited, num_real = real['limited'], real['num_limited']
  labels = limited['labels']
  if 'digit_fid' in names:
    values['digit_fid'] = metrics_lib.frechet_distance(
        limited['digit/' + digit_lib.FEATURES_KEY],
        fake['digit/' + digit_lib.FEATURES_KEY])
    notes['digit_fid'] = (f'{DIGIT_FID_NOTE}; {num_samples} generated vs '
                          f'{num_real} real images' + shortfall)
  accuracy = float(np.mean(
      np.argmax(limited['digit/' + digit_lib.LOGITS_KEY], 1) == labels))
  values['digit_classifier_accuracy'] = accuracy
  result['details']['digit_classifier']['accuracy_on_eval'] = accuracy
  if 'recon_accuracy' in names:
    values['recon_accuracy'] = float(np.mean(
        np.argmax(limited['recon_logits'], 1) == labels))
    notes['recon_accuracy'] = (
        f'fraction of the first {num_real} eval images x whose '
        'reconstruction G(E(x).z_mean) the digit classifier labels as x\'s '
        'label; digit_classifier_accuracy is its accuracy on the real x')


def _prdc_results(result, real, fake, *, space: str, k: int,
                  num_samples: int, shortfall: str) -> None:
  """prdc/precision, recall, density, coverage on FID's feature space."""
  key = (f'inception/{metrics_lib.POOL_KEY}' if space == 'inception' else
         f'digit/{digit_lib.FEATURES_KEY}')
  try:
    values = prdc_lib.prdc(real['limited'][key], fake[key], k=k)
  except ValueError as e:
    result['errors']['prdc'] = str(e)
    return
  for name, value in values.items():
    result['metrics'][f'prdc/{name}'] = value
  result['details']['prdc'] = {'k': k, 'features': key}
  result['notes']['prdc'] = (
      f'improved precision / recall and density / coverage, k = {k}, on '
      + ('Inception pool_3 features' if space == 'inception' else
         'the digit classifier\'s penultimate features (offline stand-in; '
         'NOT comparable with Inception-based figures)')
      + f'; {num_samples} generated vs {real["num_limited"]} real images'
      + shortfall)


def _probe_results(result, train: _Collector, real, *, config, feature: str,
                   epochs: int, seed: int) -> None:
  try:
    probe = _linear_probe(train, real['probe'], config=config,
                          feature=feature, epochs=epochs, seed=seed)
  except MetricUnavailableError as e:
    result['errors']['linear_probe'] = str(e)
    return
  result['details']['linear_probe'] = probe
  for key in ('top1', 'top5', 'train_val_top1'):
    result['metrics'][f'linear_probe/{key}'] = float(probe[key])
  note = (f'logistic regression on frozen {feature} of the '
          f'{config.data.split!r} split ({probe["num_train_val"]} held out as '
          f'train_val), top-1 / top-{probe["top5_k"]} on the '
          f'{config.data.eval_split!r} split')
  if data_lib.parse_data_name(config.data.name)[0] == 'folder':
    note += '; a folder has no splits, so both are the same images'
  result['notes']['linear_probe'] = note


def _grid_images(nets, real, *, cols: int, batch_size: int,
                 seed: int) -> Dict[str, np.ndarray]:
  samples = np.concatenate(list(features_lib.generated_batches(
      nets, num=cols * cols, batch_size=batch_size, seed=seed)))
  return grids.sample_and_reconstruction_grids(
      samples, real['grid_real'], real['grid_recon'], cols=cols)


def _write_outputs(result, grid_images: Dict[str, np.ndarray], *,
                   eval_dir: str, tag: str, step: int) -> None:
  """PNG grids, TensorBoard summaries and the JSON files."""
  tf.io.gfile.makedirs(eval_dir)
  for name, grid in grid_images.items():
    result['grids'][name] = os.path.join(eval_dir, f'{name}_{tag}.png')
    grids.write_png(result['grids'][name], grid)
  writer = tf.summary.create_file_writer(eval_dir)
  with writer.as_default():
    for name, value in result['metrics'].items():
      tf.summary.scalar(name, value, step=step,
                        description=result['notes'].get(name.split('/')[0]))
    for name, grid in grid_images.items():
      tf.summary.image(name, grid[None], step=step)
  writer.close()
  result['results_file'] = os.path.join(eval_dir, f'results_{tag}.json')
  files.write_json(result['results_file'], result, default=_json_default)
  files.write_json(os.path.join(eval_dir, LATEST_RESULTS_FILE), result,
                   default=_json_default)
  logging.info('Wrote %s.', result['results_file'])


def evaluate(workdir: str, *, metrics: Optional[Sequence[str]] = None,
             module: Optional[str] = None, checkpoint: Optional[str] = None,
             num_samples: int = defaults.NUM_SAMPLES,
             batch_size: int = defaults.EVAL_BATCH_SIZE,
             feature: str = defaults.PROBE_FEATURE,
             inception: str = defaults.INCEPTION_HANDLE,
             classifier_fn: Optional[ClassifierFn] = None, seed: int = 0,
             probe_epochs: int = defaults.PROBE_EPOCHS,
             digit_classifier_epochs: int = defaults.DIGIT_CLASSIFIER_EPOCHS,
             prdc_k: int = defaults.PRDC_K,
             standing_stats_batches: int = defaults.STANDING_STATS_BATCHES
             ) -> Dict[str, Any]:
  """Evaluates a training run (or an exported module) and writes the results.

  Args:
    workdir: the run's workdir (local or gs://). Its config.json gives the
      data; results go to workdir/eval/. With `module`, the workdir may be
      new (or empty): the config then comes from the module's
      assets/config.json.
    metrics: names from METRICS (a list or a comma-separated string); None =
      `default_metrics(config)`.
    module: an exported SavedModel (export.py, or a BigBiGAN TF Hub module)
      to evaluate instead of the workdir's checkpoint.
    checkpoint: a checkpoint of the workdir (default: the latest).
    num_samples: generated images for IS / FID / KID / digit_fid, and the
      cap on real eval images for FID / KID / digit_fid / recon_accuracy.
    batch_size: images per forward pass.
    feature: encoder output for the linear probe: avepool_feat,
      bn_crelu_feat or z_mean.
    inception: TF Hub handle or SavedModel path of TF-GAN's Inception.
    classifier_fn: used instead of Inception when given: fn(images [B, H, W,
      3] in [-1, 1]) -> {'logits': [B, C], 'pool_3': [B, D]}.
    seed: seed of the latents, the probe's split and the digit classifier.
    probe_epochs: maximum epochs per learning rate of the linear probe.
    digit_classifier_epochs: epochs when the digit classifier is trained.
    prdc_k: the k of prdc's k-nearest-neighbour balls (< num_samples).
    standing_stats_batches: for a checkpoint, batches of BigGAN standing
      statistics for the EMA networks' batch norms, computed as export.py
      does (so a checkpoint and its export agree); 0 keeps the moving
      statistics copied from the live networks. Unused with `module`.

  Returns:
    The dict written to results_step{STEP}.json: 'step', 'source',
    'checkpoint', 'module', 'workdir', 'settings', 'metrics' (flat name ->
    float), 'details', 'notes', 'grids' (name -> PNG path), 'errors'
    (metric -> message, for metrics that could not be computed) and
    'results_file'. When no requested metric can be computed nothing is
    written, and 'results_file' is None.

  Raises:
    EvaluationError: unknown metric or feature, bad sizes, both module and
      checkpoint.
    FileNotFoundError: no config or checkpoint in the workdir.
    features_lib.ModuleLoadError: the module cannot be loaded.
    bigbigan_tf.data.DataError: the data cannot be read.
  """
  _check_arguments(module=module, checkpoint=checkpoint,
                   num_samples=num_samples, batch_size=batch_size,
                   feature=feature, probe_epochs=probe_epochs,
                   digit_classifier_epochs=digit_classifier_epochs,
                   standing_stats_batches=standing_stats_batches)
  if metrics is not None:
    metrics = check_metrics(metrics)
  config = features_lib.load_config(workdir, module)
  if metrics is None:
    metrics = default_metrics(config)
  _check_sources(workdir, module, checkpoint)
  inception_fn, inception_source, errors = _unavailable(
      metrics, config, inception=inception, classifier_fn=classifier_fn)
  result: Dict[str, Any] = {
      'step': None, 'source': None, 'checkpoint': None, 'module': module,
      'workdir': workdir,
      'settings': {
          'metrics': metrics, 'num_samples': num_samples,
          'batch_size': batch_size, 'feature': feature, 'seed': seed,
          'inception': inception_source, 'probe_epochs': probe_epochs,
          'standing_stats_batches': (None if module is not None
                                     else standing_stats_batches),
          'data': {'name': config.data.name, 'split': config.data.split,
                   'eval_split': config.data.eval_split}},
      'metrics': {}, 'details': {}, 'notes': {}, 'grids': {},
      'errors': errors, 'results_file': None}
  todo = [m for m in metrics if m not in errors]
  if not todo:
    return result

  if module is not None:
    nets = features_lib.load_from_module(module, config=config)
  else:
    config, nets = features_lib.load_from_workdir(
        workdir, checkpoint=checkpoint,
        standing_stats_batches=standing_stats_batches)
  result.update(step=nets.step, source=nets.source,
                checkpoint=nets.path if nets.source == 'checkpoint' else None,
                evaluated_at=datetime.datetime.now(
                    datetime.timezone.utc).isoformat(timespec='seconds'))
  result['settings'].update(resolution=nets.resolution,
                            encoder_resolution=nets.encoder_resolution)
  result['notes']['networks'] = (
      ('EMA G and E of the checkpoint in inference mode; their batch norms '
       f'use standing statistics over {standing_stats_batches} batches, as '
       'export.py sets them' if standing_stats_batches else
       'EMA G and E of the checkpoint in inference mode; their batch norms '
       'use the moving statistics copied from the live networks')
      if nets.source == 'checkpoint' else
      'the module\'s encode / generate signatures')
  generative = [m for m in todo if m in GENERATIVE_METRICS]
  digit_names = [m for m in todo if m in DIGIT_METRICS]
  prdc_space = None
  if 'prdc' in todo:
    prdc_space = 'inception' if inception_fn is not None else 'digit'
  digit_wanted = bool(digit_names) or prdc_space == 'digit'
  probe_wanted = 'linear_probe' in todo

  # Training split: probe features, and images for a digit classifier that
  # is not cached yet.
  train_digit = digit_wanted and not tf.io.gfile.exists(
      os.path.join(workdir, EVAL_DIR, DIGIT_CLASSIFIER_FILE))
  train = None
  if probe_wanted or train_digit:
    train = _train_pass(config, nets, batch_size=batch_size,
                        feature=feature if probe_wanted else None,
                        keep_small_images=train_digit)
  digit = None
  if digit_wanted:
    try:
      digit, result['details']['digit_classifier'] = _digit_classifier(
          workdir, train, epochs=digit_classifier_epochs, seed=seed)
    except MetricUnavailableError as e:
      errors.update({name: str(e) for name in digit_names})
      if prdc_space == 'digit':
        errors['prdc'], prdc_space = str(e), None
      digit_names = []

  cols = _grid_size(config)
  real = _eval_pass(
      config, nets, batch_size=batch_size, limit=num_samples,
      feature=feature if probe_wanted else None,
      inception_fn=(inception_fn if {'fid', 'kid'} & set(generative)
                    or prdc_space == 'inception' else None),
      digit=digit if digit_names or prdc_space == 'digit' else None,
      recon='recon_accuracy' in digit_names,
      grid_n=cols * cols if 'grids' in todo else 0)
  fake_classifiers = {}
  if generative or prdc_space == 'inception':
    fake_classifiers['inception/'] = inception_fn
  if 'digit_fid' in digit_names or prdc_space == 'digit':
    fake_classifiers['digit/'] = digit
  fake = _generated_activations(nets, fake_classifiers,
                                num_samples=num_samples,
                                batch_size=batch_size, seed=seed)

  shortfall = ''
  if real['split_size'] is not None and real['split_size'] < num_samples:
    shortfall = (f'; the eval split {config.data.eval_split!r} has only '
                 f'{real["split_size"]} images, fewer than num_samples='
                 f'{num_samples}')
  if generative:
    _generative_results(result, generative, real, fake,
                        num_samples=num_samples, resolution=nets.resolution,
                        injected=classifier_fn is not None,
                        shortfall=shortfall)
  if digit_names:
    _digit_results(result, digit_names, real, fake, num_samples=num_samples,
                   shortfall=shortfall)
  if prdc_space:
    _prdc_results(result, real, fake, space=prdc_space, k=prdc_k,
                  num_samples=num_samples, shortfall=shortfall)
  if probe_wanted:
    _probe_results(result, train, real, config=config, feature=feature,
                   epochs=probe_epochs, seed=seed)
  grid_images = {}
  if 'grids' in todo:
    grid_images = _grid_images(nets, real, cols=cols, batch_size=batch_size,
                               seed=seed)
    result['notes']['grids'] = (
        f'samples: G(z) for the first {cols * cols} latents of seed {seed}; '
        'reconstructions: rows of eval images (average-pooled to G\'s '
        'resolution) over G(E(x).z_mean)')

  if result['metrics'] or grid_images:
    _write_outputs(result, grid_images,
                   eval_dir=os.path.join(workdir, EVAL_DIR),
                   tag='module' if nets.step is None else f'step{nets.step}',
                   step=nets.step or 0)
  return result
