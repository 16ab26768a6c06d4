"""Defaults shared by the command lines and the libraries, defined once.

The entry points (train.py, export.py, eval/evaluate.py, eval/quick_probe.py)
take their flag defaults from here, and the libraries their keyword defaults,
so the two cannot drift. This module imports nothing heavy (no TensorFlow),
so that `--help` answers at once.
"""

# Workdir layout: train.py's tf.train.CheckpointManager directory.
CHECKPOINT_DIR = 'checkpoints'

# Distribution strategies `distribute.make_strategy` builds (train.py
# --strategy).
STRATEGY_KINDS = ('auto', 'tpu', 'gpu', 'multi_worker', 'cpu')

# BigGAN standing statistics for the batch norms of the EMA G and E (export
# and evaluation): 16 batches, BigGAN-PyTorch's default
# `--num_standing_accumulations`, of 64 examples.
STANDING_STATS_BATCHES = 16
STANDING_STATS_BATCH_SIZE = 64

# TF-GAN's Inception network (tfgan.eval.INCEPTION_TFHUB), for IS / FID / KID.
INCEPTION_HANDLE = 'https://tfhub.dev/tensorflow/tfgan/eval/inception/1'

# Encoder outputs usable as frozen features (the `encode` signature's
# outputs besides the sampled z); the first is the linear probe's default.
FEATURES = ('avepool_feat', 'bn_crelu_feat', 'z_mean')
PROBE_FEATURE = FEATURES[0]

# Evaluation metric names (eval/evaluate.py --metrics).
GENERATIVE_METRICS = ('is', 'fid', 'kid')
DIGIT_METRICS = ('digit_fid', 'recon_accuracy')
METRICS = (GENERATIVE_METRICS + ('linear_probe', 'grids') + DIGIT_METRICS +
           ('prdc',))
# Generated images for IS / FID / KID (the paper's and the usual protocol's
# 50K), also the cap on real eval images.
NUM_SAMPLES = 50_000
# Images per forward pass in evaluation.
EVAL_BATCH_SIZE = 100
# Maximum linear-probe epochs per learning rate (early stopping on
# train_val).
PROBE_EPOCHS = 100
# Epochs of the digit classifier when it has to be trained.
DIGIT_CLASSIFIER_EPOCHS = 8
# k of prdc's k-nearest-neighbour balls (Naeem et al. 2020 use 5).
PRDC_K = 5
