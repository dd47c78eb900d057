"""`sparsify` on every kind of Keras model, on whichever backend Keras has.

Each case builds a small dense model of one kind (a functional graph with
`keras.ops` nodes, a custom layer holding Dense/EinsumDense/attention
attributes, `TimeDistributed`, `Bidirectional(LSTM)`, a subclassed model, a
tiny KerasHub backbone and task model) and runs the whole route: `sparsify`
converts every registered layer wherever it sits and keeps the model's class, the
predictions are unchanged at log sigma2 -30, two fit steps with the KL run,
`model.save` + `keras_sparsevd.load_model` give the same predictions, and
`strip_sparsevd` gives back exactly the original classes with the same
predictions. Imported by tests/test_every_model.py (TensorFlow, in-process)
and run as a script in a fresh process for JAX.
"""

from __future__ import annotations

import os
import sys
import tempfile

import keras
import numpy as np

import keras_sparsevd as ksvd
from keras_sparsevd import registry
from keras_sparsevd.convert import tree


@keras.saving.register_keras_serializable(package="every_model_scenario")
class Block(keras.layers.Layer):
    """A Transformer-style block whose layers are attributes, made in code."""

    def __init__(self, width: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.attention = keras.layers.MultiHeadAttention(2, width // 2, name="mha")
        self.mix = keras.layers.EinsumDense("btd,de->bte", (None, width), name="mix")
        self.ffn = keras.layers.Dense(width, activation="relu", name="ffn")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        self.mix.build(input_shape)
        self.ffn.build(input_shape)
        self.norm.build(input_shape)

    def call(self, x):
        h = x + self.attention(x, x)
        return self.norm(h + self.ffn(self.mix(h)))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@keras.saving.register_keras_serializable(package="every_model_scenario")
class Net(keras.Model):
    """A subclassed model whose layers are attributes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv1D(4, 3, activation="relu", name="conv")
        self.block = Block(4, name="block")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        h = self.block(self.conv(x))
        return self.head(keras.ops.mean(h, axis=1))


def ops_graph() -> tuple:
    """A functional graph with ops nodes: x + layer(x), x[:, 0], ops.mean."""
    inputs = keras.Input((5, 6))
    h = keras.layers.Dense(6, name="d1")(inputs)
    h = h + keras.layers.Dense(6, activation="relu", name="d2")(h)
    first = h[:, 0]
    pooled = keras.ops.mean(h, axis=1)
    out = keras.layers.Dense(3, name="out")(keras.ops.concatenate([first, pooled], -1))
    return keras.Model(inputs, out, name="ops_graph"), _floats((16, 5, 6))


def custom_block() -> tuple:
    inputs = keras.Input((5, 8))
    h = Block(8, name="block")(inputs)
    out = keras.layers.Dense(3, name="out")(keras.ops.mean(h, axis=1))
    return keras.Model(inputs, out, name="custom_block"), _floats((16, 5, 8))


def time_distributed() -> tuple:
    model = keras.Sequential(
        [
            keras.Input((4, 6)),
            keras.layers.TimeDistributed(keras.layers.Dense(5), name="td"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="out"),
        ],
        name="time_distributed",
    )
    return model, _floats((16, 4, 6))


def bidirectional() -> tuple:
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.Bidirectional(keras.layers.LSTM(4), name="bi"),
            keras.layers.Dense(3, name="out"),
        ],
        name="bidirectional",
    )
    return model, _floats((16, 5, 3))


def subclassed() -> tuple:
    model = Net(name="net")
    x = _floats((16, 7, 4))
    model(x[:2])
    return model, x


def hub_backbone() -> tuple:
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=40,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=12,
    )
    return backbone, _tokens(40, 12)


def hub_task() -> tuple:
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=40,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=12,
    )
    model = keras_hub.models.BertTextClassifier(
        backbone=backbone, num_classes=3, preprocessor=None
    )
    x = _tokens(40, 12)
    x["segment_ids"] = np.zeros_like(x["token_ids"])
    return model, x


CASES = {
    "ops_graph": ops_graph,
    "custom_block": custom_block,
    "time_distributed": time_distributed,
    "bidirectional": bidirectional,
    "subclassed": subclassed,
    "hub_backbone": hub_backbone,
    "hub_task": hub_task,
}


def _floats(shape: tuple) -> np.ndarray:
    return np.random.default_rng(0).random(shape).astype("float32")


def _tokens(vocabulary: int, length: int) -> dict:
    ids = np.random.default_rng(0).integers(0, vocabulary, (16, length))
    return {"token_ids": ids.astype("int32"), "padding_mask": np.ones_like(ids)}


def classes(model: keras.Model) -> list:
    return [type(model)] + [type(node.layer) for node in tree.walk(model)]


def _predict(model: keras.Model, x) -> np.ndarray:
    out = model.predict(x, batch_size=16, verbose=0)
    if isinstance(out, dict):
        out = out["sequence_output"]
    return np.asarray(out, dtype="float32")


def check(name: str) -> dict:
    keras.utils.set_random_seed(0)
    dense, x = CASES[name]()
    expected = _predict(dense, x)
    sparse = ksvd.sparsify(dense, log_sigma2_initializer=-30.0, verbose=False)
    assert type(sparse) is type(dense), (name, type(sparse))
    left = [
        node.path
        for node in tree.walk(sparse)
        if registry.pair_for_plain(node.layer) is not None
    ]
    assert not left, (name, "not converted", left)
    converted = len(ksvd.svd_layers(sparse))
    assert converted > 0, name
    # The input model is untouched.
    assert not ksvd.svd_layers(dense), name
    np.testing.assert_allclose(_predict(sparse, x), expected, atol=1e-5)

    if name == "hub_task":
        y = np.argmax(expected, -1)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        y, loss = expected + 1.0, "mse"
    sparse.compile(optimizer="adam", loss=loss)
    history = sparse.fit(
        x, y, batch_size=8, epochs=1, verbose=0, callbacks=[ksvd.KLScheduler(16, 0, 1)]
    )
    assert np.isfinite(history.history["loss"]).all(), name
    after = _predict(sparse, x)
    assert not np.allclose(after, expected), (name, "fit changed nothing")

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        sparse.save(path)
        loaded = ksvd.load_model(path)
    assert classes(loaded) == classes(sparse), name
    np.testing.assert_allclose(_predict(loaded, x), after, atol=1e-5)

    stripped = ksvd.strip_sparsevd(sparse)
    assert classes(stripped) == classes(dense), (name, classes(stripped))
    np.testing.assert_allclose(_predict(stripped, x), after, atol=1e-5)
    return {"converted": converted}


def run() -> dict:
    return {name: check(name) for name in CASES}


if __name__ == "__main__":
    results = run()
    print("every model:", results)
    sys.exit(0)
