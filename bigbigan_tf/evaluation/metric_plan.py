"""Which metrics an evaluation computes, and which cannot run here.

The planning half of `evaluate_lib.evaluate`, before any network is loaded:
metric names and defaults (`default_metrics`, `check_metrics`), the metrics
that cannot be computed on this run or machine (`unavailable`: Inception not
loadable offline, digit metrics on other data, the probe on a folder without
class subfolders) and the consumers the remaining ones need (`Plan`). The
watcher uses `unavailable` to drop, once and in one log line, what it could
never compute.
"""

from typing import Dict, List, Optional, Sequence

import ml_collections
import tensorflow as tf

from bigbigan_tf import data as data_lib
from bigbigan_tf import defaults
from bigbigan_tf.evaluation import metrics as metrics_lib

GENERATIVE_METRICS = defaults.GENERATIVE_METRICS
DIGIT_METRICS = defaults.DIGIT_METRICS
METRICS = defaults.METRICS
# Datasets of the ten digits 0-9 whose labels are the digits, on which the
# digit classifier applies: the offline MNIST and TFDS datasets.
DIGIT_TFDS_DATASETS = ('mnist', 'svhn_cropped', 'emnist/digits')

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


def unavailable(metrics: Sequence[str], config, *, inception: str,
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
  if 'linear_probe' in metrics:
    why = _no_labels(config)
    if why:
      errors['linear_probe'] = why
  if not is_digit_data(config):
    for name in DIGIT_METRICS:
      if name in metrics:
        errors[name] = (
            f'{name} applies to digit data (data.name=mnist or tfds:'
            f'{"/".join(DIGIT_TFDS_DATASETS)}); this run has data.name='
            f'{config.data.name!r}. Use is/fid/kid with Inception instead.')
  return classify, source, errors


def _no_labels(config) -> Optional[str]:
  """Why the probe has no labels on this data, or None.

  A folder is labelled by its class subfolders (bigbigan_tf/data/folder.py):
  fewer than two, and every image has the same label (or none). Only the
  top level is listed, so this stays cheap on a large folder; TFDS datasets
  are trusted.
  """
  kind, root = data_lib.parse_data_name(config.data.name)
  if kind != 'folder':
    return None
  try:
    entries = tf.io.gfile.listdir(root)
  except tf.errors.OpError:
    return None  # the data's own error comes when it is read
  classes = [e for e in entries if not e.startswith('.') and (
      e.endswith('/') or tf.io.gfile.isdir(f'{root.rstrip("/")}/{e}'))]
  if len(classes) >= 2:
    return None
  return (f'linear_probe needs class labels: {root} has '
          f'{len(classes)} class subfolder(s), at least 2 are needed (one '
          'subfolder per class).')


class Plan:
  """Which consumers the evaluation feeds, from the metrics still to do."""

  def __init__(self, *, generative, digit_names, prdc_space, probe, grids):
    self.generative = generative
    self.digit_names = digit_names
    # prdc's feature space: 'inception', 'digit' or None (not requested).
    self.prdc_space = prdc_space
    self.probe = probe
    self.grids = grids

  @classmethod
  def of(cls, todo: Sequence[str], inception_fn) -> 'Plan':
    prdc_space = None
    if 'prdc' in todo:
      prdc_space = 'inception' if inception_fn is not None else 'digit'
    return cls(generative=[m for m in todo if m in GENERATIVE_METRICS],
               digit_names=[m for m in todo if m in DIGIT_METRICS],
               prdc_space=prdc_space, probe='linear_probe' in todo,
               grids='grids' in todo)

  @property
  def digit_wanted(self) -> bool:
    return bool(self.digit_names) or self.prdc_space == 'digit'

  def drop_digit(self, errors: Dict[str, str], message: str) -> None:
    """No digit classifier: its metrics go to `errors`."""
    errors.update({name: message for name in self.digit_names})
    if self.prdc_space == 'digit':
      errors['prdc'], self.prdc_space = message, None
    self.digit_names = []
