"""Paper scale, the paper's best encoder: RevNet-50 x4 E at 256x256.

Donahue & Simonyan 2019 (arXiv 1907.02544), Table 2's best row: a RevNet-50
x4 encoder (86M parameters, 8192-d avepool_feat; the released
bigbigan-revnet50x4) with E's learning rate raised over G's. The RevNet is
that of Kolesnikov, Zhai & Beyer 2019 (arXiv 1901.09005); see
models/revnet.py. Everything else as configs/imagenet128.py.
"""

from bigbigan_tf.configs import imagenet128


def get_config():
  config = imagenet128.get_config()
  config.model.encoder.kind = 'revnet'
  config.model.encoder.blocks_per_stage = (3, 4, 6, 3)
  config.model.encoder.width_multiplier = 4.0
  # Paper: the best rows raise E's learning rate over G's (1e-4); the factor is
  # not stated, 10x as in imagenet128.py.
  config.optim.e_lr = 1e-3
  return config
