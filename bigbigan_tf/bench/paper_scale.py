"""The paper config end to end: build, one iteration, checkpoint, export, load.

  python -m bigbigan_tf.bench.paper_scale [--batch_size=2] [--workdir=DIR]

Builds `configs/imagenet128.py` at full width (G and F at ch 96, ResNet-v2-50
E at 256, H and J 8 x 2048), runs one training iteration (`disc_iters` D steps
and one E/G step) at a tiny batch on the offline digits (upsampled to 256; no
download), writes a checkpoint, exports the module with `export_lib` and loads
it with `hub.load`. Prints one JSON line: build, first-iteration (trace
included), checkpoint, export and load times, peak RSS and parameter counts.
Too heavy for the test suite; figures go into docs/performance.md.
"""

import json
import os
import resource
import sys
import tempfile
import time

from absl import app
from absl import flags


def run(*, batch_size: int, workdir: str, precision: str) -> dict:
  """Runs the paper config once through; returns the figures."""
  # pylint: disable=g-import-not-at-top
  import keras
  import tensorflow as tf
  import tensorflow_hub as hub
  from bigbigan_tf import checkpoints
  from bigbigan_tf import config_lib
  from bigbigan_tf import data as data_lib
  from bigbigan_tf import export_lib
  from bigbigan_tf import hardware
  from bigbigan_tf import trainer as trainer_lib
  from bigbigan_tf.configs import imagenet128
  # pylint: enable=g-import-not-at-top

  config = imagenet128.get_config()
  with config.unlocked():
    config.batch_size = batch_size
    config.num_train_steps = 1
    config.data.name = 'mnist'  # offline: 5,000 real digits, upsampled
    config.data.shuffle_buffer = 64
    config.train.steps_per_loop = 1
    config.train.precision = precision
  config_lib.validate(config)
  config = hardware.resolve(config).config
  keras.config.set_dtype_policy(config.train.precision)
  figures = {'batch_size': batch_size,
             'precision': config.train.precision}

  t0 = time.perf_counter()
  state = checkpoints.TrainState(config)
  trainer = trainer_lib.Trainer(state, tf.distribute.get_strategy())
  figures['build_s'] = time.perf_counter() - t0
  figures['params'] = {
      name: int(sum(v.shape.num_elements() for v in net.trainable_weights))
      for name, net in (('generator', state.nets.generator),
                        ('encoder', state.nets.encoder),
                        ('discriminator', state.nets.discriminator))}
  figures['params']['total'] = sum(figures['params'].values())

  iterator = iter(data_lib.make_dataset(
      config.data, image_size=config.model.encoder_resolution,
      batch_size=batch_size, training=True, seed=config.seed))
  t0 = time.perf_counter()
  out = trainer.train_loop(iterator, tf.constant(1, tf.int32))
  figures['d_loss'] = float(out['d_loss'])
  figures['eg_loss'] = float(out['eg_loss'])
  figures['first_iteration_s'] = time.perf_counter() - t0

  config_lib.save(config, workdir)
  t0 = time.perf_counter()
  manager = tf.train.CheckpointManager(
      state.checkpoint(), os.path.join(workdir, checkpoints.CHECKPOINT_DIR),
      max_to_keep=1, step_counter=state.step)
  path = manager.save(checkpoint_number=int(state.step.numpy()))
  figures['checkpoint_s'] = time.perf_counter() - t0
  figures['checkpoint_mb'] = sum(
      os.path.getsize(os.path.join(os.path.dirname(path), f))
      for f in os.listdir(os.path.dirname(path))
      if f.startswith(os.path.basename(path))) / 2**20

  export_dir = os.path.join(workdir, 'export')
  t0 = time.perf_counter()
  # No standing statistics: they would read ImageNet-size batches.
  export_lib.export(workdir, export_dir, standing_stats_batches=0)
  figures['export_s'] = time.perf_counter() - t0

  t0 = time.perf_counter()
  module = hub.load(export_dir)
  z = tf.random.normal([1, config.model.z_dim])
  images = module.generate(z)
  if isinstance(images, dict):
    images = images['default']
  figures['hub_load_s'] = time.perf_counter() - t0
  figures['signatures'] = sorted(module.signatures)
  figures['generate_shape'] = list(images.shape)
  figures['peak_rss_gb'] = resource.getrusage(
      resource.RUSAGE_SELF).ru_maxrss / 2**20
  return figures


_BATCH = flags.DEFINE_integer('batch_size', 2, 'Global batch of the one '
                              'iteration.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the checkpoint and '
                               'export go (default: a temporary directory, '
                               'removed at the end).')
_PRECISION = flags.DEFINE_enum('precision', 'float32',
                               ['float32', 'mixed_bfloat16', 'auto'],
                               'train.precision of the run.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _WORKDIR.value:
    figures = run(batch_size=_BATCH.value, workdir=_WORKDIR.value,
                  precision=_PRECISION.value)
  else:
    with tempfile.TemporaryDirectory() as workdir:
      figures = run(batch_size=_BATCH.value, workdir=workdir,
                    precision=_PRECISION.value)
  print(json.dumps(figures, sort_keys=True))
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
