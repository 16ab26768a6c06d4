"""Image operations on network inputs, shared by training and evaluation."""

import tensorflow as tf


def downsample_to(images: tf.Tensor, resolution: int) -> tf.Tensor:
  """Average-pools [B, R_E, R_E, 3] images to [B, R, R, 3] (R_E = k * R)."""
  factor = images.shape[1] // resolution
  if factor == 1:
    return images
  return tf.nn.avg_pool2d(images, factor, factor, 'VALID')
