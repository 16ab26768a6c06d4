"""BigBiGAN's losses, as pure functions of the discriminator's scores.

Real pairs are (x, E(x)), fake pairs (G(z), z); each pair is scored by the
three heads of D: s_x (F, unary on x), s_z (H, unary on z) and s_xz (J, joint).
As the official colab codes it (Donahue & Simonyan 2019, eq. 3-5):
  D:   mean(relu(1 - s)) over real scores + mean(relu(1 + s)) over fake scores
  E,G: mean(s) over real scores - mean(s) over fake scores (no hinge)
averaged over the three heads. Means are over the global batch: pass
`global_batch_size` under a distribution strategy so per-replica losses sum
to the global mean.
"""

from typing import Mapping, Optional

import tensorflow as tf

HEADS = ('score_x', 'score_z', 'score_xz')


def _batch_mean(values: tf.Tensor, global_batch_size: Optional[int]):
  values = tf.cast(values, tf.float32)
  if global_batch_size is None:
    return tf.reduce_mean(values)
  return tf.reduce_sum(values) / tf.cast(global_batch_size, tf.float32)


def discriminator_loss(real_scores: Mapping[str, tf.Tensor],
                       fake_scores: Mapping[str, tf.Tensor], *,
                       global_batch_size: Optional[int] = None
                       ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """D's hinge loss, averaged over the heads.

  Args:
    real_scores: {'score_x', 'score_z', 'score_xz'} -> [B] on (x, E(x)).
    fake_scores: the same keys, [B], on (G(z), z).
    global_batch_size: divide sums by this instead of taking local means.

  Returns:
    (loss scalar, {'d_loss_<head>': per-head loss}).
  """
  per_head = {}
  for head in HEADS:
    per_head['d_loss_' + head] = (
        _batch_mean(tf.nn.relu(1.0 - real_scores[head]), global_batch_size)
        + _batch_mean(tf.nn.relu(1.0 + fake_scores[head]), global_batch_size))
  return tf.add_n(list(per_head.values())) / len(HEADS), per_head


def encoder_generator_loss(real_scores: Mapping[str, tf.Tensor],
                           fake_scores: Mapping[str, tf.Tensor], *,
                           global_batch_size: Optional[int] = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """E's and G's shared loss (linear, no hinge), averaged over the heads.

  E receives gradient through the real scores, G through the fake ones.

  Returns:
    (loss scalar, {'eg_loss_<head>': per-head loss}).
  """
  per_head = {}
  for head in HEADS:
    per_head['eg_loss_' + head] = (
        _batch_mean(real_scores[head], global_batch_size)
        - _batch_mean(fake_scores[head], global_batch_size))
  return tf.add_n(list(per_head.values())) / len(HEADS), per_head


def orthogonal_regularization(kernels, *, weight: float) -> tf.Tensor:
  """BigGAN's orthogonal regularisation: weight * sum ||W^T W * (1 - I)||_F^2.

  Only off-diagonal terms are penalised (Brock et al. 2018, eq. 3). Kernels are
  reshaped to [fan_in, units]; 1-d weights (biases, gains) are skipped.

  Args:
    kernels: iterable of variables/tensors.
    weight: beta; 0 returns 0.

  Returns:
    A float32 scalar.
  """
  total = tf.constant(0.0)
  if not weight:
    return total
  for w in kernels:
    if len(w.shape) < 2:
      continue
    w = tf.reshape(tf.cast(w, tf.float32), (-1, w.shape[-1]))
    gram = tf.matmul(w, w, transpose_a=True)
    off_diag = gram * (1.0 - tf.eye(w.shape[-1]))
    total += tf.reduce_sum(tf.square(off_diag))
  return weight * total
