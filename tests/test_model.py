"""The FCN, its metrics, the input pipeline and the config loader."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from mammo_seg import metrics as M
from mammo_seg.config import load_config
from mammo_seg.errors import MammoError
from mammo_seg.models.fcn import MammoFCN
from mammo_seg.models.flops import forward_flops
from mammo_seg.overlap import iou, overlap_sums


# --------------------------------------------------------------------------------------------- metrics
def test_metrics_exact_counts():
    # image 0 (4x4): lesion 4 px, predicted 3 of them + 2 false positives; image 1: empty, 1 false positive
    y = np.zeros((2, 4, 4, 1), "float32")
    y[0, :2, :2] = 1
    x = np.full((2, 4, 4, 1), -5.0, "float32")
    x[0, 0, :2] = x[0, 1, 0] = 5.0  # 3 true positives
    x[0, 3, 2:] = 5.0  # 2 false positives
    x[1, 2, 2] = 5.0  # 1 false positive
    values = {}
    for metric in M.standard_metrics(image_area_fraction=1.5 / 16):  # called positive above 1.5 px of 16
        metric.update_state(y, x)
        values[metric.name] = float(metric.result())
    tp, fp, fn, n = 3, 3, 1, 32
    assert values["lesion_iou"] == pytest.approx(tp / (tp + fp + fn))
    assert values["lesion_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert values["precision"] == pytest.approx(tp / (tp + fp))
    assert values["recall"] == pytest.approx(tp / (tp + fn))
    assert values["accuracy"] == pytest.approx((n - fp - fn) / n)
    # image 0: 5 px predicted > 1.5 -> positive, has lesion; image 1: 1 px -> negative, no lesion
    assert values["image_accuracy"] == 1.0 and values["image_recall"] == 1.0


def test_metric_and_loss_share_the_iou():
    p = tf.constant([[1.0, 1.0], [0.0, 0.0]])
    y = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    i, u = overlap_sums(p, y)
    assert (float(i), float(u), float(iou(i, u))) == (1.0, 3.0, pytest.approx(1 / 3))
    assert float(iou(0.0, 0.0)) == 0.0


def test_metric_threshold_on_probabilities_and_reset():
    m = M.LesionIoU(from_logits=False, threshold=0.7)
    y = np.ones((1, 1, 2, 1), "float32")
    m.update_state(y, np.array([0.8, 0.6], "float32").reshape(1, 1, 2, 1))
    assert float(m.result()) == 0.5
    m.reset_state()
    assert float(m.result()) == 0.0


def test_original_image_rule_default_is_area_over_750():
    m = M.ImageRecall()
    y = np.zeros((1, 30, 25, 1), "float32")
    y[0, 0, 0] = 1
    x = np.full_like(y, -1.0)
    x.reshape(-1)[:2] = 1.0  # 2 px > 750/750 = 1 px
    m.update_state(y, x)
    assert float(m.result()) == 1.0
    m.reset_state()
    x.reshape(-1)[1] = -1.0  # 1 px is not above 1 px
    m.update_state(y, x)
    assert float(m.result()) == 0.0


# ----------------------------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return MammoFCN(width=0.125)


@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 50, 70), (1, 33, 97), (1, 32, 32)])
def test_any_input_size_gives_logits_of_that_size(tiny_model, shape):
    out = tiny_model(np.random.default_rng(0).random((*shape, 1), dtype=np.float32))
    assert tuple(out.shape) == (*shape, 1) and out.dtype == "float32"


def test_layer_names_and_original_size():
    model = MammoFCN(width=1.0)
    names = {layer.name for layer in model.layers}
    for name in ("conv0_1", "pool0", "conv1_3", "conv4", "conv5_1", "conv5_3", "fc_1", "up_conv2", "up_conv6",
                 "upsample_4", "upsample_5", "up_conv9", "logits", "normalize"):
        assert name in names
    dilated = [layer for layer in model.layers if layer.name.startswith("conv5") and hasattr(layer, "dilation_rate")
               and layer.name.count("_") <= 1]
    assert len(dilated) == 4 and all(layer.dilation_rate == (2, 2) for layer in dilated)
    assert model.get_layer("upsample_4").strides == (2, 2) and model.get_layer("upsample_5").strides == (1, 1)
    assert 11.4e6 < model.count_params() < 11.6e6
    assert forward_flops(model, 320, 320) == pytest.approx(9.28e9, rel=0.01)
    assert forward_flops(model, 640, 640) == pytest.approx(4 * forward_flops(model, 320, 320), rel=1e-9)


def test_conv5_1_feeds_conv5_2_and_fc_1_reads_activations():
    model = MammoFCN(width=0.125)
    def producer(layer_name):
        return model.get_layer(layer_name).input._keras_history.operation.name

    assert producer("conv5_2") == "conv5_1_relu"  # the original fed conv5_2 from relu(conv5)
    assert producer("fc_1") == "conv5_3_out"  # after the block's ReLU, not the pre-activation sum


def test_keras_file_round_trip_in_safe_mode(tiny_model, tmp_path):
    path = str(tmp_path / "m.keras")
    tiny_model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    assert isinstance(again, MammoFCN) and again.get_config() == tiny_model.get_config()
    x = np.random.default_rng(1).random((2, 40, 56, 1), dtype=np.float32)
    np.testing.assert_array_equal(again(x, training=False), tiny_model(x, training=False))
    rebuilt = MammoFCN.from_config(tiny_model.get_config())
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in tiny_model.weights]


def test_skip_connections_feed_the_encoders_blocks_to_the_decoder(tmp_path):
    keras.utils.set_random_seed(0)
    model = MammoFCN(width=0.25, skips=True)

    def sources(layer_name):
        return [t._keras_history.operation.name for t in model.get_layer(layer_name).input]

    assert model.get_layer("up_conv2").input._keras_history.operation.name == "skip_8"
    assert sources("skip_8") == ["resize_1", "conv2_3_out"]  # H/8: the upsampled fc_1, then the encoder's block
    assert sources("skip_4") == ["resize_6", "conv1_3_out"]  # H/4
    assert sources("skip_2") == ["upsample_5", "conv0_3_out"]  # H/2
    # each decoder conv reads its input's channels plus the encoder block's (width 0.25: 64+16, 32+12, 8+8)
    assert [model.get_layer(n).kernel.shape[2] for n in ("up_conv2", "up_conv6", "up_conv9")] == [80, 44, 16]
    plain = MammoFCN(width=0.25)
    assert not any(layer.name.startswith("skip_") for layer in plain.layers)
    # the added 3×3 kernel rows: 16, 12 and 8 input channels into 32, 16 and 4 filters
    assert model.count_params() - plain.count_params() == 9 * (16 * 32 + 12 * 16 + 8 * 4)
    x = np.random.default_rng(2).random((1, 33, 97, 1), dtype=np.float32)
    assert tuple(model(x).shape) == (1, 33, 97, 1)
    path = str(tmp_path / "skips.keras")
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    assert again.skips and again.get_config() == model.get_config()
    np.testing.assert_array_equal(again(x, training=False), model(x, training=False))


def test_default_weight_decay_is_the_2018_codes_half_sum_of_squares():
    from mammo_seg.config import ExperimentConfig
    from mammo_seg.models.fcn import ORIGINAL_L2

    assert ORIGINAL_L2 == 0.00125 and ExperimentConfig().model.l2 == ORIGINAL_L2
    model = MammoFCN(width=0.125)  # the default l2
    fc_1, logits = model.get_layer("fc_1"), model.get_layer("logits")
    fc_1.kernel.assign(np.full(fc_1.kernel.shape, 0.5, "float32"))  # 1x1x64x32: 2048 weights of 0.5
    logits.kernel.assign(np.full(logits.kernel.shape, 2.0, "float32"))  # 1x1x2x1: 2 weights of 2
    assert fc_1.kernel.shape == (1, 1, 64, 32) and logits.kernel.shape == (1, 1, 2, 1)
    penalty = float(sum(keras.ops.convert_to_numpy(l) for l in model.losses))
    # the 2018 code: 0.0025 · tf.nn.l2_loss(w) = 0.0025 · Σw²/2, over fc_1 and the logits only
    assert penalty == pytest.approx(0.0025 * (2048 * 0.25 + 2 * 4.0) / 2, rel=1e-6)  # 0.65
    assert penalty == pytest.approx(0.0025 * float(tf.nn.l2_loss(fc_1.kernel) + tf.nn.l2_loss(logits.kernel)),
                                    rel=1e-6)


# -------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def tile_dir(cbis_raw, tmp_path_factory):
    from data_prep.prepare import prepare
    from mammo_seg.data.resolution import Resolution

    out = str(tmp_path_factory.mktemp("pipeline"))
    prepare("cbis-ddsm", cbis_raw, out, tiles=(48,), resolution=Resolution(scale=0.2), full_scans=True,
            scans_per_shard=4, progress=False)
    return out


def _batches(ds, n):
    return [(x.numpy(), y.numpy()) for (x, y), _ in zip(ds, range(n))]


def test_pipeline_is_deterministic_and_joint(tile_dir):
    from mammo_seg.data.pipeline import AugmentConfig, make_dataset

    d = os.path.join(tile_dir, "48")
    a = _batches(make_dataset(d, "train", 4, training=True, seed=3, epoch=1), 3)
    b = _batches(make_dataset(d, "train", 4, training=True, seed=3, epoch=1), 3)
    c = _batches(make_dataset(d, "train", 4, training=True, seed=3, epoch=2), 3)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))
    x, y = a[0]
    assert x.shape == y.shape == (4, 48, 48, 1) and x.dtype == np.float32 and set(np.unique(y)) <= {0.0, 1.0}
    # the same geometric transform reaches image and mask: augment a tile whose mask is its bright part
    from mammo_seg.data.pipeline import augment

    image = tf.constant(np.random.default_rng(0).random((16, 16, 1)), tf.float32)
    mask = tf.cast(image > 0.5, tf.float32)
    for s in range(8):
        img2, mask2 = augment(image, mask, tf.constant([s, 7], tf.int64), AugmentConfig(intensity=0.0))
        np.testing.assert_array_equal(mask2.numpy(), (img2.numpy() > 0.5).astype(np.float32))


def test_pipelines_run_without_autotuning(tile_dir):
    """Deleting an autotuned iterator, as each epoch does the previous one's, stalled 15-20 s in some epochs
    (benchmarks/results/epoch_stalls_cpu.md): training and evaluation pipelines keep autotuning off."""
    from mammo_seg.data.pipeline import make_dataset

    full = os.path.join(tile_dir, "full")
    for ds in (make_dataset(full, "train", 2, training=True, crop=40, lesion_share=0.5),
               make_dataset(full, "val", 1, training=False)):
        assert ds.options().autotune.enabled is False and ds.options().deterministic is True


def test_pipeline_eval_reads_every_record_once(tile_dir):
    import json

    from mammo_seg.data.pipeline import make_dataset

    d = os.path.join(tile_dir, "48")
    expected = json.load(open(os.path.join(d, "manifest.json")))["splits"]["val"]["records"]
    seen = sum(x.shape[0] for x, _ in make_dataset(d, "val", 3, training=False))
    assert seen == expected
    full = os.path.join(tile_dir, "full")
    shapes = [x.shape for x, _ in make_dataset(full, "val", 4, training=False)]
    assert all(s[0] == 1 for s in shapes) and len({s[1:3] for s in shapes}) > 1  # whole scans, one at a time
    x, y = next(iter(make_dataset(full, "train", 2, training=True, crop=40)))
    assert x.shape == y.shape == (2, 40, 40, 1)


# ---------------------------------------------------------------------------------------------- config
def test_config_is_strict_and_names_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: t\ndata: {dir: somewhere}\ntrain: {epochs: 2}\n")
    config = load_config(str(path), ["train.batch_size=4", "loss.name=weighted_bce", "loss.pos_weight=9"])
    assert (config.train.batch_size, config.train.epochs, config.loss) == (4, 2, {"name": "weighted_bce",
                                                                               "pos_weight": 9})
    cases = {
        "train.epoch=3": "train.epoch",
        "train.epochs=many": "train.epochs",
        "train.strategy=cluster": "train.strategy",
        "loss.smoth=1": "loss.smoth",
        "model.width=-1": "model.width",
        "colour=blue": "colour",
    }
    for override, key in cases.items():
        with pytest.raises(MammoError) as info:
            load_config(str(path), [override])
        assert key in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(MammoError, match="config file not found"):
        load_config(str(tmp_path / "none.yaml"))


def test_checked_in_configs_load():
    root = os.path.join(os.path.dirname(__file__), "..", "experiments")
    loaded = 0
    for dirpath, _, files in os.walk(root):
        if "loss_study" in dirpath:  # study configs: test_study.py
            continue
        for name in files:
            if name.endswith(".yaml"):
                load_config(os.path.join(dirpath, name))
                loaded += 1
    assert loaded >= 3


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_input_layers_compute_in_float32_under_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = MammoFCN(width=0.125)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for name in ("pad", "normalize", "conv0_1"):
        assert model.get_layer(name).compute_dtype == "float32", name
    assert model.get_layer("conv0_2").compute_dtype == policy.split("_")[1]  # the rest keeps the policy
    # 4096 distinct levels inside a 1 % intensity band (0.5 to 0.505): bfloat16 keeps 4 of them
    levels = (0.5 + np.arange(4096, dtype="float32") * (0.005 / 4096)).reshape(1, 64, 64, 1)
    assert len(np.unique(levels)) == 4096
    probe = keras.Model(model.input, [model.get_layer("normalize").output, model.get_layer("conv0_1").output,
                                      model.output])
    normalized, first_conv, logits = probe(levels, training=False)
    assert normalized.dtype == "float32" and first_conv.dtype == "float32" and logits.dtype == "float32"
    assert len(np.unique(keras.ops.convert_to_numpy(normalized))) == 4096
    np.testing.assert_allclose(keras.ops.convert_to_numpy(normalized), levels - 0.5, atol=1e-7)
