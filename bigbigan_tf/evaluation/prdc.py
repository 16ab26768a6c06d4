"""Improved precision / recall and density / coverage of generated features.

Pure NumPy functions of two feature sets: real X [N, D] and fake Y [M, D]
(FID's features: Inception pool_3, or the digit classifier's offline).
Each point's k-NN radius is the distance to its k-th nearest neighbour in
its own set, the point itself excluded (by index, so duplicates count).

  precision = fraction of fakes inside some real point's k-NN ball
  recall    = fraction of reals inside some fake point's k-NN ball
              (Kynkaenniemi et al. 2019, arXiv 1904.06991, eq. 1-3: closed
              balls, distance <= radius, as in their code)
  density   = sum over fakes of the number of real balls holding it, / (k M)
  coverage  = fraction of reals whose ball holds at least one fake
              (Naeem et al. 2020, arXiv 2002.09797, eq. 3-4: open balls,
              distance < radius, as in their reference code; so identical
              sets give density exactly 1, not (k + 1) / k)

The conventions differ only on exact ties (duplicates), never on
continuous features. k must be < N and < M: a k-th neighbour other than the
point itself must exist (ValueError otherwise).

Memory: distances are computed `block_size` rows at a time against a whole
set, so besides the features the peak is about four [block_size, max(N, M)]
arrays (squared distances in the features' float dtype, the matmul, a
partition copy, boolean masks): for N = M = 50,000, block_size = 500 and
float32 about 4 x 500 x 50,000 x 4 B = 400 MB, whatever N x M is
(tracemalloc measured a 160 MB peak at N = M = 20,000).
"""

from typing import Dict

import numpy as np

from bigbigan_tf import defaults

DEFAULT_K = defaults.PRDC_K
DEFAULT_BLOCK_SIZE = 500


def _sq_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray
                  ) -> np.ndarray:
  """|a_i - b_j|^2 [len(a), len(b)], clipped at 0 (rounding)."""
  d = np.sum(a * a, axis=1, keepdims=True) + b_sq[None, :] - 2.0 * (a @ b.T)
  return np.maximum(d, 0.0, out=d)


def knn_sq_radii(x: np.ndarray, k: int, *,
                 block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
  """Squared distance of each point to its k-th nearest other point.

  Args:
    x: [N, D] points, N > k.
    k: neighbour rank, >= 1.
    block_size: rows of the distance matrix held at once.

  Returns:
    [N] squared radii.
  """
  n = len(x)
  x_sq = np.sum(x * x, axis=1)
  out = np.empty(n, x.dtype)
  for start in range(0, n, block_size):
    stop = min(start + block_size, n)
    d = _sq_distances(x[start:stop], x, x_sq)
    rows = np.arange(stop - start)
    d[rows, start + rows] = np.inf  # Not its own neighbour.
    out[start:stop] = np.partition(d, k - 1, axis=1)[:, k - 1]
  return out


def _check(real, fake, k, block_size):
  real, fake = np.asarray(real), np.asarray(fake)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f'Need real [N, D] and fake [M, D] features; got shapes '
                     f'{real.shape} and {fake.shape}.')
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f'Need an integer k >= 1; got k={k!r}.')
  if k >= len(real) or k >= len(fake):
    raise ValueError(
        f'k={k} needs more than k points in each set (a k-th neighbour other '
        f'than the point itself); got {len(real)} real and {len(fake)} fake. '
        'Lower k or use more samples.')
  if block_size < 1:
    raise ValueError(f'Need block_size >= 1; got {block_size}.')
  if not (np.all(np.isfinite(real)) and np.all(np.isfinite(fake))):
    raise ValueError('The features hold NaN or infinite values.')
  dtype = np.result_type(real.dtype, fake.dtype, np.float32)
  return real.astype(dtype, copy=False), fake.astype(dtype, copy=False)


def prdc(real: np.ndarray, fake: np.ndarray, *, k: int = DEFAULT_K,
         block_size: int = DEFAULT_BLOCK_SIZE) -> Dict[str, float]:
  """Precision, recall, density and coverage of `fake` against `real`.

  Args:
    real: [N, D] features of real images.
    fake: [M, D] features of generated images.
    k: the k of the k-NN balls (5 in both papers' recommendations).
    block_size: rows of each distance block (memory: module docstring).

  Returns:
    {'precision', 'recall', 'coverage'} in [0, 1] and 'density' in
    [0, N / k] (about 1 when fake and real match in distribution).

  Raises:
    ValueError: bad shapes, k >= N or M, non-finite features.
  """
  real, fake = _check(real, fake, k, block_size)
  real_r2 = knn_sq_radii(real, k, block_size=block_size)
  fake_r2 = knn_sq_radii(fake, k, block_size=block_size)
  real_sq = np.sum(real * real, axis=1)
  in_real_ball = 0  # Fakes inside some real ball (closed).
  density_count = 0  # (fake, real ball) pairs, open balls.
  real_recalled = np.zeros(len(real), bool)  # Inside some fake ball.
  nearest_fake = np.full(len(real), np.inf, real.dtype)
  for start in range(0, len(fake), block_size):
    stop = min(start + block_size, len(fake))
    d = _sq_distances(fake[start:stop], real, real_sq)  # [b, N]
    in_real_ball += int(np.count_nonzero(
        np.any(d <= real_r2[None, :], axis=1)))
    density_count += int(np.count_nonzero(d < real_r2[None, :]))
    real_recalled |= np.any(d <= fake_r2[start:stop, None], axis=0)
    np.minimum(nearest_fake, d.min(axis=0), out=nearest_fake)
  return {
      'precision': in_real_ball / len(fake),
      'recall': float(np.mean(real_recalled)),
      'density': density_count / (k * len(fake)),
      'coverage': float(np.mean(nearest_fake < real_r2)),
  }
