"""Each use of Keras internals (`keras_sparsevd._keras_compat`) against the
installed Keras: if Keras changes one, this fails before anything else."""

import h5py
import keras
import numpy as np
import pytest

from keras_sparsevd import _keras_compat as compat


@pytest.mark.all_backends
def test_sublayers_and_own_variables():
    mha = keras.layers.MultiHeadAttention(2, 4, name="mha")
    x = keras.Input((3, 8))
    mha(x, x)
    names = [layer.name for layer in compat.sublayers(mha)]
    assert names == ["query", "key", "value", "softmax", "dropout", "attention_output"]
    dense = compat.sublayers(mha)[0]
    assert [v.name for v in compat.own_variables(dense)] == ["kernel", "bias"]
    assert compat.own_variables(mha) == []
    for attr in ("_query_dense", "_key_dense", "_value_dense", "_output_dense"):
        assert isinstance(getattr(mha, attr), keras.layers.EinsumDense), attr


@pytest.mark.all_backends
def test_unlocked_untrack_and_order():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    with compat.unlocked(layer):
        extra = layer.add_weight(name="extra", shape=(3, 2))
    assert [v.name for v in compat.own_trainable_variables(layer)] == [
        "kernel",
        "bias",
        "extra",
    ]
    kernel, bias, _ = compat.own_trainable_variables(layer)
    compat.set_own_order(layer, [kernel, extra, bias], [])
    assert [v.name for v in layer.trainable_variables] == ["kernel", "extra", "bias"]
    with compat.unlocked(layer):
        compat.untrack(layer, extra)
    assert [v.name for v in layer.weights] == ["kernel", "bias"]
    assert layer._tracker.locked  # locked again


@pytest.mark.all_backends
def test_refresh_call_signature_follows_a_new_class():
    class WithTraining(keras.layers.Conv1D):
        def call(self, inputs, training=None):
            return super().call(inputs)

    layer = keras.layers.Conv1D(2, 1)
    assert not layer._call_has_training_arg
    layer.__class__ = WithTraining
    compat.refresh_call_signature(layer)
    assert layer._call_has_training_arg


@pytest.mark.all_backends
def test_store_paths_are_where_model_save_puts_the_weights(tmp_path):
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="b")(h))
    places = compat.store_paths(model)
    model.save(tmp_path / "m.keras")
    import zipfile

    zipfile.ZipFile(tmp_path / "m.keras").extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5", "r") as f:
        for name in ("a", "b"):
            path = places[id(model.get_layer(name))]
            assert f"{path}/vars/0" in f, (path, list(f["layers"]))
    entries = compat.saved_entries(str(tmp_path / "model.weights.h5"), "0")
    assert np.asarray(entries[places[id(model.get_layer("a"))]]).shape == (3, 4)


@pytest.mark.all_backends
def test_input_sources_name_the_producing_layer_and_shape():
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3)
    flatten = keras.layers.Flatten()
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(flatten(conv(inputs))))
    assert compat.input_sources(dense) == [(flatten, (None, 48))]
    assert compat.input_sources(flatten) == [(conv, (None, 4, 4, 3))]
    # A model input has no producing layer.
    assert compat.input_sources(conv) == [(None, (None, 6, 6, 2))]
    # A layer never called in a graph has none.
    assert compat.input_sources(keras.layers.Dense(2)) == []
    assert model.output_shape == (None, 2)
