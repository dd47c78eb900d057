"""The paper's models, each as a Sparse VD net and as a dense baseline.

Every model takes images as float32 in [0, 1] in their natural shape
((28, 28, 1) for MNIST, (32, 32, 3) for CIFAR): the paper's preprocessing
lives inside the model, in built-in Keras layers, so an exported net serves
raw images and needs no code of this package.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

import keras_sparsevd as ksvd

MODELS = ("lenet300", "lenet5", "vgglike")


def mnist_preprocessing(mean_image: np.ndarray | None) -> list:
    """The authors' MNIST preprocessing: pixels / 256 minus the mean image.

    Inputs are pixels / 255, hence the rescaling by 255 / 256 first.
    """
    layers = [keras.layers.Rescaling(255.0 / 256.0, name="to_paper_scale")]
    if mean_image is not None:
        mean = np.asarray(mean_image, "float32") * (255.0 / 256.0)
        layers.append(
            keras.layers.Normalization(
                axis=(1, 2, 3),
                mean=mean,
                variance=np.ones_like(mean),
                name="subtract_mean_image",
            )
        )
    return layers


def lenet300(
    sparse: bool = True,
    num_classes: int = 10,
    input_shape: tuple = (28, 28, 1),
    mean_image: np.ndarray | None = None,
    threshold: float = 3.0,
    train_clip: bool = True,
    structured: bool = False,
) -> keras.Model:
    """LeNet-300-100: 784-300-100-10, ReLU; all layers Sparse VD if `sparse`.

    With `structured`, every Sparse VD layer also has group variables on its
    input units (``group_sparsity=True``), so whole units are pruned.
    """

    def dense(units: int, activation: str | None, name: str) -> keras.layers.Layer:
        if sparse:
            return ksvd.DenseSVD(
                units,
                activation=activation,
                threshold=threshold,
                train_clip=train_clip,
                group_sparsity=structured,
                name=name,
            )
        return keras.layers.Dense(units, activation=activation, name=name)

    return keras.Sequential(
        [keras.Input(input_shape)]
        + mnist_preprocessing(mean_image)
        + [
            keras.layers.Flatten(),
            dense(300, "relu", "fc1"),
            dense(100, "relu", "fc2"),
            dense(num_classes, None, "fc3"),
        ],
        name=("svd_" if sparse else "dense_") + "lenet300",
    )


def lenet5(
    sparse: bool = True,
    num_classes: int = 10,
    input_shape: tuple = (28, 28, 1),
    mean_image: np.ndarray | None = None,
    threshold: float = 3.0,
    train_clip: bool = True,
    structured: bool = False,
    channel_groups: bool = False,
) -> keras.Model:
    """LeNet-5-Caffe: conv 20@5x5, pool, conv 50@5x5, pool, dense 500, dense 10.

    With `structured`, every Sparse VD layer also has group variables on its
    input channels or units (``group_sparsity=True``). With `channel_groups`
    as well, fc1's groups are one per conv2 filter (50, shared over the 16
    positions of the flattened 4x4 map; ``group_channels=50``) instead of one
    per flattened input (800), so that they prune whole filters of conv2.
    """
    if channel_groups and not (sparse and structured):
        raise ValueError("`channel_groups` needs `sparse` and `structured`.")
    svd = (
        {"threshold": threshold, "train_clip": train_clip, "group_sparsity": structured}
        if sparse
        else {}
    )
    conv = ksvd.Conv2DSVD if sparse else keras.layers.Conv2D
    dense = ksvd.DenseSVD if sparse else keras.layers.Dense
    return keras.Sequential(
        [keras.Input(input_shape)]
        + mnist_preprocessing(mean_image)
        + [
            conv(20, 5, name="conv1", **svd),
            keras.layers.MaxPooling2D(2, name="pool1"),
            conv(50, 5, name="conv2", **svd),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(),
            dense(
                500,
                activation="relu",
                name="fc1",
                **svd,
                **({"group_channels": 50} if channel_groups else {}),
            ),
            dense(num_classes, name="fc2", **svd),
        ],
        name=("svd_" if sparse else "dense_") + "lenet5",
    )


def channel_standardisation(images: np.ndarray) -> list:
    """Per-channel (x - mean) / std of the training images, as a layer."""
    mean = images.mean(axis=(0, 1, 2))
    std = images.std(axis=(0, 1, 2))
    return [
        keras.layers.Normalization(
            axis=-1, mean=mean, variance=np.square(std), name="standardise"
        )
    ]


def zca_whitening(images: np.ndarray, epsilon: float = 1e-2) -> list:
    """ZCA whitening of the training images, as built-in Keras layers.

    ``(x - mean) @ W`` with ``W = U diag(1 / sqrt(s + epsilon)) U^T`` from the
    eigendecomposition of the pixel covariance: a frozen Dense layer between
    a Flatten and a Reshape, so the saved model whitens raw [0, 1] images.

    Args:
        images: training images (N, H, W, C), float in [0, 1].
        epsilon: added to the eigenvalues; limits the gain on noise.
    """
    shape = images.shape[1:]
    flat = images.reshape(len(images), -1).astype("float64")
    mean = flat.mean(axis=0)
    centred = flat - mean
    eigval, eigvec = np.linalg.eigh(centred.T @ centred / len(flat))
    w = (eigvec / np.sqrt(np.maximum(eigval, 0.0) + epsilon)) @ eigvec.T
    matrix = keras.layers.Dense(flat.shape[1], trainable=False, name="zca_matrix")
    matrix.build((None, flat.shape[1]))
    # The mean is folded into the bias: (x - m) W = x W - m W.
    matrix.set_weights([w.astype("float32"), (-mean @ w).astype("float32")])
    return [
        keras.layers.Flatten(name="zca_flatten"),
        matrix,
        keras.layers.Reshape(shape, name="zca_reshape"),
    ]


VGG_WIDTHS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def vgglike(
    sparse: bool = True,
    num_classes: int = 10,
    input_shape: tuple = (32, 32, 3),
    k: float = 1.0,
    preprocessing: list | None = None,
    threshold: float = 3.0,
    log_sigma2_init: float = -15.0,
) -> keras.Model:
    """VGG-like of the paper: 13 conv 3x3 + BN + ReLU, dense 512k + BN, dense.

    The dense baseline uses binary dropout (0.3 after the first conv of a
    block... 0.4 after the others, 0.5 before each dense layer), as the
    paper's pretrained nets did; the Sparse VD version has no dropout.
    `preprocessing` (e.g. `zca_whitening(x_train)` as in the paper, or
    `channel_standardisation(x_train)`) goes first, inside the model.
    """
    if k <= 0:
        raise ValueError(f"`k` (width scale) must be > 0, got {k}.")
    svd = (
        {
            "threshold": threshold,
            "log_sigma2_initializer": keras.initializers.Constant(log_sigma2_init),
        }
        if sparse
        else {}
    )
    conv = ksvd.Conv2DSVD if sparse else keras.layers.Conv2D
    dense = ksvd.DenseSVD if sparse else keras.layers.Dense
    layers: list = [keras.Input(input_shape)]
    layers += list(preprocessing or [])
    conv_index = 0
    first_in_block = True
    for item in VGG_WIDTHS:
        if item == "M":
            layers.append(keras.layers.MaxPooling2D(2))
            first_in_block = True
            continue
        conv_index += 1
        width = max(1, int(round(item * k)))
        layers += [
            conv(
                width,
                3,
                padding="same",
                use_bias=False,
                name=f"conv{conv_index}",
                **svd,
            ),
            keras.layers.BatchNormalization(name=f"bn{conv_index}"),
            keras.layers.ReLU(),
        ]
        if not sparse:
            layers.append(keras.layers.Dropout(0.3 if first_in_block else 0.4))
        first_in_block = False
    layers.append(keras.layers.Flatten())
    if not sparse:
        layers.append(keras.layers.Dropout(0.5))
    layers += [
        dense(max(1, int(round(512 * k))), use_bias=False, name="fc1", **svd),
        keras.layers.BatchNormalization(name="bn_fc1"),
        keras.layers.ReLU(),
    ]
    if not sparse:
        layers.append(keras.layers.Dropout(0.5))
    layers.append(dense(num_classes, name="fc2", **svd))
    return keras.Sequential(layers, name=("svd_" if sparse else "dense_") + "vgglike")


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "lenet300": lenet300,
    "lenet5": lenet5,
    "vgglike": vgglike,
}
