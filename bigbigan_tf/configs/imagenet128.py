"""Paper scale: BigBiGAN on ImageNet, G at 128x128, ResNet-v2-50 E at 256x256.

Donahue & Simonyan 2019 (arXiv 1907.02544), Table 1 / section 4 settings as far
as the text gives them; BigGAN (arXiv 1809.11096) and compare_gan's BigGAN 128
recipe for the rest. Launch: see README ("Paper scale on a Cloud TPU").
"""

from bigbigan_tf.configs import base


def get_config():
  config = base.get_base_config()
  # Paper: 500K steps for most rows, 1M for the longest runs.
  config.num_train_steps = 500_000
  # Paper: batch size 2048.
  config.batch_size = 2048

  # ImageNet through TFDS; prepare it under data_dir first (README).
  config.data.name = 'tfds:imagenet2012'
  config.data.split = 'train'
  config.data.eval_split = 'validation'

  # Paper: G at 128 with E at the higher resolution 256; z in R^120.
  config.model.z_dim = 120
  config.model.resolution = 128
  config.model.encoder_resolution = 256
  # BigGAN: ch 96, self-attention at 64x64 in G and F.
  config.model.generator.ch = 96
  config.model.generator.attention_resolution = 64
  config.model.discriminator.ch = 96
  config.model.discriminator.attention_resolution = 64
  # Released bigbigan-resnet50: ResNet-v2-50, 2048-d pooled features.
  config.model.encoder.blocks_per_stage = (3, 4, 6, 3)
  config.model.encoder.width_multiplier = 1.0

  # BigGAN / compare_gan 128: Adam(0, 0.999), G 1e-4, D 5e-4, 2 D steps per G step.
  config.optim.g_lr = 1e-4
  config.optim.d_lr = 5e-4
  # Paper: the best rows raise E's learning rate over G's (unconfirmed factor: 10x).
  config.optim.e_lr = 1e-3
  config.optim.disc_iters = 2

  # BigGAN: EMA of G's weights with decay 0.9999, started after 20k steps.
  config.train.ema_decay = 0.9999
  config.train.ema_start = 20_000
  config.train.steps_per_loop = 100
  config.train.checkpoint_every = 5_000
  config.train.log_every = 500
  config.train.grid_every = 5_000
  # 'auto': bfloat16 compute on TPUs and GPUs of compute capability >= 8.0,
  # float32 on older GPUs (V100, T4), whose bfloat16 is not fast.
  config.train.precision = 'auto'
  config.train.jit_compile = True
  config.lock()
  return config
