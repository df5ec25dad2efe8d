"""Tests: one process of tests/test_multi_worker.py (run as a script).

    python multi_worker_child.py OUT.npz SEED     # TF_CONFIG set: a worker of MultiWorkerMirroredStrategy
                                                  # TF_CONFIG unset: the one-process run

Both train the same small MaskedConv2D model from the same initial weights, SGD, STEPS steps of global batch
GLOBAL_BATCH in the same order: worker w of k takes rows [w * GLOBAL_BATCH / k, (w + 1) * GLOBAL_BATCH / k)
of each global batch (distribute_datasets_from_function: the split is explicit, not up to auto-sharding),
the one process the whole batch. A custom training loop (strategy.run, GradientTape, the Keras optimizer's
cross-replica gradient sum), not model.fit: on Keras 3.15 / TF 2.21, fit under MultiWorkerMirroredStrategy
fails before the first step (Trainer._maybe_symbolic_build reduces a distributed batch eagerly with
strategy.reduce("MEAN", ...), which the collective strategy refuses: "Attempt to convert a value
(PerReplica:{...}) with an unsupported type ... to a Tensor"). pixelcnn_fast is imported before the strategy
is built, as the README's recipe says.
"""

import os
import sys

import numpy as np

import pixelcnn_fast  # noqa: F401  (first: the recipe the README gives)
from pixelcnn_fast import MaskedConv2D  # registers the ops (imports TensorFlow)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

STEPS, GLOBAL_BATCH, SHAPE = 4, 8, (8, 8, 1)


def build():
    inp = keras.Input(SHAPE)
    x = MaskedConv2D(8, 5, mask_type="A", activation="relu")(inp)
    x = MaskedConv2D(8, 3, mask_type="B", activation="relu")(x)
    return keras.Model(inp, MaskedConv2D(1, 1, mask_type="B", activation="sigmoid")(x))


def main(out, seed):
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(seed)
    data = (rng.random((STEPS * GLOBAL_BATCH,) + SHAPE) < 0.4).astype(np.float32)
    multi = "TF_CONFIG" in os.environ
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multi else tf.distribute.get_strategy()
    with strategy.scope():
        keras.utils.set_random_seed(seed)
        model = build()
        init = [np.asarray(rng.standard_normal(w.shape) * 0.3, np.float32) for w in model.get_weights()]
        model.set_weights(init)  # the same start everywhere, whatever the initialisers draw
        optimizer = keras.optimizers.SGD(0.5)
        optimizer.build(model.trainable_variables)

    def input_fn(ctx):
        k, w = ctx.num_input_pipelines, ctx.input_pipeline_id
        per = GLOBAL_BATCH // k
        rows = np.concatenate([np.arange(s * GLOBAL_BATCH + w * per, s * GLOBAL_BATCH + (w + 1) * per)
                               for s in range(STEPS)])
        return tf.data.Dataset.from_tensor_slices(data[rows]).batch(per)

    def replica_step(x):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            per_image = tf.reduce_mean(keras.losses.binary_crossentropy(x, p), axis=[1, 2])
            loss = tf.reduce_sum(per_image) / GLOBAL_BATCH  # this replica's share of the global mean
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))  # sums the replicas' gradients
        return loss

    @tf.function
    def train_step(x):
        losses = strategy.run(replica_step, args=(x,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    dataset = strategy.distribute_datasets_from_function(input_fn)
    losses = [float(train_step(x)) for x in dataset]
    assert len(losses) == STEPS, losses
    np.savez(out, *model.get_weights(), replicas=strategy.num_replicas_in_sync, losses=np.asarray(losses),
             init=np.concatenate([w.ravel() for w in init]))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
