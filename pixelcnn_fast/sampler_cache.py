"""Python front end: the Sampler's build cache -- the C++ program (and its GPU twin) for one sample call, built
once and kept while nothing it was built from changed.

What a build depends on: the values of the variables the traced function reads (kernels, biases, embeddings;
training and set_weights change them in place), the condition values and, only when some constant has a batch
dimension (a label embedding per image), n. So the cache is keyed by (n if batch-dependent, condition values)
and revalidated by comparing each variable's current value with a copy taken after the build, bit for bit (so a
NaN weight compares equal to itself): by one eager call of the TF op PixelcnnFastSameVariables
(csrc/tf/variables_op.cc), which compares every variable's buffer in place under its lock, when the variables
are numeric resource variables on the CPU and the op library is built; else by reading them in one call of a
concrete function, viewed in place, and one memcmp per array in C++ (_core.same_bytes). For keras.io's 2.1 MB in
38 arrays the op takes 0.34 ms (batch 1) and 0.44 ms (batch 16) right after a sample, against 0.77 and 0.94 ms
through the concrete function, most of that the TF function call with TF's caches cold
(benchmarks/call_overhead.py, both in one process); evaluating the constants alone costs ~0.7 ms, and checking
causality, writing the spec and packing the weights ~5-9 ms. When a variable did change the constants are
evaluated again, and the build is still reused if they came out identical.
"""

import numpy as np
import tensorflow as tf

from pixelcnn_fast._ext import core

__all__ = ["ProgramCache"]

MAX_BUILDS = 4  # a few batch sizes of a conditional model; the oldest goes first


class ProgramCache:
    """Builds of one Sampler's program. write_spec(consts) -> (spec text, arrays) writes a build's program.

    Attributes: build_count (C++ programs built so far), last_spec ((spec, arrays) of the build the last
    `executor` call returned)."""

    def __init__(self, program, write_spec):
        self.program = program
        self.write_spec = write_spec
        self.builds = {}
        self.build_count = 0
        self.last_spec = None
        self.last_key = None        # identifies the last build, for the GPU program made from it
        self.read_variables_fn = None
        self.variables = None       # the tf.Variables the traced constants read (the concrete function's)
        self.same_variables_op = None  # None: not decided yet; False: the concrete-function path (see above)
        self.cuda = None            # ((build key, n), pixelcnn_fast.cuda.ColumnProgram) of the last GPU upload

    def executor(self, n, conditions):
        """The C++ ColumnProgram for a call with n images and these conditions (tensors, checked)."""
        cond_values = [np.asarray(t) for t in conditions]
        for key in (int(n), None):  # a build for this n, or one that serves any n
            hit = self.builds.get(key)
            if hit is not None and self.same_inputs(hit, cond_values):
                self.last_spec, self.last_key = hit["spec"], hit["key"]
                return hit["exe"]
        consts = self.program.evaluate_consts(n, conditions)
        # Variable values after the evaluation: a layer that assigns kernel * mask to its variable in
        # call() has just done so, and the next call's comparison must see that value, not the old one.
        snapshot = [np.array(a, copy=True) for a in self.read_variables()]
        # The op's snapshot operands: tensors over those copies (never written; TF may alias their memory).
        snapshot_t = [tf.constant(a) for a in snapshot] if self.use_same_variables_op() else None
        # A constant traced with an unknown dimension has the batch in it (the trace's image batch is None).
        batch_free = all(d is not None for shape in self.program.const_shapes for d in shape)
        key = None if batch_free else int(n)
        old = self.builds.get(key)
        if old is not None and len(old["consts"]) == len(consts) and all(
                a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
                for a, b in zip(old["consts"], consts)):
            old.update(snapshot=snapshot, snapshot_t=snapshot_t, conds=cond_values)
            self.last_spec, self.last_key = old["spec"], old["key"]
            return old["exe"]
        spec, arrays = self.write_spec(consts)
        exe = core().ColumnProgram.from_spec(spec, arrays, 0 if batch_free else int(n))
        self.build_count += 1
        if len(self.builds) >= MAX_BUILDS:
            self.builds.pop(next(iter(self.builds)))
        self.builds[key] = dict(exe=exe, consts=consts, snapshot=snapshot, snapshot_t=snapshot_t, conds=cond_values,
                                spec=(spec, arrays),
                                key=(key, self.build_count))
        self.last_spec, self.last_key = (spec, arrays), (key, self.build_count)
        return exe

    def cuda_program(self, n):
        """The GPU program of the last build `executor` returned (uploaded once per build and n)."""
        if self.cuda is None or self.cuda[0] != (self.last_key, int(n)):
            from pixelcnn_fast import cuda

            spec, arrays = self.last_spec
            self.cuda = ((self.last_key, int(n)), cuda.ColumnProgram(spec, arrays, n))
        return self.cuda[1]

    def read_variables(self):
        """The current values of the variables the traced constants read (the concrete function's
        captures), read by one tf.function call (~0.25 ms for keras.io's 38 variables, against ~0.7 ms for 38
        eager reads), as read-only NumPy views of the read tensors (np.asarray: no copy; each keeps its
        tensor alive)."""
        if self.read_variables_fn is None:
            variables = self.captured_variables()
            # The concrete function itself: calling it skips the polymorphic function's signature lookup.
            self.read_variables_fn = tf.function(lambda: [tf.convert_to_tensor(v) for v in variables],
                                                 autograph=False).get_concrete_function()
        return [np.asarray(t) for t in self.read_variables_fn()]

    def captured_variables(self):
        """The tf.Variables the traced function reads (its concrete function's), found once."""
        if self.variables is None:
            p = self.program
            self.variables = list(p.trace.get_concrete_function(p.image_spec, *p.cond_specs).variables)
        return self.variables

    def use_same_variables_op(self):
        """Whether the check runs as the TF op: the op library loads, and every variable is a resource
        variable on the CPU holding a type whose bytes are its value (not a string)."""
        if self.same_variables_op is None:
            self.same_variables_op = False
            try:
                from pixelcnn_fast._ext import tf_ops

                op = tf_ops().pixelcnn_fast_same_variables
            except (ImportError, AttributeError):
                return False
            variables = self.captured_variables()
            try:  # a wrapper (a distributed variable, say) whose handle does not answer: the fallback
                handles = [v.handle for v in variables]
                eligible = all(h.dtype == tf.resource and v.dtype != tf.string and
                               tf.DeviceSpec.from_string(h.device or "/cpu:0").device_type in (None, "CPU")
                               for v, h in zip(variables, handles))
            except Exception:  # noqa: BLE001 -- any failure here only means "not the op's case"
                eligible = False
            if eligible:
                self.same_variables_op = lambda snapshots: bool(op(variables=handles, snapshots=snapshots))
        return self.same_variables_op is not False

    def stop_same_variables_op(self):
        """From now on the check reads the variables through the concrete function (tests force it too)."""
        self.same_variables_op = False
        for b in self.builds.values():
            b["snapshot_t"] = None

    def same_inputs(self, build, cond_values):
        """True when the conditions and every variable still hold what `build` was made from."""
        if len(build["conds"]) != len(cond_values) or not all(
                a.shape == b.shape and np.array_equal(a, b) for a, b in zip(build["conds"], cond_values)):
            return False
        if build.get("snapshot_t") is not None:
            try:
                return self.same_variables_op(build["snapshot_t"])
            except tf.errors.OpError:  # a variable the op cannot see after all
                self.stop_same_variables_op()
        current, snapshot = self.read_variables(), build["snapshot"]
        if len(current) != len(snapshot) or any(a.dtype != b.dtype for a, b in zip(current, snapshot)):
            return False
        if any(a.dtype.hasobject for a in current):  # a tf.string variable: objects, no bytes to compare
            return all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(current, snapshot))
        # Bits: a NaN equals itself, -0.0 differs from 0.0.
        return core().same_bytes([np.ascontiguousarray(a) for a in current], snapshot)
