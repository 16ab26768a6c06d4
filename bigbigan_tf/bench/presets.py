"""The benchmark presets of `python -m bigbigan_tf.bench --preset=NAME`.

Also a config file, so a preset takes overrides:

  python -m bigbigan_tf.bench \
      --config=bigbigan_tf/bench/presets.py:biggan128 \
      --config.model.encoder.width_multiplier=0.5

biggan32 and biggan128 have BigGAN-PyTorch's G and D shapes and one D step
per iteration, in float32 (the speed targets compare with its fp32 times);
default is the offline default config (configs/mnist.py) as it is.
"""

from bigbigan_tf.configs import mnist


def get_config(name: str = 'biggan32'):
  """The preset `name`: biggan32, biggan128 or default."""
  config = mnist.get_config()
  with config.unlocked():
    if name in ('biggan32', 'biggan128'):
      # The speed targets compare 1 D step + 1 E/G step with BigGAN-PyTorch,
      # in float32 unless --precision says otherwise (the offline default
      # config these start from trains in mixed_bfloat16).
      config.optim.disc_iters = 1
      config.train.precision = 'float32'
      # BigGAN's own widths per block, whatever the offline default sets,
      # and H and J at the 256 the presets' figures were measured with (the
      # offline default widened them to 512 later).
      config.model.generator.channel_multipliers = ()
      config.model.discriminator.channel_multipliers = ()
      config.model.discriminator.h_width = 256
      config.model.discriminator.j_width = 256
      # And the deterministic E they were measured with (the offline default
      # turned stochastic on 2026-12-05; the noise costs one multiply-add).
      config.model.encoder.stochastic = False
    if name == 'biggan32':
      # BigGAN-PyTorch's 32px G and D (ch 32, batch 16), offline default's E.
      config.batch_size = 16
      config.model.generator.ch = 32
      config.model.discriminator.ch = 32
    elif name == 'biggan128':
      # 128px, ch 32, batch 8, attention at 64 (BigGAN-PyTorch's reference
      # run), with a ResNet-v2-50 E at width 1/4 on 256px input.
      config.batch_size = 8
      config.model.resolution = 128
      config.model.encoder_resolution = 256
      config.model.generator.ch = 32
      config.model.discriminator.ch = 32
      config.model.generator.attention_resolution = 64
      config.model.discriminator.attention_resolution = 64
      config.model.encoder.blocks_per_stage = (3, 4, 6, 3)
      config.model.encoder.width_multiplier = 0.25
      # Fused resampling from 16px up: the 8px blocks' 256-512 channels ran
      # faster in the literal order on this CPU (bf16 -10%, fp32 the same;
      # README, Performance).
      config.model.fused_resampling_min_size = 16
    elif name != 'default':
      raise ValueError(f'Unknown preset {name!r}.')
  return config
