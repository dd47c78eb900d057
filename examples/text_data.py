"""IMDb and AGNews for the recurrent experiments of Lobacheva et al. (2017).

Both need the network the first time (Keras' and tensorflow_datasets'
downloads, then their caches in ``~/.keras/datasets`` and
``~/tensorflow_datasets``). They could not be run on the machine the
results in this repository come from; the loaders are here for users with
internet:

- `load_imdb`: ``keras.datasets.imdb`` (25,000 train and 25,000 test
  reviews, word ids by frequency, 2 classes);
- `load_ag_news`: ``tensorflow_datasets`` ``ag_news_subset`` (120,000
  train and 7,600 test news items, 4 classes), tokenised here with
  `keras.layers.TextVectorization` fitted on the training texts.

Each returns ``(x_train, y_train), (x_test, y_test)`` with ``x`` int32 word
ids of shape ``(N, maxlen)`` (0 is padding; sequences cut or padded at the
front, so the last words are kept next to the LSTM's output) and ``y`` int32
labels. `lstm_classifier` builds the model of the paper's text tasks
(Embedding, one LSTM, Dense), dense or Sparse VD.
"""

from __future__ import annotations

import keras
import numpy as np

import keras_sparsevd as ksvd
from examples.data import DataError


def _pad(sequences: list, maxlen: int) -> np.ndarray:
    return keras.utils.pad_sequences(
        sequences, maxlen=maxlen, padding="pre", truncating="pre", dtype="int32"
    )


def load_imdb(num_words: int = 20000, maxlen: int = 200) -> tuple:
    """IMDb reviews through ``keras.datasets.imdb`` (downloads once).

    Args:
        num_words: keep the most frequent words; the others become the
            out-of-vocabulary id (2).
        maxlen: words per review kept (the last ones).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``.

    Raises:
        DataError: if the data cannot be downloaded nor found in the cache.
    """
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.imdb.load_data(
            num_words=num_words
        )
    except Exception as e:  # noqa: BLE001 - offline machines fail in many ways
        raise DataError(
            f"keras.datasets.imdb could not load IMDb ({type(e).__name__}: {e}); "
            "it needs the network once, then reads ~/.keras/datasets/imdb.npz."
        ) from None
    return (
        (_pad(list(x_train), maxlen), np.asarray(y_train, "int32")),
        (_pad(list(x_test), maxlen), np.asarray(y_test, "int32")),
    )


def load_ag_news(num_words: int = 20000, maxlen: int = 100) -> tuple:
    """AGNews through ``tensorflow_datasets`` (``ag_news_subset``).

    The title and description are joined and tokenised by a
    `keras.layers.TextVectorization` fitted on the training texts.

    Args:
        num_words: vocabulary size, padding and out-of-vocabulary included.
        maxlen: words per item kept (the last ones).

    Returns:
        ``(x_train, y_train), (x_test, y_test)``.

    Raises:
        DataError: if tensorflow_datasets is missing or cannot load the data.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("AGNews needs tensorflow_datasets: pip install it.") from None
    try:
        splits = tfds.load("ag_news_subset", split=["train", "test"], batch_size=-1)
    except Exception as e:  # noqa: BLE001
        raise DataError(
            f"tensorflow_datasets could not load ag_news_subset ({type(e).__name__}: "
            f"{e}); it needs the network once."
        ) from None
    parts = []
    for split in tfds.as_numpy(splits):
        texts = [
            (t + b" " + d).decode("utf-8")
            for t, d in zip(split["title"], split["description"])
        ]
        parts.append((texts, np.asarray(split["label"], "int32")))
    return vectorize(parts[0], parts[1], num_words, maxlen)


def vectorize(train: tuple, test: tuple, num_words: int, maxlen: int) -> tuple:
    """Word ids of ``(texts, labels)`` pairs, vocabulary from `train` only."""
    vectorizer = keras.layers.TextVectorization(max_tokens=num_words)
    vectorizer.adapt(train[0])

    def ids(texts: list) -> np.ndarray:
        # Ragged output keeps each text's own length for the front padding.
        raw = vectorizer(texts)
        rows = [row[row != 0] for row in keras.ops.convert_to_numpy(raw)]
        return _pad(rows, maxlen)

    return (ids(train[0]), train[1]), (ids(test[0]), test[1])


def lstm_classifier(
    num_words: int,
    classes: int,
    sparse: bool,
    embedding_dim: int = 300,
    units: int = 128,
    seed: int = 0,
) -> keras.Model:
    """Embedding, LSTM(units), Dense(classes) logits; Sparse VD if `sparse`.

    Args:
        num_words: vocabulary size.
        classes: number of classes.
        sparse: `EmbeddingSVD`, `LSTMSVD` and `DenseSVD` instead of Keras'.
        embedding_dim: embedding width.
        units: LSTM units.
        seed: seed of the weight noise.

    Returns:
        An uncompiled model on int32 word ids ``(batch, maxlen)``.
    """
    if sparse:
        layers = [
            ksvd.EmbeddingSVD(num_words, embedding_dim, seed=seed, name="embedding"),
            ksvd.LSTMSVD(units, seed=seed + 1, name="lstm"),
            ksvd.DenseSVD(
                classes,
                kernel_initializer="glorot_uniform",
                seed=seed + 2,
                name="logits",
            ),
        ]
    else:
        layers = [
            keras.layers.Embedding(num_words, embedding_dim, name="embedding"),
            keras.layers.LSTM(units, name="lstm"),
            keras.layers.Dense(classes, name="logits"),
        ]
    return keras.Sequential(
        [keras.Input((None,), dtype="int32")] + layers, name="text_lstm"
    )
