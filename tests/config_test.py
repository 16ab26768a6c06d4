"""Named configs are valid; invalid ones fail with a message naming the field."""

import tempfile

import tensorflow as tf

from bigbigan_tf import config_lib
from bigbigan_tf.configs import imagenet128
from bigbigan_tf.configs import mnist
from bigbigan_tf.configs import tiny


class ConfigTest(tf.test.TestCase):

  def test_named_configs_are_valid(self):
    for module in (imagenet128, mnist, tiny):
      config = module.get_config()
      config_lib.validate(config)
      self.assertIsInstance(config.num_train_steps, int)
      self.assertIn(config.data.name.split(':')[0], ('mnist', 'tfds'))

  def test_paper_values(self):
    c = imagenet128.get_config()
    self.assertEqual((c.model.resolution, c.model.encoder_resolution), (128, 256))
    self.assertEqual((c.model.z_dim, c.model.generator.ch, c.batch_size),
                     (120, 96, 2048))
    self.assertEqual((c.optim.beta1, c.optim.beta2), (0.0, 0.999))
    self.assertEqual(c.data.name, 'tfds:imagenet2012')

  def test_invalid_fields(self):
    cases = [
        ('model.resolution', 48, r'model\.resolution = 48.*\[32, 64, 128, 256\]'),
        ('model.z_dim', 0, r'model\.z_dim = 0.*>= 1'),
        ('model.z_dim', 3, r'model\.z_dim = 3.*4 chunks'),
        ('model.encoder_resolution', 48, r'encoder_resolution = 48.*multiple'),
        ('batch_size', 7, None),
        ('data.name', 'imagenet', r"data\.name = 'imagenet'.*'mnist', "
                                  r"'tfds:NAME' or 'folder:PATH'"),
        ('data.name', 'tfds:', r'data\.name'),
        ('model.generator.attention_resolution', 64,
         r'attention_resolution = 64.*\[0, 8, 16, 32\]'),
        # F at 32px downsamples only to 8x8 (models.discriminator.D_ARCH), so
        # attention at 4 would silently build no attention layer.
        ('model.discriminator.attention_resolution', 4,
         r'attention_resolution = 4.*\[0, 16, 8\]'),
        ('train.precision', 'float16', r"mixed_bfloat16"),
        ('optim.disc_iters', 0, r'disc_iters'),
        ('model.generator.channel_multipliers', (4, 4),
         r'channel_multipliers = \(4, 4\).*3 integers.*\(4, 4, 4\)'),
        ('model.discriminator.channel_multipliers', (4, 0, 4, 4),
         r'channel_multipliers = \(4, 0, 4, 4\).*4 integers >= 1'),
    ]
    for field, value, pattern in cases:
      with self.subTest(field=field, value=value):
        config = tiny.get_config()
        section, _, leaf = field.rpartition('.')
        target = config
        for part in filter(None, section.split('.')):
          target = target[part]
        with target.unlocked():
          target[leaf] = value
        if field == 'batch_size':
          with self.assertRaisesRegex(config_lib.ConfigError,
                                      r'batch_size = 7.*divide evenly.*2 '
                                      r'replicas'):
            config_lib.validate(config, num_replicas=2)
          continue
        with self.assertRaisesRegex(config_lib.ConfigError, pattern):
          config_lib.validate(config)
        with self.assertRaisesRegex(config_lib.ConfigError,
                                    f'--config.{field}'):
          config_lib.validate(config)

  def test_save_load_and_diff(self):
    config = tiny.get_config()
    with tempfile.TemporaryDirectory() as workdir:
      config_lib.save(config, workdir)
      loaded = config_lib.load(workdir)
    self.assertEqual(config_lib.diff(config, loaded), [])
    other = tiny.get_config()
    with other.unlocked():
      other.num_train_steps = 99
      other.optim.d_lr = 1.0
    self.assertEqual(config_lib.diff(config, other),
                     [('optim.d_lr', config.optim.d_lr, 1.0)])

  def test_grad_accum_steps_may_change_on_resume_and_is_logged(self):
    from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
    config = tiny.get_config()
    other = tiny.get_config()
    with other.unlocked():
      other.num_train_steps = 8
      other.optim.grad_accum_steps = 2
    with tempfile.TemporaryDirectory() as workdir:
      config_lib.save(config, workdir)
      checkpoints.check_workdir_config(other, workdir, write=False)
      with self.assertLogs('absl', level='INFO') as logs:
        checkpoints.log_resume_changes(other, workdir)
    self.assertEqual(
        [r.getMessage() for r in logs.records],
        [f'Resuming {workdir} with num_train_steps = 8 (it was 4).',
         f'Resuming {workdir} with optim.grad_accum_steps = 2 (it was 1).'])

  def test_load_fills_fields_added_later_with_their_old_behaviour(self):
    import json  # pylint: disable=g-import-not-at-top
    import os  # pylint: disable=g-import-not-at-top
    config = tiny.get_config().to_dict()
    del config['optim']['eg_reuses_d_forward']
    del config['model']['encoder']['stochastic']
    del config['model']['fused_resampling']
    with tempfile.TemporaryDirectory() as workdir:
      with open(os.path.join(workdir, config_lib.CONFIG_FILENAME), 'w') as f:
        json.dump(config, f)
      loaded = config_lib.load(workdir)
    self.assertFalse(loaded.optim.eg_reuses_d_forward)
    self.assertTrue(loaded.model.encoder.stochastic)
    self.assertFalse(loaded.model.fused_resampling)
    # Resuming it with today's default is refused, naming the field.
    self.assertIn(('optim.eg_reuses_d_forward', False, True),
                  config_lib.diff(loaded, tiny.get_config()))

  def test_load_missing(self):
    with self.assertRaisesRegex(FileNotFoundError, 'not a bigbigan-tf workdir'):
      config_lib.load(tempfile.mkdtemp())


if __name__ == '__main__':
  tf.test.main()
