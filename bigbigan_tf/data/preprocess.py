"""Per-image preprocessing: crops, resize, any channels -> RGB in [-1, 1].

Eval takes the central square; training with data.augmentation='resnet' takes
a random resized crop and an optional horizontal flip, seeded per element.
Also checks the `data` config fields these use.
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from bigbigan_tf.data.common import DataError

AUGMENTATIONS = ('resnet', 'none')

# Random resized crop aspect ratios (width / height), as in ResNet training.
_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)


def _to_unit_rgb(image: tf.Tensor) -> tf.Tensor:
  """Any-channel float image in [0, 1] -> RGB; alpha is composited on white."""
  channels = image.shape[-1]
  if channels is None:
    raise DataError(f'Images with an unknown channel count are not supported '
                    f'(shape {image.shape}).')
  if channels in (2, 4):
    alpha = image[..., -1:]
    image = image[..., :-1] * alpha + (1.0 - alpha)
  if image.shape[-1] == 1:
    image = tf.tile(image, [1, 1, 3])
  return image


def _finish(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """A cropped image of any dtype -> float32 [S, S, 3] in [-1, 1]."""
  dtype = image.dtype
  # Antialiasing makes downsizing average over the source pixels (area-like)
  # instead of aliasing; bilinear has no overshoot, so ranges are preserved.
  image = tf.image.resize(image, [image_size, image_size], method='bilinear',
                          antialias=True)
  if dtype.is_integer:
    image = image / float(dtype.max)
  image = _to_unit_rgb(tf.clip_by_value(image, 0.0, 1.0))
  image = image * 2.0 - 1.0
  image.set_shape([image_size, image_size, 3])
  return image


def _central_square(image: tf.Tensor) -> tf.Tensor:
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  side = tf.minimum(height, width)
  return tf.image.crop_to_bounding_box(image, (height - side) // 2,
                                       (width - side) // 2, side, side)


def _random_resized_crop(image: tf.Tensor, seed: tf.Tensor, *,
                         min_area: float) -> tf.Tensor:
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
      seed=seed,
      min_object_covered=0.0,
      aspect_ratio_range=_ASPECT_RATIO_RANGE,
      area_range=(min_area, 1.0),
      max_attempts=10,
      # When no box fits after max_attempts, the whole image is used.
      use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, size)
  crop.set_shape([None, None, image.shape[-1]])
  return crop


def make_preprocess(data_config: Any, *, image_size: int, augment: bool
                    ) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """Returns fn(image [H, W, C], seed [2]) -> float32 [S, S, 3] in [-1, 1]."""
  if not augment:
    return lambda image, seed: _finish(_central_square(image), image_size)
  min_area = float(data_config.crop_min_area)
  random_flip = bool(data_config.random_flip)

  def preprocess(image, seed):
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    image = _random_resized_crop(image, crop_seed, min_area=min_area)
    image = _finish(image, image_size)
    if random_flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image

  return preprocess


def check_data_config(data_config: Any) -> None:
  if data_config.augmentation not in AUGMENTATIONS:
    raise DataError(f'Unknown data.augmentation {data_config.augmentation!r}; '
                    f'use one of {", ".join(AUGMENTATIONS)}.')
  if not 0.0 < data_config.crop_min_area <= 1.0:
    raise DataError(f'data.crop_min_area={data_config.crop_min_area} must be '
                    'in (0, 1]: the smallest fraction of the image area a '
                    'random crop keeps.')
  if data_config.shuffle_buffer < 1:
    raise DataError(f'data.shuffle_buffer={data_config.shuffle_buffer} must '
                    'be >= 1.')
