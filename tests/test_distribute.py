"""Tests: the masked-conv TF op and MaskedConv2D under MirroredStrategy on 2 logical CPUs."""

# TF refuses to change the logical device configuration once it has initialised its runtime,
# and the rest of the suite initialises it in this process; so the distributed run happens
# in a fresh interpreter that splits the CPU into two logical devices before any TF op.

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

    import keras
    from pixelcnn_fast import ops, reference
    from pixelcnn_fast.layers import MaskedConv2D

    seed = int(sys.argv[1])
    rng = np.random.default_rng(seed)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {"replicas": strategy.num_replicas_in_sync}

    # 1. The bare op in strategy.run, one shard per replica.
    x = rng.standard_normal((4, 7, 9, 3)).astype(np.float32)
    k = rng.standard_normal((5, 5, 3, 6)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
    dist = iter(strategy.experimental_distribute_dataset(ds))

    traced_devices = []

    @tf.function
    def step(xb):
        def replica(xr):
            with tf.GradientTape() as tape:
                tape.watch(xr)
                y = ops.masked_conv2d(xr, k, "A", color_groups=3, dilation_rate=1,
                                      padding="same")
                loss = tf.reduce_sum(y * y)
            traced_devices.append(y.device)  # the device the op is placed on, per replica
            g = tape.gradient(loss, xr)
            yr = reference.masked_conv2d(xr, k, "A", color_groups=3)
            with tf.GradientTape() as tape:
                tape.watch(xr)
                yr2 = reference.masked_conv2d(xr, k, "A", color_groups=3)
                loss_r = tf.reduce_sum(yr2 * yr2)
            gr = tape.gradient(loss_r, xr)
            return y, yr, g, gr
        return strategy.run(replica, args=(xb,))

    y, yr, g, gr = step(next(dist))
    ys = [t.numpy() for t in strategy.experimental_local_results(y)]
    out["per_replica_rows"] = [int(a.shape[0]) for a in ys]
    out["devices"] = sorted(set(traced_devices))
    yrs = [t.numpy() for t in strategy.experimental_local_results(yr)]
    gs = [t.numpy() for t in strategy.experimental_local_results(g)]
    grs = [t.numpy() for t in strategy.experimental_local_results(gr)]
    out["op_rel_err"] = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                            for a, b in zip(ys + gs, yrs + grs))

    # 2. model.fit under the strategy, fast vs reference layers from identical weights.
    def build(impl):
        inp = keras.Input((7, 9, 3))
        h = MaskedConv2D(6, 5, "A", color_groups=3, activation="relu", implementation=impl)(inp)
        h = MaskedConv2D(6, 3, "B", color_groups=3, activation="relu", implementation=impl)(h)
        o = MaskedConv2D(3, 1, "B", color_groups=3, activation="sigmoid",
                         implementation=impl)(h)
        return keras.Model(inp, o)

    data = (rng.random((16, 7, 9, 3)) < 0.5).astype(np.float32)
    weights, losses = [], []
    keras.utils.set_random_seed(seed % (2**31))
    with strategy.scope():
        models = [build("fast"), build("reference")]
        models[1].set_weights(models[0].get_weights())
        init = [w.copy() for w in models[0].get_weights()]
        for m in models:
            m.compile(optimizer=keras.optimizers.SGD(0.3), loss="binary_crossentropy")
    for m in models:
        h = m.fit(data, data, batch_size=8, epochs=2, shuffle=False, verbose=0)
        losses.append([float(v) for v in h.history["loss"]])
        weights.append(m.get_weights())
    out["losses"] = losses
    out["weight_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(*weights))
    out["weight_moved"] = max(float(np.max(np.abs(a - b))) for a, b in zip(weights[0], init))
    print("RESULT " + json.dumps(out))
""")


def test_mirrored_strategy_two_cpus(tmp_path, rng, fast_ops):
    assert callable(fast_ops.masked_conv2d)  # fails here, clearly, if the op is not built
    script = tmp_path / "distributed_run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    # The child must import the very same pixelcnn_fast as this process.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    seed = int(rng.integers(2**31))
    proc = subprocess.run([sys.executable, str(script), str(seed)], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"distributed run failed (rc={proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\n"
        f"stderr:\n{proc.stderr[-6000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    print(res)
    assert res["replicas"] == 2
    # Each replica computed its own shard on its own device.
    assert res["per_replica_rows"] == [2, 2]
    assert len(res["devices"]) == 2 and all("CPU" in d for d in res["devices"])
    # Per replica, op forward and input gradient agree with the reference (float32
    # summation-order differences only).
    assert res["op_rel_err"] < 1e-5
    # Training under the strategy: fast and reference end at the same weights (same
    # reasoning and tolerance as test_layer.test_training_fast_equals_reference).
    assert np.all(np.isfinite(res["losses"]))
    assert res["weight_diff"] <= 1e-6
    assert res["weight_moved"] > 1e-4
    np.testing.assert_allclose(res["losses"][0], res["losses"][1], rtol=1e-5)
