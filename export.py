"""Exports a training run: python export.py --workdir=W --export_dir=E.

Writes a TF2 SavedModel with the DeepMind BigBiGAN TF Hub interface
(signatures generate / encode / discriminate / serving_default; see
bigbigan_tf/export_lib.py) from the latest checkpoint of W, or from
--checkpoint. The config is read from W. By default the EMA weights of G and E
are exported, with batch-norm standing statistics recomputed over
--standing_stats_batches batches.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from bigbigan_tf import defaults

_WORKDIR = flags.DEFINE_string('workdir', None,
                               'The workdir train.py wrote to (gs:// ok).')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None,
                                  'Where to write the SavedModel (gs:// ok).')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Checkpoint to export, e.g. W/checkpoints/ckpt-500 '
    '(default: the latest in --workdir); best = the kept best checkpoint '
    '(W/best/, from --watch or config.eval).')
_NO_EMA = flags.DEFINE_bool('no_ema', False, 'Export the live G and E '
                            'instead of their EMA weights (the default).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Replace an existing --export_dir.')
_STANDING_STATS_BATCHES = flags.DEFINE_integer(
    'standing_stats_batches', defaults.STANDING_STATS_BATCHES,
    'Batches over which G\'s and E\'s batch-norm statistics are recomputed '
    '(BigGAN standing statistics); 0 keeps the checkpoint\'s moving '
    'averages.', lower_bound=0)
_KERAS_MODELS = flags.DEFINE_bool(
    'keras_models', True, 'Also write E, G and D as native Keras 3 models, '
    'EXPORT/keras/{encoder,generator,discriminator}.keras (docs/export.md).')
_STANDING_STATS_BATCH_SIZE = flags.DEFINE_integer(
    'standing_stats_batch_size', defaults.STANDING_STATS_BATCH_SIZE,
    'Examples per standing-statistics batch.', lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so --help answers without loading TensorFlow.
  from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import export_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import hardware  # pylint: disable=g-import-not-at-top

  try:
    path = export_lib.export(
        _WORKDIR.value, _EXPORT_DIR.value,
        checkpoint=checkpoints.resolve_checkpoint(_WORKDIR.value,
                                                  _CHECKPOINT.value),
        use_ema=not _NO_EMA.value, overwrite=_OVERWRITE.value,
        keras_models=_KERAS_MODELS.value,
        standing_stats_batches=_STANDING_STATS_BATCHES.value,
        standing_stats_batch_size=_STANDING_STATS_BATCH_SIZE.value)
  except (FileNotFoundError, FileExistsError, config_lib.ConfigError,
          data_lib.DataError, checkpoints.IncompleteCheckpointError,
          checkpoints.UnreadableCheckpointError, checkpoints.WorkdirError,
          export_lib.OverwriteRefusedError, hardware.HardwareError) as e:
    logging.error('%s: %s', type(e).__name__, e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  logging.info('Exported %s.', path)
  print(path)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir', 'export_dir'])
  app.run(main)
