"""checkpoints.find_checkpoint: the given checkpoint, else the latest."""

import ast
import json
import os

import tensorflow as tf

from bigbigan_tf import checkpoints


class FindCheckpointTest(tf.test.TestCase):

  def test_given_latest_and_missing(self):
    workdir = self.get_temp_dir()
    with self.assertRaisesRegex(FileNotFoundError,
                                'No checkpoint in .*train first.*or pass X'):
      checkpoints.find_checkpoint(workdir, otherwise=', or pass X')
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf.Variable(1.0)),
        os.path.join(workdir, checkpoints.CHECKPOINT_DIR), max_to_keep=3)
    first = manager.save(checkpoint_number=1)
    second = manager.save(checkpoint_number=2)
    self.assertEqual(checkpoints.find_checkpoint(workdir), second)
    self.assertEqual(checkpoints.find_checkpoint(workdir, first), first)
    with self.assertRaisesRegex(FileNotFoundError,
                                'ckpt-9 does not exist.*ckpt-STEP'):
      checkpoints.find_checkpoint(workdir, first[:-1] + '9')


class ResolveBestTest(tf.test.TestCase):

  def test_best_goes_through_the_pointer(self):
    workdir = self.get_temp_dir()
    with self.assertRaisesRegex(FileNotFoundError, 'No best checkpoint.*--watch'):
      checkpoints.resolve_checkpoint(workdir, 'best')
    pointer = os.path.join(workdir, 'best', 'best.json')
    os.makedirs(os.path.dirname(pointer))
    for info, want in (({'prefix': 'ckpt-3'}, 'ckpt-3'),  # the older layout
                       ({'checkpoint': 'ckpt-5/ckpt-5'}, 'ckpt-5/ckpt-5')):
      with open(pointer, 'w') as f:
        json.dump(dict(info, step=3, metric='fid', value=1.0), f)
      self.assertEqual(checkpoints.resolve_checkpoint(workdir, 'best'),
                       os.path.join(workdir, 'best', want))
    self.assertEqual(checkpoints.resolve_checkpoint(workdir, 'x/ckpt-1'),
                     'x/ckpt-1')

  def test_no_import_up_to_evaluation(self):
    # checkpoints sits below evaluation/: it finds W/best by workdir_layout.
    with open(checkpoints.__file__) as f:
      tree = ast.parse(f.read())
    imported = [a.name if isinstance(n, ast.Import) else n.module
                for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])]
    self.assertIn('bigbigan_tf', imported)
    self.assertFalse([m for m in imported if 'evaluation' in (m or '')])
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             for a in n.names]
    self.assertIn('workdir_layout', names)
    self.assertNotIn('evaluation', names)


if __name__ == '__main__':
  tf.test.main()
