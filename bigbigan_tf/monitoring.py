"""Collapse signals during training: singular values and a warning rule.

BigGAN (Brock et al. 2018, arXiv 1809.11096, section 4.1) tracks the largest
singular value sigma_0 of every weight matrix: most of G's layers stay well
behaved, but some (typically G's first, over-complete linear layer) grow
throughout training and explode at collapse; D's are noisier, grow slowly
and jump at collapse (section 4.2), when D's loss also jumps. Both signals
are cheap here: each spectrally normalised layer already holds its power
iteration vector u, so sigma_0 ~ |W u| is one matrix-vector product, no SVD.

The warning rule (`CollapseDetector`) asks, for every signal (each layer's
sigma_0 and each head's real - fake mean score gap of D), whether the newest
logged value lies far outside its trailing window of the last `window`
logged values:

    |value - median| > max(k * 1.4826 * MAD, rel * |median|, abs_margin)

with MAD the median absolute deviation from the median (1.4826 * MAD is the
standard deviation for Gaussian noise, and unlike it is not inflated by the
spike it should detect). The median and MAD are robust, so a noisy but
steady signal does not warn; slow growth (which BigGAN reports for healthy
runs too) keeps the newest value within a few MADs of the trailing median; a
jump or an explosion does not. The `rel` and `abs_margin` floors keep a near
constant signal (MAD ~ 0) from warning on a small wobble. Two-sided: D's
gap collapses as D's loss jumps up. No warning before `warmup` values are
known (early training moves fast). One warning per excursion: a signal that
warned warns again only after a value back inside its range. Training never
stops on a warning; the user decides.

Defaults: window 50 logs, warm-up 10, k = 8, rel = 0.5, abs_margin = 0.25.
k = 8 rather than the textbook 3-5 because the MAD of 10-50 values is itself
noisy and every layer is tested at every log: the defaults raised no warning
on 60 steady series of 2,000 logs (Gaussian noise of 20%, uniform +/- 40%,
noise of 0.05 about zero; 20 seeds each), where window 20 and k = 6 raised 10.
"""

import collections
from typing import Dict, List, Mapping, NamedTuple, Optional

import keras
import numpy as np

from bigbigan_tf import losses
from bigbigan_tf.models import layers

# The layer types that hold a spectral-norm estimate.
SPECTRAL_NORM_LAYERS = (layers.SNDense, layers.SNConv2D)
# 1.4826 * MAD estimates a Gaussian's standard deviation.
_MAD_TO_STD = 1.4826


def spectral_norm_layers(network: keras.layers.Layer
                         ) -> Dict[str, keras.layers.Layer]:
  """Every spectrally normalised layer inside `network`, by its path.

  Args:
    network: a built Keras layer or model (G, or D).

  Returns:
    {path relative to the network (e.g. 'block0/conv1'): layer}, sorted.
  """
  prefix = network.path + '/'
  found = {}
  # Keras 3 has no public recursive walk; export_lib uses the same one.
  for layer in network._flatten_layers(include_self=False, recursive=True):  # pylint: disable=protected-access
    if isinstance(layer, SPECTRAL_NORM_LAYERS):
      path = layer.path
      found[path[len(prefix):] if path.startswith(prefix) else path] = layer
  return dict(sorted(found.items()))


def singular_values(networks: Mapping[str, keras.layers.Layer]
                    ) -> Dict[str, Dict[str, float]]:
  """The largest singular value of every spectrally normalised layer.

  Read from each layer's power-iteration estimate (`spectral_norm_estimate`,
  |W u| for the stored u): no update of u, no SVD.

  Args:
    networks: {name: network}, e.g. {'generator': G, 'discriminator': D}.

  Returns:
    {network name: {layer path: sigma_0 >= 0}}.
  """
  return {name: {path: float(layer.spectral_norm_estimate())
                 for path, layer in spectral_norm_layers(net).items()}
          for name, net in networks.items()}


def summary_scalars(svs: Mapping[str, Mapping[str, float]]
                    ) -> Dict[str, float]:
  """TensorBoard tags for `singular_values`' output.

  Returns:
    {'sv/NETWORK/LAYER_PATH': sigma_0, ..., 'sv_max/NETWORK': the largest
    of the network's} (no sv_max for a network without such layers).
  """
  out = {}
  for name, values in svs.items():
    out.update({f'sv/{name}/{path}': v for path, v in values.items()})
    if values:
      out[f'sv_max/{name}'] = max(values.values())
  return out


def collapse_signals(metrics: Mapping[str, float],
                     svs: Mapping[str, Mapping[str, float]]
                     ) -> Dict[str, float]:
  """The signals `CollapseDetector` watches, from one log step.

  Args:
    metrics: the training loop's metrics (with 'd/real_HEAD', 'd/fake_HEAD'
      for each of losses.HEADS, means over the steps since the last log).
    svs: `singular_values` output.

  Returns:
    {'d_gap/HEAD': mean real score - mean fake score, 'sv/NET/PATH': sigma_0}.
  """
  out = {f'd_gap/{head}': metrics[f'd/real_{head}'] - metrics[f'd/fake_{head}']
         for head in losses.HEADS}
  for name, values in svs.items():
    out.update({f'sv/{name}/{path}': v for path, v in values.items()})
  return out


def encoder_noise(encoder: keras.layers.Layer, images) -> Dict[str, float]:
  """How much of E's code is signal and how much is noise, on fixed images.

  A stochastic E can match the prior by noise alone: z = mu + sigma * eps
  with sigma near 1 and the means mu bunched together carries little of x
  (an earlier offline default failed that way: sigma 0.7 while the means
  spread 0.45). The two numbers below show that coming. They are computed
  with E in inference mode (its batch-norm statistics untouched) on a fixed
  batch, outside the compiled training step.

  Args:
    encoder: E (returns 'z_mean' and 'z_stdev', [B, z_dim]).
    images: [B, R_E, R_E, 3] in [-1, 1], B >= 2.

  Returns:
    {'encoder/mu_spread': the standard deviation of mu across the batch,
     averaged over z's dimensions (the prior's is 1),
     'encoder/sigma_mean': the mean of sigma (stochastic E only; a
     deterministic E ignores its sigma, so it is not reported),
     'encoder/sigma_to_mu_spread': their ratio (stochastic E only)}.
  """
  out = encoder(images, training=False)
  mu = np.asarray(out['z_mean'], np.float64)
  spread = float(np.mean(np.std(mu, axis=0)))
  signals = {'encoder/mu_spread': spread}
  if getattr(encoder, 'stochastic', True):
    sigma = float(np.mean(np.asarray(out['z_stdev'], np.float64)))
    signals['encoder/sigma_mean'] = sigma
    signals['encoder/sigma_to_mu_spread'] = sigma / max(spread, 1e-12)
  return signals


class Alarm(NamedTuple):
  """A signal outside its trailing range at one log step."""
  step: int
  signal: str
  value: float
  median: float  # of the trailing window (the value not included)
  margin: float  # the allowed |value - median|
  window: int  # values in the trailing window


class CollapseDetector:
  """Warns when a signal leaves its trailing range (rule: module docstring).

  Feed it one value per signal per log step with `update`. The history lives
  in memory only: after a resume it warms up again.
  """

  def __init__(self, *, window: int = 50, warmup: int = 10, k: float = 8.0,
               rel: float = 0.5, abs_margin: float = 0.25):
    """Sets the rule's constants.

    Args:
      window: trailing values the range is taken over (log steps).
      warmup: values a signal needs before it can warn, in [2, window].
      k: allowed distance from the median in robust standard deviations.
      rel: floor of the allowed distance, as a fraction of |median|.
      abs_margin: floor of the allowed distance, in the signal's units.

    Raises:
      ValueError: a constant out of range (named in the message).
    """
    if not 2 <= warmup <= window:
      raise ValueError(f'Need 2 <= warmup <= window; got warmup={warmup}, '
                       f'window={window}.')
    if k <= 0 or rel < 0 or abs_margin < 0:
      raise ValueError(f'Need k > 0, rel >= 0, abs_margin >= 0; got k={k}, '
                       f'rel={rel}, abs_margin={abs_margin}.')
    self.window, self.warmup = window, warmup
    self.k, self.rel, self.abs_margin = k, rel, abs_margin
    self._history: Dict[str, collections.deque] = {}
    self._alarmed: set = set()

  def margin(self, history: np.ndarray) -> tuple[float, float]:
    """(median, allowed |value - median|) of a trailing window."""
    median = float(np.median(history))
    mad = float(np.median(np.abs(history - median)))
    return median, max(self.k * _MAD_TO_STD * mad, self.rel * abs(median),
                       self.abs_margin)

  def update(self, step: int, signals: Mapping[str, float]) -> List[Alarm]:
    """Checks the newest values against their history, then records them.

    Args:
      step: the training step the values were logged at.
      signals: {signal name: value}; non-finite values are ignored (the loop
        stops on a non-finite loss anyway).

    Returns:
      The alarms raised at this step (empty when all is in range).
    """
    alarms = []
    for name, value in signals.items():
      value = float(value)
      if not np.isfinite(value):
        continue
      history = self._history.setdefault(
          name, collections.deque(maxlen=self.window))
      if len(history) >= self.warmup:
        median, margin = self.margin(np.asarray(history))
        if abs(value - median) > margin:
          if name not in self._alarmed:
            alarms.append(Alarm(step, name, value, median, margin,
                                len(history)))
            self._alarmed.add(name)
        else:
          self._alarmed.discard(name)
      history.append(value)
    return alarms


def describe(alarm: Alarm, *, checkpoint: Optional[str]) -> str:
  """The log line for an alarm: step, signal, values, last checkpoint."""
  direction = 'rose' if alarm.value > alarm.median else 'fell'
  return (
      f'Possible collapse at step {alarm.step}: {alarm.signal} {direction} to '
      f'{alarm.value:.4g}, outside its recent range (median {alarm.median:.4g}'
      f' +/- {alarm.margin:.4g} over the last {alarm.window} logs). Last '
      f'checkpoint: {checkpoint or "none yet"}. Training continues; if the '
      'samples degrade, stop the run, remove the later ckpt-* files and '
      'resume from that checkpoint (e.g. with lower learning rates).')
