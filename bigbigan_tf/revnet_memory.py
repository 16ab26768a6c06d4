"""Peak memory of a RevNet E/G step with and without the reversible gradient.

    python -m bigbigan_tf.revnet_memory [--blocks=N] [--batch=B] [--res=R]

Each variant runs in a fresh subprocess (CPU has no allocator peak
statistics here): the figure is that process's peak RSS (ru_maxrss) after
building G and a deep single-resolution RevNet E and running one compiled
E/G gradient step (the encoder and generator terms of the BiGAN loss against
D's scores), minus the RSS before the step. Prints one JSON line.
"""

import argparse
import json
import resource
import subprocess
import sys


def _variant(reversible: bool, blocks: int, batch: int, res: int) -> dict:
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow as tf
  from bigbigan_tf.configs import tiny
  from bigbigan_tf.models import build_networks
  config = tiny.get_config().model
  config.encoder.kind = 'revnet'
  config.encoder.blocks_per_stage = (blocks, 1, 1, 1)
  config.encoder.width_multiplier = 0.25
  config.encoder_resolution = res
  nets = build_networks(config)
  nets.encoder.reversible_grad = reversible
  weights = nets.encoder.trainable_weights + nets.generator.trainable_weights
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(-1, 1, (batch, res, res, 3)).astype(np.float32))
  z = tf.constant(rng.standard_normal((batch, config.z_dim)).astype(
      np.float32))
  x_d = tf.image.resize(x, (config.resolution, config.resolution))

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      enc = nets.encoder(x, training=True, noise=z)
      fake = nets.generator(z, training=True)
      s_enc = nets.discriminator(x_d, enc['z_sample'], training=True)
      s_gen = nets.discriminator(fake, z, training=True)
      loss = sum(tf.reduce_mean(v) for v in s_enc.values()) - sum(
          tf.reduce_mean(v) for v in s_gen.values())
    return tape.gradient(loss, weights)

  step.get_concrete_function()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  step()
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return {'reversible_grad': reversible, 'peak_rss_mib': peak / 1024,
          'step_peak_increase_mib': (peak - before) / 1024}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--blocks', type=int, default=16,
                      help='reversible blocks in stage 1 (full resolution)')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--res', type=int, default=128)
  parser.add_argument('--variant', choices=('on', 'off'), default=None)
  args = parser.parse_args()
  if args.variant:
    print(json.dumps(_variant(args.variant == 'on', args.blocks, args.batch,
                              args.res)))
    return
  results = {'blocks_stage1': args.blocks, 'batch': args.batch,
             'encoder_resolution': args.res, 'measure': 'ru_maxrss'}
  for variant in ('off', 'on'):
    out = subprocess.run(
        [sys.executable, '-m', 'bigbigan_tf.revnet_memory',
         f'--variant={variant}', f'--blocks={args.blocks}',
         f'--batch={args.batch}', f'--res={args.res}'],
        capture_output=True, text=True, check=True)
    results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
  print(json.dumps(results))


if __name__ == '__main__':
  main()
