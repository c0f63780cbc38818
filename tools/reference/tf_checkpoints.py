"""TensorFlow V2 checkpoint fixtures for nddr::io::TfCheckpoint (tests/io/tf_checkpoint_test.cpp).

Needs TensorFlow, which Debian does not package: run it from a virtual environment,
    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfvenv/bin/python tools/reference/tf_checkpoints.py
(the committed files were written by tensorflow-cpu 2.21.0). CI never runs this script.

Writes, under tests/data/tf/ (the .meta graphs and `checkpoint` state files are deleted; nddr
reads only .index and .data-*):
  dtypes/ckpt          every dtype the reader converts, odd shapes (scalar, empty, 1-D, 2-D,
                       4-D), special values, and 20 keys with a long common prefix (restart
                       points and key prefix compression in the index)
  sharded/ckpt         the same kind of variables on two logical CPU devices, saved by a
                       sharded Saver: two .data files
  st_mini/model.ckpt-0   single-task names of the authors' code (vgg_16/..., Momentum slots)
  mt_mini/model.ckpt-0   multi-task baseline names (trunk vgg_16/..., heads vgg_16_<k>_6/...)
  nddr_mini/model.ckpt-0 NDDR-CNN-Shortcut names (vgg_16_<task>_<stage>/...,
                         nddr_<s>/nddr_<s>_n<k>/..., nddr_shortcut_<k>/...)
  partitioned/ckpt     a variable split by fixed_size_partitioner(2): refused by the reader
  object/ckpt-1        a tf.train.Checkpoint (object-based names, DT_STRING object graph)
  v1/ckpt              a V1 checkpoint (SaverDef.V1), when this TensorFlow still writes one
and for each checkpoint but v1 and partitioned an `expected.safetensors` beside it holding every
tensor the reader can read (same names, same dtype, same bytes), written here with NumPy from
tf.train.load_variable, i.e. by TensorFlow's own reader.

Tiny widths keep the network fixtures small: stage widths 2, 2, 3, 4, 4, fc6/fc7 width 5,
3 input channels, 3 classes for task 1 and 2 for task 2.
"""
import glob
import json
import os
import struct
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "data", "tf")

_ST_DTYPES = {
    np.dtype("float32"): "F32",
    np.dtype("float64"): "F64",
    np.dtype("float16"): "F16",
    np.dtype("int32"): "I32",
    np.dtype("int64"): "I64",
}


def write_safetensors(path, tensors, metadata):
    """Minimal safetensors writer (bfloat16 arrays are passed as ("BF16", uint16 bits))."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        value = tensors[name]
        if isinstance(value, tuple):
            dtype, arr = value
        else:
            arr = value
            dtype = _ST_DTYPES[arr.dtype]
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for b in blobs:
            f.write(b)


def dump_expected(prefix, directory):
    """expected.safetensors: every readable tensor of the checkpoint, as TensorFlow reads it."""
    tensors = {}
    for name, _ in tf.train.list_variables(prefix):
        value = tf.train.load_variable(prefix, name)
        if isinstance(value, bytes) or (isinstance(value, np.ndarray) and value.dtype == object):
            continue  # DT_STRING (object graph)
        value = np.asarray(value)
        if value.dtype.name == "bfloat16":
            tensors[name] = ("BF16", value.view(np.uint16))
        else:
            tensors[name] = value
    write_safetensors(os.path.join(directory, "expected.safetensors"), tensors,
                      {"generator": "tools/reference/tf_checkpoints.py",
                       "tensorflow": tf.__version__})


def clean(directory):
    for p in glob.glob(os.path.join(directory, "*.meta")) + \
            glob.glob(os.path.join(directory, "checkpoint")):
        os.remove(p)


def fresh(name):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for p in glob.glob(os.path.join(d, "*")):
        os.remove(p)
    return d


def save_graph(build, directory, prefix_name, **saver_args):
    """Builds variables with `build()` in a fresh graph, initialises and saves them."""
    graph = tf.Graph()
    with graph.as_default():
        build()
        saver = tf.compat.v1.train.Saver(**saver_args)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            path = saver.save(sess, os.path.join(directory, prefix_name))
    clean(directory)
    return path


def var(name, value, dtype=None):
    value = np.asarray(value)
    return tf.compat.v1.get_variable(name, initializer=tf.constant(value, dtype=dtype or value.dtype))


def build_dtypes():
    rng = np.random.default_rng(19)
    var("scalar_f32", np.float32(3.25))
    var("vec_f32", np.array([0.0, -0.0, 1e-45, -3.4e38, np.inf], dtype=np.float32))
    var("kernel_f32", rng.standard_normal((2, 3, 1, 4)).astype(np.float32))
    var("empty_f32", np.zeros((0, 3), dtype=np.float32))
    var("mat_f64", np.array([[np.pi, -1e300], [5e-324, 2.0], [-0.0, 1.0 / 3.0]]))
    var("vec_bf16", np.array([1.0, -2.5, 3.140625, 1e-38, -65280.0, 0.0078125, 3e38],
                             dtype=np.float32), tf.bfloat16)
    var("mat_half", np.array([[2.0 ** -24, 65504.0], [-np.inf, -0.333251953125]],
                             dtype=np.float16))
    var("vec_i32", np.array([-2147483648, -1, 0, 2147483647], dtype=np.int32))
    var("scalar_i64", np.int64(2 ** 62 + 1))
    var("vec_i64", np.array([-9223372036854775808, 9007199254740993, 7], dtype=np.int64))
    for i in range(20):
        var("a_rather_long/common_prefix/for_prefix_compression/var_%02d" % i,
            np.full((i % 3 + 1,), i, dtype=np.float32))


def build_sharded():
    for k, device in enumerate(["/device:CPU:0", "/device:CPU:1"]):
        with tf.device(device):
            var("shard%d/weights" % k, np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * k)
            var("shard%d/step" % k, np.int64(100 + k))


STAGES = [(1, 2, 2), (2, 2, 2), (3, 3, 3), (4, 3, 4), (5, 3, 4)]  # stage, convs, width
IN_CHANNELS, FC_WIDTH, CLASSES = 3, 5, {1: 3, 2: 2}


def column(rng, scope_of_stage, head_scope, classes, momentum, trunk=True):
    def trainable(name, value):
        var(name, value)
        if momentum:
            var(name + "/Momentum", np.zeros_like(value))

    def conv_bn(scope, kh, cin, cout):
        trainable(scope + "/weights", rng.standard_normal((kh, kh, cin, cout)).astype(np.float32))
        trainable(scope + "/BatchNorm/beta", rng.standard_normal(cout).astype(np.float32))
        trainable(scope + "/BatchNorm/gamma", rng.uniform(0.5, 1.5, cout).astype(np.float32))
        var(scope + "/BatchNorm/moving_mean", rng.standard_normal(cout).astype(np.float32))
        var(scope + "/BatchNorm/moving_variance", rng.uniform(0.1, 2, cout).astype(np.float32))

    cin = IN_CHANNELS
    for s, convs, width in STAGES:
        for i in range(1, convs + 1):
            if trunk:
                conv_bn("%s/conv%d/conv%d_%d" % (scope_of_stage(s), s, s, i), 3, cin, width)
            cin = width
    if head_scope is None:
        return
    conv_bn(head_scope + "/fc6", 3, cin, FC_WIDTH)
    conv_bn(head_scope + "/fc7", 1, FC_WIDTH, FC_WIDTH)
    trainable(head_scope + "/fc8_voc12/weights",
              rng.standard_normal((1, 1, FC_WIDTH, classes)).astype(np.float32))
    trainable(head_scope + "/fc8_voc12/biases", rng.standard_normal(classes).astype(np.float32))


def build_st():
    column(np.random.default_rng(1), lambda s: "vgg_16", "vgg_16", CLASSES[1], momentum=True)


def build_mt():
    rng = np.random.default_rng(3)
    column(rng, lambda s: "vgg_16", None, None, momentum=False)
    for k in (1, 2):
        column(rng, None, "vgg_16_%d_6" % k, CLASSES[k], momentum=False, trunk=False)


def build_nddr():
    rng = np.random.default_rng(2)
    for k in (1, 2):
        column(rng, lambda s, k=k: "vgg_16_%d_%d" % (k, s), "vgg_16_%d_6" % k, CLASSES[k],
               momentum=False)
    # NDDR-CNN-Shortcut: per task, a 1x1 conv from all five stages' outputs (concatenated,
    # sum of the widths) to the last stage's width, with BatchNorm.
    concat, last = sum(w for _, _, w in STAGES), STAGES[-1][2]
    for k in (1, 2):
        scope = "nddr_shortcut_%d" % k
        var(scope + "/weights", rng.standard_normal((1, 1, concat, last)).astype(np.float32))
        var(scope + "/BatchNorm/beta", rng.standard_normal(last).astype(np.float32))
        var(scope + "/BatchNorm/gamma", rng.uniform(0.5, 1.5, last).astype(np.float32))
        var(scope + "/BatchNorm/moving_mean", rng.standard_normal(last).astype(np.float32))
        var(scope + "/BatchNorm/moving_variance", rng.uniform(0.1, 2, last).astype(np.float32))
    for s, _, c in STAGES:
        for k in (1, 2):
            scope = "nddr_%d/nddr_%d_n%d" % (s, s, k)
            var(scope + "/weights", rng.standard_normal((1, 1, 2 * c, c)).astype(np.float32))
            var(scope + "/BatchNorm/beta", rng.standard_normal(c).astype(np.float32))
            var(scope + "/BatchNorm/gamma", rng.uniform(0.5, 1.5, c).astype(np.float32))
            var(scope + "/BatchNorm/moving_mean", rng.standard_normal(c).astype(np.float32))
            var(scope + "/BatchNorm/moving_variance", rng.uniform(0.1, 2, c).astype(np.float32))


def build_partitioned():
    tf.compat.v1.get_variable("split", shape=(4, 2), dtype=tf.float32,
                              initializer=tf.compat.v1.ones_initializer(),
                              partitioner=tf.compat.v1.fixed_size_partitioner(2))
    var("whole", np.float32(1.5))


def main():
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

    # Object-based first: it needs eager execution, which the rest turns off.
    d = fresh("object")
    ckpt = tf.train.Checkpoint(dense=tf.Variable(np.arange(4, dtype=np.float32).reshape(2, 2)),
                               step=tf.Variable(np.int64(5)))
    path = ckpt.save(os.path.join(d, "ckpt"))
    clean(d)
    dump_expected(path, d)

    tf.compat.v1.disable_eager_execution()
    for name, build, prefix, args in [
            ("dtypes", build_dtypes, "ckpt", {}),
            ("sharded", build_sharded, "ckpt", {"sharded": True}),
            ("st_mini", build_st, "model.ckpt-0", {}),
            ("mt_mini", build_mt, "model.ckpt-0", {}),
            ("nddr_mini", build_nddr, "model.ckpt-0", {}),
            ("partitioned", build_partitioned, "ckpt", {})]:
        d = fresh(name)
        path = save_graph(build, d, prefix, **args)
        if name != "partitioned":
            dump_expected(path, d)
        print(name, sorted(os.listdir(d)))

    d = fresh("v1")
    try:
        save_graph(lambda: var("x", np.float32(1.0)), d, "ckpt",
                   write_version=tf.compat.v1.train.SaverDef.V1)
        print("v1", sorted(os.listdir(d)))
    except Exception as e:  # noqa: BLE001 -- report and go on: V1 is optional
        print("v1: TensorFlow", tf.__version__, "cannot write V1:", e, file=sys.stderr)


if __name__ == "__main__":
    main()
