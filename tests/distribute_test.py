"""Tests for bigbigan_tf.distribute."""

import os
import time
from unittest import mock

import pytest
import tensorflow as tf

import testing
from bigbigan_tf import distribute


class MakeStrategyTest(tf.test.TestCase):

  def test_cpu_strategy_matches_logical_devices(self):
    strategy = distribute.make_strategy(kind='cpu')
    num_cpus = len(tf.config.list_logical_devices('CPU'))
    self.assertEqual(strategy.num_replicas_in_sync, num_cpus)
    if num_cpus == 1:  # This process, unless another test split the CPU.
      self.assertIsInstance(strategy, tf.distribute.OneDeviceStrategy)
      self.assertEqual(strategy.num_replicas_in_sync, 1)

  def test_auto_without_tpu_or_gpu_is_cpu(self):
    if tf.config.list_physical_devices('GPU'):
      self.skipTest('this machine has a GPU')
    strategy = distribute.make_strategy()
    self.assertEqual(strategy.num_replicas_in_sync,
                     len(tf.config.list_logical_devices('CPU')))
    self.assertNotIsInstance(strategy, tf.distribute.TPUStrategy)

  def test_tpu_without_tpu_raises_quickly_with_readable_message(self):
    start = time.monotonic()
    with self.assertRaises(distribute.StrategyError) as ctx:
      distribute.make_strategy(kind='tpu', tpu=None)
    self.assertLess(time.monotonic() - start, 10.0)
    message = str(ctx.exception)
    self.assertIn('Could not connect to the TPU None', message)
    self.assertIn('--tpu=', message)
    self.assertNotIn('Traceback', message)
    # The TF error is kept as the cause, for whoever wants the details.
    self.assertIsInstance(ctx.exception.__cause__, ValueError)

  def test_gpu_without_gpu_raises(self):
    with mock.patch.object(tf.config, 'list_logical_devices', return_value=[]):
      with self.assertRaisesRegex(distribute.StrategyError, 'no GPU'):
        distribute.make_strategy(kind='gpu')
    if not tf.config.list_physical_devices('GPU'):
      with self.assertRaisesRegex(distribute.StrategyError, 'sees no GPU'):
        distribute.make_strategy(kind='gpu')

  def test_gpu_count_beyond_available_raises(self):
    fake_gpus = [tf.config.LogicalDevice('/device:GPU:0', 'GPU')]
    with mock.patch.object(tf.config, 'list_logical_devices',
                           return_value=fake_gpus):
      with self.assertRaisesRegex(distribute.StrategyError,
                                  'num_gpus=2 but this host has 1 GPU'):
        distribute.make_strategy(kind='gpu', num_gpus=2)

  def test_multi_worker_without_tf_config_raises(self):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CONFIG'}
    with mock.patch.dict(os.environ, env, clear=True):
      with self.assertRaises(distribute.StrategyError) as ctx:
        distribute.make_strategy(kind='multi_worker')
    self.assertIn('TF_CONFIG', str(ctx.exception))
    self.assertIn('"task"', str(ctx.exception))

  def test_multi_worker_with_bad_tf_config_raises(self):
    with mock.patch.dict(os.environ, {'TF_CONFIG': '{not json'}):
      with self.assertRaisesRegex(distribute.StrategyError,
                                  'TF_CONFIG is not valid JSON'):
        distribute.make_strategy(kind='multi_worker')

  def test_unknown_kind_raises_listing_kinds(self):
    with self.assertRaises(distribute.StrategyError) as ctx:
      distribute.make_strategy(kind='tpuv4')
    message = str(ctx.exception)
    self.assertIn("'tpuv4'", message)
    for kind in ('auto', 'tpu', 'gpu', 'multi_worker', 'cpu'):
      self.assertIn(kind, message)

  def test_configure_cpu_devices_rejects_zero(self):
    with self.assertRaisesRegex(distribute.StrategyError, 'n must be >= 1'):
      distribute.configure_cpu_devices(0)


@pytest.mark.slow  # a separate process (2 logical CPUs)
class TwoLogicalCpusTest(tf.test.TestCase):

  def test_two_logical_cpus_give_two_mirrored_replicas(self):
    out = testing.run_python("""
        import json
        import tensorflow as tf
        from bigbigan_tf import distribute

        distribute.configure_cpu_devices(2)
        # A local TPU that is not there: fails cleanly, leaves CPUs usable.
        try:
          distribute.make_strategy(kind='tpu', tpu='local')
          tpu_error = None
        except distribute.StrategyError as e:
          tpu_error = str(e)
        strategy = distribute.make_strategy(kind='cpu')
        total = strategy.reduce(
            'SUM',
            strategy.run(lambda: tf.cast(
                tf.distribute.get_replica_context().replica_id_in_sync_group,
                tf.float32) + 1.0),
            axis=None)
        distribute.configure_cpu_devices(2)  # Same layout again: a no-op.
        try:
          distribute.configure_cpu_devices(3)
          late_error = None
        except distribute.StrategyError as e:
          late_error = str(e)
        print(json.dumps({
            'type': type(strategy).__name__,
            'replicas': strategy.num_replicas_in_sync,
            'devices': list(strategy.extended.worker_devices),
            'total': float(total),
            'auto_replicas': distribute.make_strategy().num_replicas_in_sync,
            'tpu_error': tpu_error,
            'late_error': late_error,
        }))
        """)
    self.assertEqual(out['type'], 'MirroredStrategy')
    self.assertEqual(out['replicas'], 2)
    self.assertEqual([d[-5:] for d in out['devices']], ['CPU:0', 'CPU:1'])
    self.assertEqual(out['total'], 3.0)  # Replica ids 0 and 1, plus one each.
    self.assertEqual(out['auto_replicas'], 2)
    self.assertIn("Could not connect to the TPU 'local'", out['tpu_error'])
    self.assertIn('already initialised', out['late_error'])
    self.assertIn('2 logical CPU', out['late_error'])


if __name__ == '__main__':
  tf.test.main()
