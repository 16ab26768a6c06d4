"""Checking, saving and comparing configs.

A config is checked once, before any work starts, so a typo in a field fails
in a second with a message naming the field, its value and the allowed values,
instead of deep inside a traced training step.
"""

import json
import os
from typing import Any

import ml_collections
import tensorflow as tf

from bigbigan_tf import files
from bigbigan_tf import hardware
from bigbigan_tf.models import discriminator as d_arch
from bigbigan_tf.models import generator as g_arch

CONFIG_FILENAME = 'config.json'
RESOLUTIONS = tuple(sorted(g_arch.G_ARCH))
PRECISIONS = ('auto', 'float32', 'mixed_bfloat16')
ENCODER_KINDS = ('resnet_v2', 'revnet')
AUGMENTATIONS = ('resnet', 'none')
DATA_NAME_FORMS = "'mnist', 'tfds:NAME' or 'folder:PATH'"
# Fields that may change when a run is resumed: training longer is not a
# different experiment, and the speed switches and precision follow the
# hardware ('auto'; a resume that resolves them differently is logged and
# recorded in W/hardware.json). optim.grad_accum_steps only changes how a
# batch is split into micro-batches, not the model or its updates' meaning,
# and train.lease / train.lease_expiry_s only the workdir's lease; a resume
# logs them.
RESUMABLE_FIELDS = ('num_train_steps', 'train.precision',
                    'optim.grad_accum_steps', 'train.lease',
                    'train.lease_expiry_s', 'eval.every_steps',
                    'eval.metrics', 'eval.num_samples',
                    'eval.select') + hardware.SWITCHES


class ConfigError(ValueError):
  """A config field has a value this project cannot run with."""


def _check(ok: bool, field: str, value: Any, allowed: str):
  if not ok:
    raise ConfigError(f'config.{field} = {value!r} is invalid: {allowed}. '
                      f'Set it with --config.{field}=VALUE.')


def validate(config: ml_collections.ConfigDict, *, num_replicas: int = 1):
  """Raises ConfigError naming the first invalid field, or returns None.

  Args:
    config: a full config (configs/base.py lists its fields).
    num_replicas: replicas of the distribution strategy the run will use.
  """
  m = config.model
  _check(m.resolution in RESOLUTIONS, 'model.resolution', m.resolution,
         f'allowed values are {list(RESOLUTIONS)}')
  num_chunks = g_arch.num_z_chunks(m.resolution)
  _check(isinstance(m.z_dim, int) and m.z_dim >= 1, 'model.z_dim', m.z_dim,
         'it must be an integer >= 1')
  _check(m.z_dim >= num_chunks, 'model.z_dim', m.z_dim,
         f'G at {m.resolution}px splits z into {num_chunks} chunks (one per '
         f'block plus one), so z_dim must be >= {num_chunks}')
  _check(isinstance(m.encoder_resolution, int)
         and m.encoder_resolution >= m.resolution
         and m.encoder_resolution % m.resolution == 0,
         'model.encoder_resolution', m.encoder_resolution,
         f'it must be a multiple of model.resolution={m.resolution} '
         f'(e.g. {m.resolution} or {2 * m.resolution}), so real images can '
         'be average-pooled to G\'s resolution for F')
  g_res = g_arch.attention_resolutions(m.resolution)
  _check(m.generator.attention_resolution in g_res,
         'model.generator.attention_resolution',
         m.generator.attention_resolution,
         f'allowed values at resolution {m.resolution} are {g_res}')
  d_res = d_arch.attention_resolutions(m.resolution)
  _check(m.discriminator.attention_resolution in d_res,
         'model.discriminator.attention_resolution',
         m.discriminator.attention_resolution,
         f"allowed values at resolution {m.resolution} are {d_res} (F's "
         'resolutions after its downsampling blocks)')
  for net, arch in (('generator', g_arch.G_ARCH[m.resolution][1]),
                    ('discriminator', d_arch.D_ARCH[m.resolution][0])):
    mults = tuple(m[net].channel_multipliers)
    _check(not mults or (len(mults) == len(arch) and all(
        isinstance(v, int) and v >= 1 for v in mults)),
           f'model.{net}.channel_multipliers', mults,
           f'it must be () for BigGAN\'s widths or {len(arch)} integers >= 1 '
           f'(one per block at {m.resolution}px; BigGAN\'s are {arch}), e.g. '
           f'--config.model.{net}.channel_multipliers="{arch}"')
  for field in ('generator.ch', 'discriminator.ch', 'discriminator.h_width',
                'discriminator.j_width', 'encoder.head_width'):
    value = m[field.split('.')[0]][field.split('.')[1]]
    _check(isinstance(value, int) and value >= 1, 'model.' + field, value,
           'it must be an integer >= 1')
  for field in ('discriminator.h_depth', 'discriminator.j_depth',
                'encoder.head_depth', 'generator.embed_dim'):
    value = m[field.split('.')[0]][field.split('.')[1]]
    _check(isinstance(value, int) and value >= 0, 'model.' + field, value,
           'it must be an integer >= 0')
  _check(m.encoder.kind in ENCODER_KINDS, 'model.encoder.kind',
         m.encoder.kind, f'allowed values are {list(ENCODER_KINDS)}')
  _check(len(m.encoder.blocks_per_stage) == 4
         and all(int(b) >= 1 for b in m.encoder.blocks_per_stage),
         'model.encoder.blocks_per_stage', m.encoder.blocks_per_stage,
         'it must be 4 integers >= 1, e.g. (3, 4, 6, 3) for ResNet-50')
  _check(m.encoder.width_multiplier > 0, 'model.encoder.width_multiplier',
         m.encoder.width_multiplier, 'it must be > 0')
  # The encoder's stem and 3 strided stages divide its input by 32.
  _check(m.encoder_resolution >= 32, 'model.encoder_resolution',
         m.encoder_resolution, 'the ResNet encoder needs at least 32 pixels')

  _check(isinstance(config.batch_size, int) and config.batch_size >= 1,
         'batch_size', config.batch_size, 'it must be an integer >= 1')
  _check(config.batch_size % num_replicas == 0, 'batch_size',
         config.batch_size,
         f'the global batch must divide evenly among the {num_replicas} '
         f'replicas; use a multiple of {num_replicas}')
  _check(isinstance(config.num_train_steps, int)
         and config.num_train_steps >= 0, 'num_train_steps',
         config.num_train_steps, 'it must be an integer >= 0')

  name = config.data.name
  kind = name.split(':', 1)[0] if isinstance(name, str) else None
  _check(name == 'mnist' or (kind in ('tfds', 'folder') and
                             len(name.split(':', 1)[1]) > 0),
         'data.name', name, f'it must be {DATA_NAME_FORMS}')
  _check(config.data.augmentation in AUGMENTATIONS, 'data.augmentation',
         config.data.augmentation, f'allowed values are {list(AUGMENTATIONS)}')
  _check(0 < config.data.crop_min_area <= 1, 'data.crop_min_area',
         config.data.crop_min_area, 'it must be in (0, 1]')

  o = config.optim
  for field in ('g_lr', 'e_lr', 'd_lr'):
    _check(o[field] > 0, 'optim.' + field, o[field], 'it must be > 0')
  _check(isinstance(o.disc_iters, int) and o.disc_iters >= 1,
         'optim.disc_iters', o.disc_iters, 'it must be an integer >= 1')
  k = o.grad_accum_steps
  _check(isinstance(k, int) and k >= 1, 'optim.grad_accum_steps', k,
         'it must be an integer >= 1 (1 = no accumulation)')
  _check(config.batch_size % (k * num_replicas) == 0,
         'optim.grad_accum_steps', k,
         f'batch_size={config.batch_size} must be divisible by '
         f'grad_accum_steps x replicas = {k} x {num_replicas} = '
         f'{k * num_replicas}, so every replica cuts its share into equal '
         'micro-batches; change batch_size or grad_accum_steps')
  _check(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, 'optim.beta1/beta2',
         (o.beta1, o.beta2), 'Adam moments must be in [0, 1)')
  t = config.train
  _check(t.precision in PRECISIONS, 'train.precision', t.precision,
         f'allowed values are {list(PRECISIONS)}')
  for field in ('steps_per_loop', 'checkpoint_every', 'log_every'):
    _check(isinstance(t[field], int) and t[field] >= 1, 'train.' + field,
           t[field], 'it must be an integer >= 1')
  _check(isinstance(t.lease_expiry_s, (int, float))
         and not isinstance(t.lease_expiry_s, bool) and t.lease_expiry_s >= 3,
         'train.lease_expiry_s', t.lease_expiry_s,
         'it must be a number of seconds >= 3')
  # 'file' (the old ticket protocol's name) is still read from older
  # workdirs' config.json: it now means the store's own lock, as 'auto'.
  _check(t.lease in ('auto', 'lock', 'gcs', 'file'), 'train.lease', t.lease,
         "allowed values are 'auto', 'lock' and 'gcs' ('file', an older "
         "value, means 'auto')")
  ev = config.eval
  _check(isinstance(ev.every_steps, int) and ev.every_steps >= 0
         and ev.every_steps % t.checkpoint_every == 0, 'eval.every_steps',
         ev.every_steps, 'it must be 0 (off) or a multiple of '
         f'train.checkpoint_every ({t.checkpoint_every}): evaluation reads '
         'the checkpoint just saved')
  _check(isinstance(ev.num_samples, int) and ev.num_samples >= 2,
         'eval.num_samples', ev.num_samples, 'it must be an integer >= 2')
  _check(0 <= t.ema_decay < 1, 'train.ema_decay', t.ema_decay,
         'it must be in [0, 1)')
  for field in hardware.SWITCHES:
    try:
      hardware.parse_switch(config[field.split('.')[0]][field.split('.')[1]],
                            field)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  for field in ('fused_resampling_min_size', 'pointwise_strided_max_pixels',
                'tapped_filter_grad_max_pixels'):
    value = m[field]
    _check(isinstance(value, int) and not isinstance(value, bool)
           and value >= 0, 'model.' + field, value,
           'it must be an integer >= 0 (pixels)')


def to_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON-able values (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def save(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes the resolved config as indented JSON into the workdir."""
  return files.write_json(os.path.join(workdir, CONFIG_FILENAME),
                          to_dict(config))


# Fields added after the first release, with the value that reproduces how a
# workdir written before them was trained. `load` fills them in, so older
# workdirs still export, evaluate and (passing that value) resume.
FIELDS_ADDED_LATER = {
    'model.encoder.stochastic': True,
    'optim.eg_reuses_d_forward': False,
    'model.fused_resampling': False,
    'model.fused_resampling_min_size': 8,
    'model.fused_batch_norm': True,
    'optim.fused_adam': True,
    'model.pointwise_matmul': True,
    'model.pointwise_strided_max_pixels': 64,
    'model.tapped_filter_grad': True,
    'model.tapped_filter_grad_max_pixels': 64,
    'optim.grad_accum_steps': 1,
    'model.generator.channel_multipliers': (),
    'model.discriminator.channel_multipliers': (),
    'train.lease_expiry_s': 300,
    'train.lease': 'auto',
    'eval.every_steps': 0,
    'eval.metrics': '',
    'eval.num_samples': 1000,
    'eval.select': 'auto',
}


def load(workdir: str) -> ml_collections.ConfigDict:
  """Reads the config a training run wrote into `workdir`.

  Raises:
    FileNotFoundError: with what to do, if the workdir holds no config.
  """
  path = os.path.join(workdir, CONFIG_FILENAME)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f'{path} does not exist: {workdir!r} is not a bigbigan-tf workdir. '
        'Pass the --workdir that train.py wrote to.')
  with tf.io.gfile.GFile(path) as f:
    config = json.load(f)
  for field, value in FIELDS_ADDED_LATER.items():
    *parents, name = field.split('.')
    node = config
    for p in parents:
      node = node.setdefault(p, {})
    node.setdefault(name, value)
  return ml_collections.ConfigDict(config)


def _flatten(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[prefix + k] = v
  return out


def diff(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict,
         *, ignore=RESUMABLE_FIELDS) -> list[tuple[str, Any, Any]]:
  """Fields whose values differ, as (field, old value, new value)."""
  a, b = _flatten(to_dict(old)), _flatten(to_dict(new))
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if k not in ignore and a.get(k) != b.get(k)]
