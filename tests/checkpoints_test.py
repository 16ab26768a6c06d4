"""checkpoints.find_checkpoint: the given checkpoint, else the latest."""

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


if __name__ == '__main__':
  tf.test.main()
