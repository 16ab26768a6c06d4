"""For tests: tiny widths so a few training steps take seconds on a CPU."""

from bigbigan_tf.configs import base


def get_config():
  config = base.get_base_config()
  config.num_train_steps = 4
  config.batch_size = 8

  config.data.name = 'mnist'
  config.data.crop_min_area = 0.6
  config.data.random_flip = False
  config.data.shuffle_buffer = 256

  config.model.z_dim = 16
  config.model.resolution = 32
  config.model.encoder_resolution = 64
  config.model.generator.ch = 8
  config.model.generator.attention_resolution = 16
  config.model.generator.embed_dim = 8
  config.model.discriminator.ch = 8
  config.model.discriminator.attention_resolution = 16
  config.model.discriminator.h_depth = 1
  config.model.discriminator.h_width = 32
  config.model.discriminator.j_depth = 1
  config.model.discriminator.j_width = 32
  config.model.encoder.blocks_per_stage = (1, 1, 1, 1)
  config.model.encoder.width_multiplier = 0.0625
  config.model.encoder.head_depth = 1
  config.model.encoder.head_width = 32

  config.optim.disc_iters = 1
  config.train.steps_per_loop = 2
  config.train.checkpoint_every = 2
  config.train.log_every = 1
  config.train.grid_every = 2
  config.train.grid_size = 4
  config.train.ema_decay = 0.9
  config.train.ema_start = 0
  # float32 on every machine, so tests compute the same whatever the CPU.
  config.train.precision = 'float32'
  config.lock()
  return config
