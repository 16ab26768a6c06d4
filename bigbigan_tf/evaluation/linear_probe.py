"""The paper's linear-probe protocol on frozen encoder features.

BigBiGAN (Donahue & Simonyan 2019) judges the encoder by logistic
regression on its frozen features: one linear layer and a softmax
cross-entropy, trained with Adam for each learning rate in
{1e-4, 3e-4, 1e-3, 3e-3, 1e-2}, with early stopping on "train_val", 10K
images held out of the training split. The learning rate and epoch with the
best train_val top-1 accuracy are selected, and that model's top-1 / top-5
accuracy on the evaluation split (ImageNet validation) is reported.
"""

from typing import Dict, Sequence, Tuple, Union

from absl import logging
import numpy as np
import tensorflow as tf

PAPER_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)

# With an integer train_val_size, at most this fraction of the training
# features is held out, so the paper's 10K default (under 1% of ImageNet)
# still leaves most of a small dataset for fitting.
_MAX_TRAIN_VAL_FRACTION = 0.2

# Adam's moment decays and epsilon (Keras defaults; the paper gives none).
_ADAM_BETA_1 = 0.9
_ADAM_BETA_2 = 0.999
_ADAM_EPSILON = 1e-7

# Features whose training standard deviation is below this are left
# unscaled (only centred): they carry no signal and would blow up.
_MIN_STD = 1e-6


class _SoftmaxRegressions(tf.Module):
  """One logistic regression per learning rate, trained side by side.

  Regression l has logits x W[:, l, :] + b[l] and is updated by Adam with
  learning_rates[l]. Their losses are summed, so each one's gradient is that
  of its own mean cross-entropy; training them on the same minibatches reads
  the features once per step for the whole sweep (the step is bound by
  memory bandwidth, not arithmetic).
  """

  def __init__(self, dim: int, num_classes: int,
               learning_rates: Sequence[float]):
    super().__init__()
    num_rates = len(learning_rates)
    # Zero init: the problem is convex, and it makes runs independent of any
    # random initialisation.
    self.w = tf.Variable(tf.zeros([dim, num_rates, num_classes]))
    self.b = tf.Variable(tf.zeros([num_rates, num_classes]))
    zeros = lambda v: tf.Variable(tf.zeros_like(v), trainable=False)
    self._m = [zeros(self.w), zeros(self.b)]
    self._v = [zeros(self.w), zeros(self.b)]
    self._step = tf.Variable(0.0, trainable=False)
    rates = tf.constant(learning_rates, tf.float32)
    # Broadcast each regression's learning rate over its own slice.
    self._rates = [rates[None, :, None], rates[:, None]]

  def logits(self, x: tf.Tensor) -> tf.Tensor:
    """[N, D] -> [N, L, C] logits of the L regressions."""
    return tf.einsum('nd,dlc->nlc', x, self.w) + self.b

  def _losses(self, x: tf.Tensor, y: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Returns the logits [N, L, C] and the cross-entropies [N, L]."""
    logits = self.logits(x)
    labels = tf.repeat(y[:, None], tf.shape(logits)[1], axis=1)
    return logits, tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits)

  @tf.function
  def train_epoch(self, x: tf.Tensor, y: tf.Tensor, order: tf.Tensor,
                  batch_size: int):
    """One pass over x[order] in minibatches (the last one may be smaller)."""
    for start in tf.range(0, tf.shape(order)[0], batch_size):
      index = order[start:start + batch_size]
      with tf.GradientTape() as tape:
        _, losses = self._losses(tf.gather(x, index), tf.gather(y, index))
        loss = tf.reduce_sum(tf.reduce_mean(losses, axis=0))
      grads = tape.gradient(loss, [self.w, self.b])
      self._adam_update(grads)

  def _adam_update(self, grads):
    # Hand-written Adam, because each slice of the variables has its own
    # learning rate.
    self._step.assign_add(1.0)
    correction = (tf.sqrt(1.0 - _ADAM_BETA_2**self._step) /
                  (1.0 - _ADAM_BETA_1**self._step))
    for param, grad, m, v, rate in zip((self.w, self.b), grads, self._m,
                                       self._v, self._rates):
      m.assign(_ADAM_BETA_1 * m + (1.0 - _ADAM_BETA_1) * grad)
      v.assign(_ADAM_BETA_2 * v + (1.0 - _ADAM_BETA_2) * tf.square(grad))
      param.assign_sub(rate * correction * m / (tf.sqrt(v) + _ADAM_EPSILON))

  @tf.function
  def evaluate(self, x: tf.Tensor, y: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Returns top-1 accuracies [L] and mean cross-entropies [L]."""
    logits, losses = self._losses(x, y)
    correct = tf.equal(tf.argmax(logits, axis=2, output_type=y.dtype),
                       y[:, None])
    return (tf.reduce_mean(tf.cast(correct, tf.float32), axis=0),
            tf.reduce_mean(losses, axis=0))


def _num_train_val(num_train: int, train_val_size: Union[int, float]) -> int:
  """Number of training examples held out as train_val (see linear_probe)."""
  if isinstance(train_val_size, float):
    if not 0.0 < train_val_size < 1.0:
      raise ValueError(
          f'A float train_val_size is a fraction in (0, 1); got '
          f'{train_val_size}. Pass an int for a number of examples.')
    return int(min(max(round(train_val_size * num_train), 1), num_train - 1))
  if train_val_size < 1:
    raise ValueError(f'train_val_size must be >= 1; got {train_val_size}.')
  cap = max(1, int(_MAX_TRAIN_VAL_FRACTION * num_train))
  if train_val_size > cap:
    logging.warning(
        'linear_probe: train_val_size=%d is more than %.0f%% of the %d '
        'training examples; holding out %d instead.', train_val_size,
        100 * _MAX_TRAIN_VAL_FRACTION, num_train, cap)
  return int(min(train_val_size, cap))


def _check_split(features: np.ndarray, labels: np.ndarray, name: str,
                 num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
  features = np.asarray(features, dtype=np.float32)
  labels = np.asarray(labels)
  if features.ndim != 2 or labels.shape != (features.shape[0],):
    raise ValueError(
        f'{name}_features must be [N, D] and {name}_labels [N]; got shapes '
        f'{features.shape} and {labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{name}_labels must be integers; got {labels.dtype}.')
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f'{name}_labels must lie in [0, num_classes={num_classes}); got range '
        f'[{labels.min()}, {labels.max()}].')
  return features, labels.astype(np.int32)


def _top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  top_k = np.argsort(-logits, axis=1, kind='stable')[:, :k]
  return float(np.mean(np.any(top_k == labels[:, None], axis=1)))


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray,
                 eval_features: np.ndarray, eval_labels: np.ndarray, *,
                 num_classes: int,
                 learning_rates: Sequence[float] = PAPER_LEARNING_RATES,
                 train_val_size: Union[int, float] = 10000, epochs: int = 100,
                 batch_size: int = 256, patience: int = 10,
                 seed: int = 0) -> Dict[str, object]:
  """Logistic regression on frozen features, as in the BigBiGAN paper.

  The training features are split at random (seeded) into a fitting part and
  a held-out "train_val" part. Features are standardised with the mean and
  standard deviation of the fitting part (train statistics only, applied to
  all three parts), so one learning-rate grid suits features of any scale.
  For each learning rate a zero-initialised linear layer is trained with Adam
  on the fitting part (all learning rates side by side on the same
  minibatches, which is the same as training them one after the other);
  after every epoch its train_val top-1 accuracy is measured and the best
  epoch's weights kept, stopping once `patience` epochs pass without a top-1
  improvement. The (learning rate, epoch) with the best train_val
  top-1 (ties: lower train_val cross-entropy, then the earlier candidate) is
  evaluated on the eval features; there is no retraining on the full train
  split.

  Deterministic given `seed` (split and minibatch order) on a given machine.

  Args:
    train_features: float [N, D] features of the training split, N >= 2.
    train_labels: int [N] labels in [0, num_classes).
    eval_features: float [M, D] features of the evaluation split.
    eval_labels: int [M] labels in [0, num_classes).
    num_classes: number of classes C, >= 2.
    learning_rates: Adam learning rates to sweep (the paper's by default).
    train_val_size: held-out train_val examples: an int count (paper: 10000),
      clamped to at most 20% of N so small datasets keep 80% for fitting; or
      a float fraction in (0, 1) of N, used as given (at least 1 example, and
      at least 1 left for fitting).
    epochs: maximum epochs per learning rate, >= 1.
    batch_size: minibatch size, >= 1.
    patience: epochs without a train_val top-1 improvement before stopping.
    seed: seed of the train_val split and of the minibatch order.

  Returns:
    A dict:
      'top1', 'top5': accuracies in [0, 1] on the eval features of the
        selected model ('top5' is top-k with k = min(5, C));
      'top5_k': that k;
      'learning_rate', 'epoch': the selected learning rate and (1-based)
        epoch;
      'train_val_top1': the selected model's train_val top-1;
      'sweep': one dict per learning rate, in the order given, with
        'learning_rate', 'train_val_top1', 'train_val_loss' (of its best
        epoch), 'best_epoch' and 'epochs_run';
      'num_train', 'num_train_val', 'num_eval': examples used for fitting,
        for train_val and for evaluation.

  Raises:
    ValueError: on inconsistent shapes, labels out of range, N < 2, an empty
      learning-rate list or non-positive epochs / batch_size / patience.
  """
  if num_classes < 2:
    raise ValueError(f'num_classes must be >= 2; got {num_classes}.')
  train_x, train_y = _check_split(train_features, train_labels, 'train',
                                  num_classes)
  eval_x, eval_y = _check_split(eval_features, eval_labels, 'eval',
                                num_classes)
  if train_x.shape[1] != eval_x.shape[1]:
    raise ValueError(
        f'train and eval features differ in dimension: {train_x.shape[1]} vs '
        f'{eval_x.shape[1]}.')
  if len(train_x) < 2 or not len(eval_x):
    raise ValueError(f'Need >= 2 training and >= 1 eval examples; got '
                     f'{len(train_x)} and {len(eval_x)}.')
  if not learning_rates or min(epochs, batch_size, patience) < 1:
    raise ValueError(
        f'Need a non-empty learning_rates and epochs, batch_size, patience >= '
        f'1; got learning_rates={learning_rates}, epochs={epochs}, '
        f'batch_size={batch_size}, patience={patience}.')

  rng = np.random.default_rng(seed)
  order = rng.permutation(len(train_x))
  num_train_val = _num_train_val(len(train_x), train_val_size)
  val_index, fit_index = order[:num_train_val], order[num_train_val:]

  mean = train_x[fit_index].mean(axis=0, dtype=np.float64)
  std = train_x[fit_index].std(axis=0, dtype=np.float64)
  std[std < _MIN_STD] = 1.0
  standardise = lambda x: tf.constant(((x - mean) / std).astype(np.float32))
  fit_x = standardise(train_x[fit_index])
  val_x = standardise(train_x[val_index])
  fit_y = tf.constant(train_y[fit_index])
  val_y = tf.constant(train_y[val_index])

  model = _SoftmaxRegressions(train_x.shape[1], num_classes, learning_rates)
  num_rates = len(learning_rates)
  # Per learning rate: best (top-1, -loss) so far, its weights and epoch, the
  # epochs since top-1 last improved, and the epoch it stopped at (0 while
  # still running; stopped regressions keep training with the others, but
  # their kept weights no longer change).
  best_key = [(-1.0, -np.inf)] * num_rates
  best_weights = [None] * num_rates
  best_epoch = [0] * num_rates
  since_improved = [0] * num_rates
  stopped_at = [0] * num_rates
  for epoch in range(1, epochs + 1):
    model.train_epoch(fit_x, fit_y,
                      tf.constant(rng.permutation(len(fit_index))), batch_size)
    top1, loss = (v.numpy() for v in model.evaluate(val_x, val_y))
    w, b = model.w.numpy(), model.b.numpy()
    for l in range(num_rates):
      if stopped_at[l]:
        continue
      since_improved[l] = (0 if top1[l] > best_key[l][0] else
                           since_improved[l] + 1)
      key = (float(top1[l]), -float(loss[l]))
      if key > best_key[l]:
        best_key[l], best_epoch[l] = key, epoch
        best_weights[l] = (w[:, l, :].copy(), b[l].copy())
      if since_improved[l] >= patience or epoch == epochs:
        stopped_at[l] = epoch
    if all(stopped_at):
      break

  sweep = []
  for l, learning_rate in enumerate(learning_rates):
    sweep.append({'learning_rate': float(learning_rate),
                  'train_val_top1': best_key[l][0],
                  'train_val_loss': -best_key[l][1],
                  'best_epoch': best_epoch[l],
                  'epochs_run': stopped_at[l]})
    logging.info('linear_probe: lr=%g train_val top-1 %.4f (epoch %d of %d).',
                 learning_rate, best_key[l][0], best_epoch[l],
                 sweep[-1]['epochs_run'])
  # max() keeps the first of equal keys, i.e. the earlier learning rate.
  selected = max(range(num_rates), key=lambda l: best_key[l])
  w, b = best_weights[selected]
  entry = sweep[selected]
  eval_logits = ((eval_x - mean) / std).astype(np.float32) @ w + b
  k = min(5, num_classes)
  return {
      'top1': _top_k_accuracy(eval_logits, eval_y, 1),
      'top5': _top_k_accuracy(eval_logits, eval_y, k),
      'top5_k': k,
      'learning_rate': entry['learning_rate'],
      'epoch': entry['best_epoch'],
      'train_val_top1': entry['train_val_top1'],
      'sweep': sweep,
      'num_train': len(fit_index),
      'num_train_val': num_train_val,
      'num_eval': len(eval_x),
  }


def quick_probe_errors(train_features, train_labels, eval_features,
                       eval_labels):
  """Top-1 error of a quick probe, per feature name (eval/quick_probe.py).

  L2-regularised logistic regression (scikit-learn, C=1) on features
  standardised with the train statistics, fit on all training features.
  Not the paper's protocol (`linear_probe`); fast enough to follow a run.

  Args:
    train_features, eval_features: {name: float [N, D]}.
    train_labels, eval_labels: int [N].
  """
  # pylint: disable=g-import-not-at-top
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler
  # pylint: enable=g-import-not-at-top
  errors = {}
  for name in train_features:
    scaler = StandardScaler().fit(train_features[name])
    clf = LogisticRegression(max_iter=500, C=1.0).fit(
        scaler.transform(train_features[name]), train_labels)
    predicted = clf.predict(scaler.transform(eval_features[name]))
    errors[name] = float(np.mean(predicted != eval_labels))
  return errors
