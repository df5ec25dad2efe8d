"""Python front end: `python -m pixelcnn_fast` — what was built, and a live check of the fast masked conv
against the pure-TF reference on this machine (error and speed ratio, forward + both gradients)."""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _time(fn, repeats):
    fn()  # trace / warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    import numpy as np
    import tensorflow as tf

    import pixelcnn_fast
    from pixelcnn_fast import _ext, ops, reference

    print(f"pixelcnn_fast {pixelcnn_fast.__version__}, TensorFlow {tf.__version__}")
    print(f"build: {pixelcnn_fast.build_info()}")
    print(f"CPU microkernels in use: {_ext.core().isa()}")
    rng = np.random.default_rng(0)
    # The keras.io PixelCNN's masked layers at batch 32: 7x7 mask A 1->128, 3x3 mask B 128->64.
    for kh, cin, cout, mask in ((7, 1, 128, "A"), (3, 128, 64, "B")):
        x = tf.constant(rng.standard_normal((32, 28, 28, cin), dtype=np.float32))
        k = tf.constant(rng.standard_normal((kh, kh, cin, cout), dtype=np.float32) * 0.1)

        def fwd_bwd(conv):
            @tf.function
            def step():
                with tf.GradientTape() as tape:
                    tape.watch([x, k])
                    y = conv(x, k, mask)
                    loss = tf.reduce_sum(y * y)
                return (y,) + tuple(tape.gradient(loss, [x, k]))
            return step

        fast, ref = fwd_bwd(ops.masked_conv2d), fwd_bwd(reference.masked_conv2d)
        errs = [float(tf.reduce_max(tf.abs(a - b)) / (tf.reduce_max(tf.abs(b)) + 1e-30))
                for a, b in zip(fast(), ref())]
        t_fast, t_ref = _time(fast, 5), _time(ref, 5)
        print(f"{kh}x{kh} mask {mask} {cin}->{cout}, batch 32, 28x28, forward+both gradients: "
              f"max relative error vs reference {max(errs):.1e}; "
              f"fast {t_fast * 1e3:.1f} ms, reference (tf.nn.conv2d on kernel*mask) {t_ref * 1e3:.1f} ms, "
              f"speedup {t_ref / t_fast:.2f}x")
        if max(errs) > 1e-4:
            print("ERROR: the fast op disagrees with the reference", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
