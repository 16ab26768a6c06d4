"""The benchmark's FLOP counts and its command line (on the tiny config)."""

import json
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

import testing
from bigbigan_tf import models
from bigbigan_tf.bench import bench_lib as bench
from bigbigan_tf.configs import tiny


class FlopsTest(tf.test.TestCase):

  def test_forward_flops_of_conv_and_dense_match_the_formulas(self):
    conv = keras.layers.Conv2D(8, 3, padding='same', use_bias=False)
    flops = bench.forward_flops(conv, tf.TensorSpec([2, 16, 16, 4]))
    self.assertEqual(flops, 2 * (2 * 16 * 16) * (3 * 3 * 4) * 8)
    dense = keras.layers.Dense(5, use_bias=False)
    self.assertEqual(bench.forward_flops(dense, tf.TensorSpec([3, 7])),
                     2 * 3 * 7 * 5)

  def test_iteration_flops_composition(self):
    config = tiny.get_config()
    nets = models.build_networks(config.model)
    parts = bench.iteration_flops(config, nets)
    f_e, f_g = parts['encoder_forward'], parts['generator_forward']
    f_d = parts['discriminator_forward_2b']
    for value in (f_e, f_g, f_d):
      self.assertGreater(value, 0)
    # D's forward on 2B pairs is twice its forward on B.
    b, m = config.batch_size, config.model
    f_d_b = bench.forward_flops(
        lambda x, z: nets.discriminator(x, z, training=True)['score_xz'],
        tf.TensorSpec([b, m.resolution, m.resolution, 3]),
        tf.TensorSpec([b, m.z_dim]))
    self.assertAllClose(f_d, 2 * f_d_b, rtol=0.02)
    d_iters = config.optim.disc_iters
    self.assertTrue(config.optim.eg_reuses_d_forward)
    self.assertAllClose(
        parts['iteration'],
        d_iters * (f_e + f_g + 3 * f_d) + 2 * f_e + 2 * f_g + 2 * f_d)
    with config.unlocked():
      config.optim.eg_reuses_d_forward = False
    self.assertAllClose(
        bench.iteration_flops(config, nets)['iteration'],
        d_iters * (f_e + f_g + 3 * f_d) + 3 * f_e + 3 * f_g + 2 * f_d)


class PresetTest(tf.test.TestCase):

  def test_biggan_presets_are_float32_with_one_d_step(self):
    from bigbigan_tf.configs import mnist  # pylint: disable=g-import-not-at-top
    default = mnist.get_config()
    for name, res, batch in (('biggan32', 32, 16), ('biggan128', 128, 8)):
      config = bench.preset_config(name)
      self.assertEqual(config.train.precision, 'float32')
      self.assertEqual(config.optim.disc_iters, 1)
      self.assertEqual(config.model.resolution, res)
      self.assertEqual(config.batch_size, batch)
      self.assertEqual(config.model.generator.ch, 32)
      self.assertEqual(config.model.discriminator.ch, 32)
      # BigGAN's widths per block, whatever the offline default narrows.
      self.assertEqual(config.model.discriminator.channel_multipliers, ())
      self.assertEqual(config.model.generator.channel_multipliers, ())
      # H and J as the presets' figures were measured, not the default's.
      self.assertEqual(config.model.discriminator.h_width, 256)
      self.assertEqual(config.model.discriminator.j_width, 256)
    biggan32_encoder = bench.preset_config('biggan32').model.encoder.to_dict()
    self.assertFalse(biggan32_encoder.pop('stochastic'))
    default_encoder = default.model.encoder.to_dict()
    default_encoder.pop('stochastic')
    self.assertEqual(biggan32_encoder, default_encoder)
    self.assertEqual(bench.encoder_name(bench.preset_config('biggan128')),
                     'ResNet-v2-50 x0.25 on 256px')
    self.assertEqual(bench.preset_config('default').to_dict(),
                     default.to_dict())


class CompareTest(tf.test.TestCase):

  def test_overrides_are_typed_like_their_fields(self):
    config = tiny.get_config()
    variant = bench.with_overrides(
        config, 'optim.eg_reuses_d_forward=false; model.fused_resampling_min_size'
        '=16;model.encoder.blocks_per_stage=(1, 2);optim.d_lr=1e-3')
    self.assertIs(variant.optim.eg_reuses_d_forward, False)
    self.assertEqual(variant.model.fused_resampling_min_size, 16)
    self.assertEqual(tuple(variant.model.encoder.blocks_per_stage), (1, 2))
    self.assertEqual(variant.optim.d_lr, 1e-3)
    self.assertTrue(config.optim.eg_reuses_d_forward)  # the original is kept
    for bad, message in (('model.nope=1', "'model.nope' is not a config"),
                         ('optim.eg_reuses_d_forward=maybe', 'not a valid value'),
                         ('optim.d_lr=fast', 'not a valid value'),
                         ('model', 'is not key=value')):
      with self.assertRaisesRegex(ValueError, message):
        bench.with_overrides(config, bad)

  def test_times_the_config_and_a_variant_alternately(self):
    config = tiny.get_config()
    variant = 'model.fused_resampling=False'
    result = bench.compare(
        config, [(variant, bench.with_overrides(config, variant))],
        rounds=3, steps_per_call=1, warmup=1)
    rows = result['compare']
    self.assertEqual([r['overrides'] for r in rows], ['(config)', variant])
    self.assertEqual(rows[0]['ratio_to_base_median'], 1.0)
    for row in rows:
      self.assertLen(row['iteration_s_all'], 3)
      self.assertGreater(row['iteration_s_median'], 0)
      self.assertGreater(row['ratio_to_base_median'], 0)


@pytest.mark.slow  # runs `python -m bigbigan_tf.bench` in subprocesses
class BenchCommandTest(tf.test.TestCase):

  def test_prints_one_json_object_with_the_figures(self):
    out = subprocess.run(
        [sys.executable, '-m', 'bigbigan_tf.bench',
         '--config=' + os.path.join(testing.REPO, 'bigbigan_tf', 'configs',
                                    'tiny.py'),
         # A 1024 matmul (2 GFLOP) times this machine's rate reliably; a
         # 256 one is mostly call overhead, which inflated MFU past 2.
         '--repeats=2', '--warmup=1', '--steps_per_call=1',
         '--matmul_size=1024'],
        cwd=testing.REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    self.assertLen(result['iteration_s_all'], 2)
    self.assertGreater(result['iteration_s_median'], 0)
    self.assertGreater(result['images_per_second'], 0)
    self.assertGreater(result['input_pipeline_images_per_second'], 0)
    self.assertGreater(result['peak_rss_mb'], 100)
    self.assertGreater(result['iteration_gflop'], 0)
    self.assertGreater(result['mfu'], 0)
    self.assertLess(result['mfu'], 1.5)
    self.assertIn('ResNet-v2', result['encoder'])

  def test_no_config_and_no_preset_is_an_error(self):
    out = subprocess.run([sys.executable, '-m', 'bigbigan_tf.bench'],
                         cwd=testing.REPO, capture_output=True, text=True,
                         timeout=120)
    self.assertEqual(out.returncode, 2)
    self.assertIn('--preset', out.stderr)

  def test_bad_compare_override_is_an_error(self):
    out = subprocess.run([sys.executable, '-m', 'bigbigan_tf.bench',
                          '--preset=biggan32', '--compare=model.fused=1'],
                         cwd=testing.REPO, capture_output=True, text=True,
                         timeout=120)
    self.assertEqual(out.returncode, 2, out.stderr[-2000:])
    self.assertIn("'model.fused' is not a config field", out.stderr)


if __name__ == '__main__':
  tf.test.main()
