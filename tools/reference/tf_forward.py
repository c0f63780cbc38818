"""TensorFlow forward passes of the tests/data/tf network fixtures (tests/networks/tf_weights_test.cpp).

The checkpoints of tools/reference/tf_checkpoints.py (single-task, multi-task baseline and
NDDR-CNN(-Shortcut) names at tiny widths) are read back with TensorFlow's own reader
(tf.train.load_variable) and run, in inference mode, by a graph written here with tf.nn ops
after the authors' TF-slim code as paper-spec.md §2-3 describes it:
  conv (SAME, no bias, "rate" dilation) -> BatchNorm (moving statistics, eps 1e-3) -> ReLU;
  max pool 3x3 SAME (stride 2, 2, 2, 1, 1), pool5 followed by avg pool 3x3 SAME stride 1;
  conv5 rate 2; NDDR_s after every stage: concat [task 1, task 2] -> per task 1x1 conv + BN +
  ReLU; Shortcut: the five NDDR outputs resized to the last one's size with the legacy
  tf.compat.v1.image.resize_bilinear (align_corners=False), concatenated in stage order,
  1x1 conv + BN + ReLU; LargeFOV head fc6 (3x3, rate 12) + BN + ReLU, fc7 (1x1) + BN + ReLU,
  fc8 (1x1, bias); dropout is the identity at inference.
Everything is computed in float64 from the float32 variables, except the legacy bilinear
resize, which TensorFlow computes and returns in float32 only. It is an implementation
independent of nddr: only the variable values and the architecture facts are shared.

Needs TensorFlow (not in Debian): from a virtual environment,
    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfvenv/bin/python tools/reference/tf_forward.py
after tf_checkpoints.py. Writes tests/data/tf/forward.safetensors: `input` (N, C, H, W) and, per
network X in st, mt, nddr, nddr_shortcut, `X/task<k>` (N, classes, h, w), all float64.
CI never runs this script.
"""
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from tf_checkpoints import OUT, STAGES, write_safetensors  # noqa: E402

EPS = 1e-3
POOL_STRIDES = {1: 2, 2: 2, 3: 2, 4: 1, 5: 1}
DILATIONS = {1: 1, 2: 1, 3: 1, 4: 1, 5: 2}


class Vars:
    def __init__(self, prefix):
        self.prefix = prefix

    def __call__(self, name):
        return tf.constant(tf.train.load_variable(self.prefix, name).astype(np.float64))


def conv_bn_relu(v, x, scope, rate=1, relu=True):
    y = tf.nn.conv2d(x, v(scope + "/weights"), strides=1, padding="SAME", dilations=rate)
    y = tf.nn.batch_normalization(y, v(scope + "/BatchNorm/moving_mean"),
                                  v(scope + "/BatchNorm/moving_variance"),
                                  v(scope + "/BatchNorm/beta"), v(scope + "/BatchNorm/gamma"), EPS)
    return tf.nn.relu(y) if relu else y


def stage(v, x, scope, s):
    convs = {n: c for n, c, _ in STAGES}[s]
    for i in range(1, convs + 1):
        x = conv_bn_relu(v, x, "%s/conv%d/conv%d_%d" % (scope, s, s, i), rate=DILATIONS[s])
    x = tf.nn.max_pool2d(x, 3, POOL_STRIDES[s], "SAME")
    if s == 5:  # pool5_avg: TF's SAME average pooling leaves the padding out of the mean
        x = tf.nn.avg_pool2d(x, 3, 1, "SAME")
    return x


def head(v, x, scope):
    x = conv_bn_relu(v, x, scope + "/fc6", rate=12)
    x = conv_bn_relu(v, x, scope + "/fc7")
    y = tf.nn.conv2d(x, v(scope + "/fc8_voc12/weights"), strides=1, padding="SAME")
    return y + v(scope + "/fc8_voc12/biases")


def single_task(v, x):
    for s, _, _ in STAGES:
        x = stage(v, x, "vgg_16", s)
    return [head(v, x, "vgg_16")]


def multi_task_baseline(v, x):
    for s, _, _ in STAGES:
        x = stage(v, x, "vgg_16", s)
    return [head(v, x, "vgg_16_%d_6" % k) for k in (1, 2)]


def nddr(v, x, shortcut):
    cols = [x, x]
    fused = [[], []]
    for s, _, _ in STAGES:
        cols = [stage(v, cols[k], "vgg_16_%d_%d" % (k + 1, s), s) for k in range(2)]
        both = tf.concat(cols, axis=3)  # always [task 1, task 2]
        cols = [conv_bn_relu(v, both, "nddr_%d/nddr_%d_n%d" % (s, s, k + 1)) for k in range(2)]
        for k in range(2):
            fused[k].append(cols[k])
    if shortcut:
        size = cols[0].shape[1:3]
        for k in range(2):
            # resize_bilinear returns float32 whatever its input: the shortcut's reference is
            # only float-accurate (the test's tolerance says so).
            parts = [tf.cast(tf.compat.v1.image.resize_bilinear(f, size, align_corners=False),
                             tf.float64) for f in fused[k]]
            cols[k] = conv_bn_relu(v, tf.concat(parts, axis=3), "nddr_shortcut_%d" % (k + 1))
    return [head(v, cols[k], "vgg_16_%d_6" % (k + 1)) for k in range(2)]


def main():
    rng = np.random.default_rng(23)
    # 27 x 22: odd and even sizes, so SAME pooling pads asymmetrically; logits 4 x 3.
    image = rng.standard_normal((2, 3, 27, 22))
    x = tf.constant(image.transpose(0, 2, 3, 1))  # NHWC
    nets = {
        "st": single_task(Vars(os.path.join(OUT, "st_mini", "model.ckpt-0")), x),
        "mt": multi_task_baseline(Vars(os.path.join(OUT, "mt_mini", "model.ckpt-0")), x),
        "nddr": nddr(Vars(os.path.join(OUT, "nddr_mini", "model.ckpt-0")), x, shortcut=False),
        "nddr_shortcut": nddr(Vars(os.path.join(OUT, "nddr_mini", "model.ckpt-0")), x,
                              shortcut=True),
    }
    tensors = {"input": image}
    for name, outs in nets.items():
        for k, y in enumerate(outs):
            tensors["%s/task%d" % (name, k)] = np.ascontiguousarray(
                y.numpy().transpose(0, 3, 1, 2))
            print(name, k, tensors["%s/task%d" % (name, k)].shape,
                  float(np.abs(tensors["%s/task%d" % (name, k)]).max()))
    write_safetensors(os.path.join(OUT, "forward.safetensors"), tensors,
                      {"writer": "tools/reference/tf_forward.py",
                       "tensorflow": tf.__version__})


if __name__ == "__main__":
    main()
