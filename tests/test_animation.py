"""examples.animation: the GIF of Sparse VD's weights over the epochs."""

import keras
import numpy as np
import pytest
from PIL import Image

import keras_sparsevd as ksvd
from examples import animation, train, weight_frames, weight_gif
from examples.weight_frames import Panel

RNG = np.random.default_rng(5)
# Small panels: fc1 of the tiny net has 64 inputs and 16 units.
PANELS = [Panel("conv1", "filters"), Panel("fc1", "block", 8, pool=8)]
# fc1's block shows inputs 28..35 (the middle 8 of 64): its third row is 30.
PRUNED_FC1_INPUT = 30


def tiny_lenet5() -> keras.Model:
    """LeNet-5's layout and layer names at toy size: 12x12 images, 3 classes."""
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            ksvd.Conv2DSVD(4, 5, name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Flatten(),
            ksvd.DenseSVD(16, activation="relu", name="fc1"),
            ksvd.DenseSVD(3, name="fc2"),
        ],
        name="tiny_lenet5",
    )


def prune_some(model: keras.Model) -> None:
    """Sets log sigma^2 = 8 on conv1's filter 0 and fc1's input 30.

    Their log alpha is then >= 3 (theta^2 < 1), so they are masked, and
    stay so over a few epochs of Adam at 1e-3.
    """
    for name, index in (("conv1", (..., 0)), ("fc1", PRUNED_FC1_INPUT)):
        log_sigma2 = model.get_layer(name).log_sigma2
        value = keras.ops.convert_to_numpy(log_sigma2)
        value[index] = 8.0
        log_sigma2.assign(value)


def fit(model: keras.Model, callbacks: list, epochs: int, x=None, y=None):
    if x is None:
        x = RNG.random((32, 12, 12, 1)).astype("float32")
        y = RNG.integers(0, 3, 32)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Two steps an epoch: tracing a tf.function would cost more.
        run_eagerly=True,
    )
    return model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        verbose=0,
        callbacks=[ksvd.KLScheduler(len(x), 0, 0)] + callbacks,
    )


def gif_frames(path) -> list:
    with Image.open(path) as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def pixel(frame: np.ndarray, box: tuple) -> tuple:
    x0, y0, x1, y1 = box
    colours = {tuple(c) for c in frame[y0:y1, x0:x1].reshape(-1, 3)}
    assert len(colours) == 1, "one weight is one flat square of colour"
    return colours.pop()


@pytest.mark.slow
def test_gif_has_a_frame_per_epoch_and_pruned_weights_grey(tmp_path):
    model = tiny_lenet5()
    prune_some(model)
    gif, frames_dir = tmp_path / "weights.gif", tmp_path / "frames"
    fit(model, [animation.WeightAnimation(gif, frames_dir, PANELS)], epochs=3)

    images = gif_frames(gif)
    assert len(images) == 4  # before training and after each epoch
    frames = weight_frames.Frames.load(frames_dir)
    assert frames.epochs == [0, 1, 2, 3]
    renderer = weight_gif.Renderer(frames)
    conv1, fc1 = model.get_layer("conv1"), model.get_layer("fc1")
    conv_mask = keras.ops.convert_to_numpy(conv1.kernel_mask)
    # The largest weights, kept all along.
    theta = keras.ops.convert_to_numpy(conv1.kernel)
    big = np.abs(theta[:, :, 0, 1])
    kept_filter_weight = np.unravel_index(np.argmax(big), big.shape)
    row_above = keras.ops.convert_to_numpy(fc1.kernel)[PRUNED_FC1_INPUT - 1, :8]
    kept_fc1_unit = int(np.argmax(np.abs(row_above)))
    grey = weight_gif.PRUNED_RGB
    for image in images:
        # Every weight of filter 0 is pruned: grey squares.
        for row, col in [(0, 0), (2, 2), (4, 3)]:
            assert pixel(image, renderer.weight_box(0, 0, row, col)) == grey
        # So is fc1's input 30, the block's third row; the row above is not.
        for unit in range(8):
            assert pixel(image, renderer.weight_box(1, 0, 2, unit)) == grey
        kept = pixel(image, renderer.weight_box(1, 0, 1, kept_fc1_unit))
        assert kept != grey and kept != weight_gif.BACKGROUND_RGB
        assert pixel(image, renderer.weight_box(0, 1, *kept_filter_weight)) != grey
    # The GIF is the Renderer's frames, colour for colour (fixed palette).
    last = np.asarray(renderer.image(3).convert("RGB"))
    np.testing.assert_array_equal(images[-1], last)
    # Recorded values are the kernel where kept, NaN where pruned.
    recorded = frames.records[-1]["tiles"][0].astype("float32")
    assert np.isnan(recorded[0]).all()
    np.testing.assert_allclose(
        recorded[1],
        np.where(conv_mask[:, :, 0, 1] > 0, theta[:, :, 0, 1], np.nan),
        rtol=1e-3,
        atol=1e-4,
    )


@pytest.mark.slow
def test_resumed_run_keeps_its_frames_and_drops_lost_ones(tmp_path):
    """BackupAndRestore as in examples.train: interrupted after 2 epochs."""
    x = RNG.random((32, 12, 12, 1)).astype("float32")
    y = RNG.integers(0, 3, 32)
    gif, frames_dir = tmp_path / "weights.gif", tmp_path / "frames"

    class Killed(Exception):
        pass

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Killed

    def callbacks(*extra):
        return [
            animation.WeightAnimation(gif, frames_dir, PANELS),
            keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
            *extra,
        ]

    with pytest.raises(Killed):
        fit(tiny_lenet5(), callbacks(Interrupt()), epochs=4, x=x, y=y)
    assert not gif.exists()
    assert weight_frames.Frames.load(frames_dir).epochs == [0, 1, 2]
    before = weight_frames.Frames.load(frames_dir).records[1]["tiles"][0]
    # A frame saved after the last backup, as if killed between the two.
    (frames_dir / "epoch_0003.npz").write_bytes(
        (frames_dir / "epoch_0002.npz").read_bytes()
    )

    keras.utils.clear_session()
    fit(tiny_lenet5(), callbacks(), epochs=4, x=x, y=y)
    frames = weight_frames.Frames.load(frames_dir)
    assert frames.epochs == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(frames.records[1]["tiles"][0], before)
    assert len(gif_frames(gif)) == 5
    # Epoch 3 was trained again: its frame is new, not the stale copy.
    assert not np.array_equal(
        frames.records[3]["tiles"][1], frames.records[2]["tiles"][1], equal_nan=True
    )


def test_every_and_the_default_panels_of_the_example_models(tmp_path):
    from examples import models

    lenet5 = models.lenet5()
    assert weight_frames.default_panels(lenet5) == [
        Panel("conv1", "filters"),
        Panel("fc1", "block", 40),
    ]
    record = weight_frames.record_frame(lenet5, weight_frames.default_panels(lenet5))
    # 20 filters 5x5; a pool of 160 middle inputs x 160 units of fc1.
    assert [t.shape for t in record["tiles"]] == [(20, 5, 5), (1, 160, 160)]
    lenet300 = models.lenet300()
    record = weight_frames.record_frame(
        lenet300, weight_frames.default_panels(lenet300)
    )
    assert [t.shape for t in record["tiles"]] == [(64, 28, 28), (1, 160, 160)]

    frames = weight_frames.Frames("lenet300", 6)
    for epoch in range(7):
        frames.add(epoch, record)
    renderer = weight_gif.Renderer(frames)
    # The 16 fields and the 40 x 40 block that are shown, of the pools.
    assert renderer.tiles(0, 0).shape == (16, 28, 28)
    assert renderer.tiles(0, 1).shape == (1, 40, 40)
    path = weight_gif.write_gif(frames, tmp_path / "w.gif", every=4)
    assert len(gif_frames(path)) == 3  # epochs 0, 4 and the last, 6


def test_unit_choice_keeps_the_units_with_most_kept_weights():
    tiles = np.full((6, 2, 2), np.nan, "float16")
    tiles[4] = 1.0  # all kept
    tiles[1, 0] = -1.0  # half kept
    tiles[3, 0, 0] = 0.5
    record = {
        "tiles": [tiles],
        "info": [{"choose": 2, "axes": [0], "caption": ["fields"]}],
        "layer_sparsity": [0.5],
        "sparsity": 0.5,
        "compression": 2.0,
    }
    frames = weight_frames.Frames()
    frames.add(0, record)
    renderer = weight_gif.Renderer(frames)
    np.testing.assert_array_equal(renderer.selected[0][0], [1, 4])  # unit order


def test_missing_or_dense_layers_give_clear_errors():
    no_fc1 = keras.Sequential(
        [keras.Input((5,)), ksvd.DenseSVD(3, name="dense")], name="small"
    )
    with pytest.raises(ValueError, match="no layer 'fc1'.*'dense'"):
        weight_frames.record_frame(no_fc1, [Panel("fc1", "block")])
    dense = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="fc1")], name="baseline"
    )
    callback = animation.WeightAnimation(None)
    callback.set_model(dense)
    with pytest.raises(ValueError, match="'fc1'.*Dense, not a Sparse VD layer"):
        callback.on_train_begin()
    with pytest.raises(ValueError, match="square image"):
        weight_frames.record_frame(no_fc1, [Panel("dense", "fields")])
    with pytest.raises(ValueError, match="2D convolution"):
        weight_frames.record_frame(no_fc1, [Panel("dense", "filters")])
    with pytest.raises(SystemExit, match="--animate applies to --variant svd"):
        train.main(["--variant", "dense", "--animate"])
