"""The accelerator path, exercised on CPU: no GPU or TPU here, so the tiny
config trains and resumes with every switch as 'auto' sets it on a GPU or TPU
(the plain Keras path, mixed_bfloat16), and with train.jit_compile=True (the
XLA path TPUs use and configs/imagenet128.py sets)."""

import numpy as np
import pytest
import tensorflow as tf

from bigbigan_tf import hardware
from bigbigan_tf import train_lib
from bigbigan_tf.configs import tiny

_ACCELERATORS = (hardware.Device(kind='tpu'),
                 hardware.Device(kind='gpu', name='A100',
                                 gpu_compute_capability=(8, 0)))


def _accelerator_config(steps, **train):
  """The tiny config with 'auto' settled as on a TPU or a recent GPU."""
  config = tiny.get_config()
  with config.unlocked():
    config.train.precision = 'auto'
    for field in hardware.SWITCHES:
      section, name = field.split('.')
      config[section][name] = 'auto'
  tpu, gpu = (hardware.resolve(config, device) for device in _ACCELERATORS)
  # Both accelerators settle the same way.
  assert tpu.config.to_dict() == gpu.config.to_dict(), (tpu.choices,
                                                         gpu.choices)
  config = tpu.config  # concrete values, as a run on a TPU trains with
  config.num_train_steps = steps
  config.train.update(train)
  return config


@pytest.mark.slow  # trains and resumes a workdir (two bfloat16 XLA compiles)
class AcceleratorPathTest(tf.test.TestCase):

  def test_gpu_tpu_settings_with_xla_train_and_resume(self):
    # One run for both (each trace costs tens of seconds in emulated
    # bfloat16): the GPU/TPU settings under XLA, as on a TPU.
    workdir = self.create_tempdir().full_path
    config = _accelerator_config(1, steps_per_loop=1, jit_compile=True)
    self.assertEqual(config.train.precision, 'mixed_bfloat16')
    for field in hardware.SWITCHES:
      section, name = field.split('.')
      self.assertIs(config[section][name], False, field)
    first = train_lib.train_and_evaluate(config, workdir)
    self.assertEqual(first['step'], 1)
    self.assertEqual(first['state'].nets.generator.dtype_policy.name,
                     'mixed_bfloat16')
    config = _accelerator_config(2, steps_per_loop=1, jit_compile=True)
    with self.assertLogs('absl', level='INFO') as logs:
      resumed = train_lib.train_and_evaluate(config, workdir)
    self.assertIn('ckpt-1 (step 1)', '\n'.join(logs.output))
    self.assertEqual(resumed['step'], 2)
    self.assertTrue(all(np.isfinite(v) for v in resumed['metrics'].values()),
                    resumed['metrics'])


if __name__ == '__main__':
  tf.test.main()
