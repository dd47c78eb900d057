"""The KL term of Sparse Variational Dropout: the maths, nothing else.

Model-level helpers (finding the layers, setting their KL weight) live in
`keras_sparsevd.model_helpers`, so that the layers can import this module
and nothing here imports the layers.
"""

from __future__ import annotations

from typing import Any

from keras import ops

# Molchanov et al. (2017), eq. 14: a fit of -KL(q || log-uniform prior).
K1 = 0.63576
K2 = 1.87320
K3 = 1.48695

# The authors' code clips log alpha to this range; outside it the KL has no
# gradient, which stops log_sigma2 from running off to infinity.
LOG_ALPHA_MIN = -8.0
LOG_ALPHA_MAX = 8.0


def kl_divergence(log_alpha: Any) -> Any:
    """Elementwise approximate KL(q(w) || log-uniform prior).

    Uses the approximation of Molchanov et al. (2017):
    ``KL ~= k1 - k1 * sigmoid(k2 + k3 * log_alpha) + 0.5 * log1p(exp(-log_alpha))``
    with ``k1, k2, k3 = 0.63576, 1.87320, 1.48695``. It is about 0 for large
    ``log_alpha`` (pure-noise weights) and grows as ``log_alpha`` falls.

    Args:
        log_alpha: tensor of log dropout rates, any shape. Computed in
            float32 whatever its dtype, because float16 underflows here.

    Returns:
        A float32 tensor of the same shape.

    Example:

    >>> import numpy as np
    >>> kl = kl_divergence(np.array([-8.0, 0.0, 8.0], "float32"))
    """
    log_alpha = ops.cast(log_alpha, "float32")
    # softplus(-x) == log1p(exp(-x)), without overflow for very negative x.
    return K1 - K1 * ops.sigmoid(K2 + K3 * log_alpha) + 0.5 * ops.softplus(-log_alpha)
