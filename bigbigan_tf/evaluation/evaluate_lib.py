"""Evaluates a BigBiGAN run: IS / FID / KID, linear probe, digit metrics, grids.

`evaluate(workdir, metrics=[...])` takes G and E from the workdir's latest
checkpoint (the EMA networks) or from an exported module, the real images
from the run's config, computes the requested metrics and writes

  W/eval/results_step{STEP}_{FP}.json
                                   every setting and metric; FP keys the
                                   settings the figures depend on
                                   (`settings.py`), so evaluations with other
                                   settings never overwrite each other
  W/eval/results_latest.json       a copy of the newest step's results
  W/eval/events.*                  the same scalars, and the grids, for
                                   TensorBoard
  W/eval/samples_step{STEP}_{FP}.png
                                   G(z) for fixed z
  W/eval/reconstructions_step{STEP}_{FP}.png
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

`evaluate` plans which consumers the requested metrics need
(`metric_plan.py`, which also finds the metrics that cannot run), then makes at
most three passes (`passes.py`: the training split, the eval split, G's
samples) and hands their activations to the result writers (`results.py`).

Failure policy: a metric that cannot be computed here (Inception weights not
reachable offline, no labels for the probe, digit metrics on non-digit data)
does not stop the others. Its message goes under the result's "errors" key
(the metric is missing from "metrics"); the command line then exits with
status 2. Usage errors (unknown metric, no workdir or checkpoint, bad module
path) raise before any work.
"""

import datetime
import os
from typing import Any, Callable, Dict, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import defaults
from bigbigan_tf.evaluation import digit_classifier as digit_lib
from bigbigan_tf.evaluation import features as features_lib
from bigbigan_tf.evaluation import linear_probe as probe_lib
from bigbigan_tf.evaluation import metric_plan
from bigbigan_tf.evaluation import metrics as metrics_lib
from bigbigan_tf.evaluation import passes
from bigbigan_tf.evaluation import results as results_lib
from bigbigan_tf.evaluation import settings as settings_lib

GENERATIVE_METRICS = metric_plan.GENERATIVE_METRICS
DIGIT_METRICS = metric_plan.DIGIT_METRICS
METRICS = metric_plan.METRICS
DIGIT_TFDS_DATASETS = metric_plan.DIGIT_TFDS_DATASETS
EVAL_DIR = 'eval'
DIGIT_CLASSIFIER_FILE = 'digit_classifier.keras'
# Grid side when the config has none (e.g. an official module's run).
_DEFAULT_GRID_SIZE = 8

ClassifierFn = metrics_lib.ClassifierFn
EvaluationError = metric_plan.EvaluationError
MetricUnavailableError = metric_plan.MetricUnavailableError
is_digit_data = metric_plan.is_digit_data
default_metrics = metric_plan.default_metrics
check_metrics = metric_plan.check_metrics


def probe_labels(labels: np.ndarray, split: str) -> np.ndarray:
  """Indices of labelled examples; raises if the probe cannot run."""
  keep = np.flatnonzero(labels >= 0)
  if not len(keep):
    raise MetricUnavailableError(
        f'linear_probe needs class labels, but the {split!r} split has none '
        '(label -1): use a labelled dataset (a TFDS dataset with labels, or '
        'a folder with one subfolder per class).')
  return keep


def _linear_probe(train: passes.Collector, probe: passes.Collector, *, config,
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


def _digit_classifier(workdir: str, train: Optional[passes.Collector],
                      cached: Optional[digit_lib.DigitClassifier], *,
                      epochs: int, seed: int
                      ) -> tuple[digit_lib.DigitClassifier, Dict[str, Any]]:
  """The cached digit classifier of the workdir, trained if missing or
  unreadable (`train`: the training pass, with its small images)."""
  path = os.path.join(workdir, EVAL_DIR, DIGIT_CLASSIFIER_FILE)
  if cached is not None:
    return cached, {'path': path, 'trained_now': False}
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


def _cached_digit_classifier(path: str
                             ) -> Optional[digit_lib.DigitClassifier]:
  """The cached classifier, or None when missing or unreadable (a damaged
  file is logged and retrained, never trusted)."""
  if not tf.io.gfile.exists(path):
    return None
  try:
    classifier = digit_lib.DigitClassifier.load(path)
  except Exception as e:  # pylint: disable=broad-except
    # Keras raises many kinds on a truncated or foreign file.
    logging.warning('The cached digit classifier %s cannot be read (%s: %s); '
                    'training it again.', path, type(e).__name__,
                    str(e).split('\n')[0][:200])
    return None
  logging.info('Using the cached digit classifier %s.', path)
  return classifier


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


def _new_result(workdir: str, module: Optional[str], config,
                errors: Dict[str, str],
                settings: Dict[str, Any]) -> Dict[str, Any]:
  """The result dict before any network is loaded."""
  settings = dict(settings, data={'name': config.data.name,
                                  'split': config.data.split,
                                  'eval_split': config.data.eval_split})
  return {'step': None, 'source': None, 'checkpoint': None, 'module': module,
          'workdir': workdir, 'settings': settings, 'metrics': {},
          'details': {}, 'notes': {}, 'grids': {}, 'errors': errors,
          'results_file': None}


def _record_networks(result: Dict[str, Any], nets,
                     standing_stats_batches: int,
                     reported_checkpoint: Optional[str] = None) -> None:
  """Step, source, shapes and a note on the networks, into the result."""
  result.update(step=nets.step, source=nets.source,
                checkpoint=((reported_checkpoint or nets.path)
                            if nets.source == 'checkpoint' else None),
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


def _shortfall(real, config, num_samples: int) -> str:
  """A note when the eval split has fewer images than num_samples."""
  if real['split_size'] is not None and real['split_size'] < num_samples:
    return (f'; the eval split {config.data.eval_split!r} has only '
            f'{real["split_size"]} images, fewer than num_samples='
            f'{num_samples}')
  return ''


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
             standing_stats_batches: int = defaults.STANDING_STATS_BATCHES,
             reported_checkpoint: Optional[str] = None,
             before_write: Optional[Callable[[], None]] = None
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
    reported_checkpoint: the checkpoint path the results name, when
      `checkpoint` is a held copy of it (the watcher evaluates a snapshot
      that the trainer's deletions cannot reach).
    before_write: called before any output is written (the watcher's lease
      check: a watcher that lost W/eval writes nothing).

  Returns:
    The dict written to results_step{STEP}_{FP}.json: 'step', 'source',
    'checkpoint', 'module', 'workdir', 'settings', 'comparable' (the
    settings the figures depend on) and its 'fingerprint' FP, 'metrics'
    (flat name -> float), 'details', 'notes', 'grids' (name -> PNG path),
    'errors' (metric -> message, for metrics that could not be computed)
    and 'results_file'. When no requested metric can be computed nothing is
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
  inception_fn, inception_source, errors = metric_plan.unavailable(
      metrics, config, inception=inception, classifier_fn=classifier_fn)
  result = _new_result(
      workdir, module, config, errors,
      settings={'metrics': metrics, 'num_samples': num_samples,
                'batch_size': batch_size, 'feature': feature, 'seed': seed,
                'inception': inception_source, 'probe_epochs': probe_epochs,
                'standing_stats_batches': (None if module is not None
                                           else standing_stats_batches)})
  todo = [m for m in metrics if m not in errors]
  result['comparable'] = settings_lib.comparable(
      config, metrics=todo,
      inception_source=inception_source_of(todo, inception_fn,
                                           inception_source),
      num_samples=num_samples, feature=feature, seed=seed,
      probe_epochs=probe_epochs,
      digit_classifier_epochs=digit_classifier_epochs, prdc_k=prdc_k,
      standing_stats_batches=(None if module is not None
                              else standing_stats_batches))
  result['fingerprint'] = settings_lib.fingerprint(result['comparable'])
  if not todo:
    return result

  if module is not None:
    nets = features_lib.load_from_module(module, config=config)
  else:
    config, nets = features_lib.load_from_workdir(
        workdir, checkpoint=checkpoint,
        standing_stats_batches=standing_stats_batches)
  _record_networks(result, nets, standing_stats_batches, reported_checkpoint)
  plan = metric_plan.Plan.of(todo, inception_fn)

  # Pass 1, the training split: probe features, and images for a digit
  # classifier that is not cached yet.
  cached_digit = (_cached_digit_classifier(
      os.path.join(workdir, EVAL_DIR, DIGIT_CLASSIFIER_FILE))
                  if plan.digit_wanted else None)
  train_digit = plan.digit_wanted and cached_digit is None
  train = None
  if plan.probe or train_digit:
    train = passes.train_pass(config, nets, batch_size=batch_size,
                              feature=feature if plan.probe else None,
                              keep_small_images=train_digit)
  digit = None
  if plan.digit_wanted:
    try:
      digit, result['details']['digit_classifier'] = _digit_classifier(
          workdir, train, cached_digit, epochs=digit_classifier_epochs,
          seed=seed)
    except MetricUnavailableError as e:
      plan.drop_digit(errors, str(e))

  # Pass 2, the eval split, and pass 3, G's samples.
  cols = _grid_size(config)
  real = passes.eval_pass(
      config, nets, batch_size=batch_size, limit=num_samples,
      feature=feature if plan.probe else None,
      inception_fn=(inception_fn if {'fid', 'kid'} & set(plan.generative)
                    or plan.prdc_space == 'inception' else None),
      digit=digit if plan.digit_names or plan.prdc_space == 'digit' else None,
      recon='recon_accuracy' in plan.digit_names,
      grid_n=cols * cols if plan.grids else 0)
  fake_classifiers = {}
  if plan.generative or plan.prdc_space == 'inception':
    fake_classifiers['inception/'] = inception_fn
  if 'digit_fid' in plan.digit_names or plan.prdc_space == 'digit':
    fake_classifiers['digit/'] = digit
  fake = passes.generated_activations(nets, fake_classifiers,
                                      num_samples=num_samples,
                                      batch_size=batch_size, seed=seed)

  # The results.
  shortfall = _shortfall(real, config, num_samples)
  if plan.generative:
    results_lib.generative_results(
        result, plan.generative, real, fake, num_samples=num_samples,
        resolution=nets.resolution, injected=classifier_fn is not None,
        shortfall=shortfall)
  if plan.digit_names:
    results_lib.digit_results(result, plan.digit_names, real, fake,
                              num_samples=num_samples, shortfall=shortfall)
  if plan.prdc_space:
    results_lib.prdc_results(result, real, fake, space=plan.prdc_space,
                             k=prdc_k, num_samples=num_samples,
                             shortfall=shortfall)
  if plan.probe:
    try:
      probe = _linear_probe(train, real['probe'], config=config,
                            feature=feature, epochs=probe_epochs, seed=seed)
    except MetricUnavailableError as e:
      errors['linear_probe'] = str(e)
    else:
      results_lib.probe_results(result, probe, config=config,
                                feature=feature)
  grid_images = {}
  if plan.grids:
    grid_images = results_lib.grid_images(nets, real, cols=cols,
                                          batch_size=batch_size, seed=seed)
    result['notes']['grids'] = (
        f'samples: G(z) for the first {cols * cols} latents of seed {seed}; '
        'reconstructions: rows of eval images (average-pooled to G\'s '
        'resolution) over G(E(x).z_mean)')

  for name, message in errors.items():
    logging.warning('%s could not be computed: %s', name,
                    message.split('\n')[0])
  if result['metrics'] or grid_images:
    if before_write is not None:
      before_write()
    results_lib.write_outputs(
        result, grid_images, eval_dir=os.path.join(workdir, EVAL_DIR),
        tag=('module' if nets.step is None else f'step{nets.step}')
        + f'_{result["fingerprint"]}',
        step=nets.step or 0)
  return result


def inception_source_of(metrics: Sequence[str], inception_fn,
                        source: Optional[str]) -> Optional[str]:
  """The Inception source the figures of `metrics` depend on: `source`
  when a planned metric uses the loaded Inception, else None (prdc then
  uses the digit classifier's features)."""
  users = set(metrics) & set(GENERATIVE_METRICS + ('prdc',))
  return source if users and inception_fn is not None else None
