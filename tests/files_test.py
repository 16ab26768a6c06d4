"""Atomic writes (files.py) and the dtype-policy block (precision.py)."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from bigbigan_tf import files
from bigbigan_tf import precision


class WriteJsonTest(tf.test.TestCase):

  def test_writes_replaces_and_leaves_no_temp_file(self):
    directory = os.path.join(self.get_temp_dir(), 'new', 'dir')
    path = os.path.join(directory, 'out.json')
    files.write_json(path, {'b': 1, 'a': [1, 2]})
    with open(path) as f:
      text = f.read()
    self.assertEqual(json.loads(text), {'a': [1, 2], 'b': 1})
    self.assertLess(text.index('"a"'), text.index('"b"'))  # sort_keys.
    self.assertTrue(text.endswith('}\n'))
    files.write_json(path, {'z': np.float32(0.5), 'y': 2}, sort_keys=False,
                     default=lambda v: v.item())
    with open(path) as f:
      text = f.read()
    self.assertEqual(json.loads(text), {'z': 0.5, 'y': 2})
    self.assertLess(text.index('"z"'), text.index('"y"'))
    self.assertEqual(os.listdir(directory), ['out.json'])

  def test_a_failed_write_keeps_the_old_file(self):
    path = os.path.join(self.get_temp_dir(), 'keep.json')
    files.write_json(path, {'old': True})
    with self.assertRaises(TypeError):  # A set is not JSON.
      files.write_json(path, {'new': {1, 2}})
    with open(path) as f:
      self.assertEqual(json.load(f), {'old': True})
    self.assertEqual(os.listdir(self.get_temp_dir()).count('keep.json'), 1)
    self.assertEmpty([n for n in os.listdir(self.get_temp_dir())
                      if n.startswith('keep.json.tmp')])

  def test_bytes(self):
    path = os.path.join(self.get_temp_dir(), 'raw.bin')
    files.write_atomic(path, b'\x00\xff')
    with open(path, 'rb') as f:
      self.assertEqual(f.read(), b'\x00\xff')


class DtypePolicyTest(tf.test.TestCase):

  def test_policy_inside_and_restored_after_an_error(self):
    before = keras.config.dtype_policy().name
    with self.assertRaisesRegex(RuntimeError, 'inside'):
      with precision.dtype_policy('mixed_bfloat16'):
        layer = keras.layers.Dense(2)
        self.assertEqual(layer.compute_dtype, 'bfloat16')
        raise RuntimeError('inside')
    self.assertEqual(keras.config.dtype_policy().name, before)
    self.assertEqual(keras.layers.Dense(2).compute_dtype, 'float32')


if __name__ == '__main__':
  tf.test.main()
