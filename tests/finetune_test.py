"""Fine-tuning an exported encoder: hub.KerasLayer (tf-keras) and TFSMLayer.

One tiny run is trained and exported once; each test loads the export its own
way (so each has its own copy of the variables), puts a softmax head on
`avepool_feat` and fits E and the head for a few steps on labelled digits.
"""

import collections
import os
import shutil
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

import testing
from bigbigan_tf import data as data_lib
from bigbigan_tf import export_lib
from bigbigan_tf import checkpoints

RES_E, CLASSES, BATCH, EPOCHS = 64, 10, 32, 6


def _values(weights):
  return [np.array(w.numpy()) for w in weights]


def _moving_statistics(weights):
  return [w for w in weights if 'moving_' in w.name]


@pytest.mark.slow
class FinetuneTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    workdir = os.path.join(cls.root, 'run')
    testing.train_tiny(workdir, steps=2)
    config, cls.state, _ = checkpoints.restore(workdir)
    module, info = export_lib.build_module(
        config, cls.state, step=int(cls.state.step.numpy()),
        standing_stats_batches=2, standing_stats_batch_size=8)
    cls.export_dir = export_lib.save_module(
        module, os.path.join(cls.root, 'export'), config=config, info=info)
    batch = next(iter(data_lib.make_dataset(
        config.data, image_size=RES_E, batch_size=BATCH, training=False)))
    cls.images = batch['image'].numpy()
    cls.labels = batch['label'].numpy()
    assert len(set(cls.labels.tolist())) > 3, cls.labels

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _encoder_shapes(self):
    return collections.Counter(
        tuple(w.shape) for w in self.state.ema_encoder.trainable_weights)

  def _check_finetuning(self, model, layer, inference, signatures):
    """Fits `model`; checks E, its statistics and the inference functions.

    Args:
      model: images -> class probabilities, containing `layer`.
      layer: the layer wrapping the export.
      inference: fn(images) -> avepool_feat, E in inference mode.
      signatures: the loaded object's signatures.
    """
    x, y = self.images, self.labels
    stats = _moving_statistics(layer.non_trainable_weights)
    self.assertNotEmpty(stats)
    weights, stats_before = _values(layer.trainable_weights), _values(stats)
    features_before = inference(x).numpy()

    # Inference leaves the moving statistics as they are.
    model(x, training=False)
    inference(x)
    signatures['encode'](x=tf.constant(x))
    for before, v in zip(stats_before, _values(stats)):
      self.assertAllEqual(before, v)

    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False,
                        verbose=0)
    losses = history.history['loss']
    # The loss falls; SGD on a tiny batch wobbles from epoch to epoch, so
    # the best of the second half is compared with the first epoch.
    self.assertLess(min(losses[len(losses) // 2:]), 0.9 * losses[0], losses)

    changed = [not np.array_equal(a, b) for a, b in
               zip(weights, _values(layer.trainable_weights))]
    # All but the z head (unused by avepool_feat, so without gradient).
    self.assertGreater(sum(changed), 0.8 * len(changed), changed)
    stats_trained = _values(stats)
    self.assertTrue(any(not np.array_equal(a, b) for a, b in
                        zip(stats_before, stats_trained)))
    # The inference functions read the updated statistics.
    self.assertNotAllClose(features_before, inference(x).numpy())

    model(x, training=False)
    inference(x)
    for before, v in zip(stats_trained, _values(stats)):
      self.assertAllEqual(before, v)

    # Still batch-independent: an example alone as in a batch.
    encode = signatures['encode']
    full = encode(x=tf.constant(x))
    for key in ('z_mean', 'avepool_feat'):
      self.assertAllClose(encode(x=tf.constant(x[3:4]))[key], full[key][3:4],
                          atol=1e-5, rtol=1e-4)
      self.assertAllClose(encode(x=tf.constant(x[:5]))[key], full[key][:5],
                          atol=1e-5, rtol=1e-4)
    alone = inference(x[3:4]).numpy()
    self.assertAllClose(alone, inference(x).numpy()[3:4], atol=1e-5, rtol=1e-4)

  def test_hub_keras_layer_in_a_tf_keras_model(self):
    layer = hub.KerasLayer(self.export_dir, trainable=True,
                           output_key='avepool_feat')
    model = tf_keras.Sequential([
        tf_keras.Input((RES_E, RES_E, 3)), layer,
        tf_keras.layers.Dense(CLASSES, activation='softmax')])
    model.compile(tf_keras.optimizers.Adam(1e-3),
                  'sparse_categorical_crossentropy')
    obj = layer.resolved_object

    self.assertEqual(collections.Counter(
        tuple(v.shape) for v in obj.trainable_variables),
                     self._encoder_shapes())
    self.assertLen(obj.trainable_variables,
                   len(self.state.ema_encoder.trainable_weights))
    self.assertLen(layer.trainable_weights, len(obj.trainable_variables))
    self.assertEmpty(obj.regularization_losses)
    self._check_finetuning(
        model, layer, lambda x: layer(x, training=False), obj.signatures)

  def test_tfsm_layer_in_a_keras3_model(self):
    layer = keras.layers.TFSMLayer(
        self.export_dir, call_endpoint='encode',
        call_training_endpoint='encode_train', trainable=True)
    inputs = keras.Input((RES_E, RES_E, 3))
    features = layer(inputs)['avepool_feat']
    model = keras.Model(
        inputs, keras.layers.Dense(CLASSES, activation='softmax')(features))
    # Plain SGD: Keras 3.15 names an optimizer's slot variables after the
    # weight's path, and TFSMLayer's weights keep TF's ':0' in their names,
    # which Adam's slots then refuse (not a valid scope name).
    model.compile(keras.optimizers.SGD(0.1),
                  'sparse_categorical_crossentropy')

    self.assertEqual(collections.Counter(
        tuple(w.shape) for w in layer.trainable_weights),
                     self._encoder_shapes())
    reloaded = hub.load(self.export_dir)
    self.assertEqual(collections.Counter(
        tuple(v.shape) for v in reloaded.trainable_variables),
                     self._encoder_shapes())
    self.assertLen(reloaded.trainable_variables,
                   len(self.state.ema_encoder.trainable_weights))
    # pylint: disable-next=protected-access
    signatures = layer._reloaded_obj.signatures  # TFSMLayer's own copy.
    self._check_finetuning(
        model, layer, lambda x: layer(x, training=False)['avepool_feat'],
        signatures)

  def test_encode_train_draws_noise_and_call_follows_training(self):
    m = tf.saved_model.load(self.export_dir)
    x = tf.constant(self.images[:8])
    a, b = m.encode_train(x), m.encode_train(x)
    self.assertNotAllClose(a['z_sample'], b['z_sample'])
    self.assertAllClose(a['default'], a['z_mean'])
    # Training mode normalizes with batch statistics: an example's features
    # depend on its batch.
    self.assertNotAllClose(m.encode_train(x[:2])['avepool_feat'],
                           m.encode_train(x)['avepool_feat'][:2])
    inference = m(x, training=False)
    self.assertAllClose(inference['z_mean'], m.encode(x)['z_mean'])
    self.assertAllClose(m(x[:2])['avepool_feat'],
                        inference['avepool_feat'][:2], atol=1e-5, rtol=1e-4)


if __name__ == '__main__':
  tf.test.main()
