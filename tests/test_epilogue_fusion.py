"""The CPU executor's fused epilogues (csrc/core/column_program.cc, plan_epilogues / run_epilogue; docs/SAMPLER.md,
"Fused epilogues"): elementwise steps at a conv's own position run on the rows its GEMM just wrote, a leading bias
add and activation inside the GEMM's store (plan_gemm_fusion), and the GEMM reads its input in place from the ring
where it can (gather_columns), and the convs' sums over rows above start at each row (row prefixes). The fast executor
must compute exactly what the reference one computes (unfused, every conv's input gathered into an im2col block, each
position's whole sum: the same float operations in the same order: bit for bit), on every fixture program (colour passes, per-image constants, mixture heads), on the zoo's gated PixelCNNs
and PixelCNN++ (delayed steps, shifts, gates, concat_elu), and on hand-written programs with odd channel
counts, batch 1, and ring caches poisoned with NaN (a value the fused path forgets to write shows). Both
executors are also held to TensorFlow by the existing tests (test_zoo_sampler.py, test_sampler.py, ...), which
run fused."""

import numpy as np
import pytest

from fixtures import make_programs
from pixelcnn_fast import _core
from pixelcnn_fast._core import testing as core_testing

PROGRAMS = make_programs.load()
head_levels = make_programs.head_levels


def build(spec, arrays, n, fused, poison=True, in_place=None):
    """fused: the fast executor (fusion on, in-place A reads unless in_place=False, row prefixes); else the reference
    (no row prefixes either: test_row_prefixes.py holds them to it alone)."""
    program = _core.ColumnProgram.from_spec(spec, arrays, n)
    core_testing.set_epilogue_fusion(program, fused)
    core_testing.set_gather_in_place(program, fused if in_place is None else in_place)
    core_testing.set_row_prefixes(program, fused)
    core_testing.set_poison_caches(program, poison)
    return program


def assert_fused_equals_unfused(spec, arrays, n, batch, rng, min_fused=1, levels=None):
    fused, unfused = build(spec, arrays, n, True), build(spec, arrays, n, False)
    into = core_testing.fused_into(fused)
    assert sum(k >= 0 for k in into) >= min_fused, into
    assert all(k == -1 for k in core_testing.fused_into(unfused))
    h, w, c = fused.image_shape
    levels = levels or head_levels(spec)
    image = rng.integers(0, levels, (batch, h, w, c)).astype(np.float32) / max(levels - 1, 1)
    got, want = fused.teacher_forced(image), unfused.teacher_forced(image)
    assert np.isfinite(want).all()  # poisoned caches: every value the unfused steps read was written
    np.testing.assert_array_equal(got, want)
    seed = int(rng.integers(0, 2 ** 63))
    for offset in (0, 5):
        lf, mf = fused.sample(batch, seed, 0.9, offset)
        lu, mu = unfused.sample(batch, seed, 0.9, offset)
        np.testing.assert_array_equal(lf, lu)
        np.testing.assert_array_equal(mf, mu)
    return into


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_fixture_programs_fused_equal_unfused(name, rng):
    spec, arrays, n = PROGRAMS[name]
    assert_fused_equals_unfused(spec, arrays, n, n or 3, rng)
    if not n:  # batch 1
        assert_fused_equals_unfused(spec, arrays, n, 1, rng)


def synthetic_program(channels, rng, height=5, width=6, const_bias_channels=None, nin_act="relu"):
    """A hand-written program around every fused construct, with `channels` (C) gate channels:
    conv 3x3 (mask A: taps above and left) 1 -> 2C, + bias, gate tanh(split 0) * sigmoid(split 1) (splits read in
    place), conv 1x1 C -> C + bias (C channels, or 1: broadcast) -> nin_act (relu; the tiles compile relu and
    leaky_relu in, any other activation goes through a run-time switch), residual add, concat_elu with the first
    half's channels reversed (a gather that is copied: concat(x[::-1], -x) -> elu), conv 1x1 2C -> 1 + bias: the
    bernoulli head (written by a fused op)."""
    c = channels
    k0 = rng.standard_normal((3, 3, 1, 2 * c)).astype(np.float32)
    k0[1, 1:] = 0
    k0[2] = 0
    arrays = [k0, rng.standard_normal((1, 1, 1, 2 * c)).astype(np.float32),
              (rng.standard_normal((1, 1, c, c)) / np.sqrt(c)).astype(np.float32),
              rng.standard_normal((1, 1, 1, const_bias_channels or 1)).astype(np.float32),
              (rng.standard_normal((1, 1, 2 * c, 1)) / np.sqrt(c)).astype(np.float32),
              rng.standard_normal((1, 1, 1, 1)).astype(np.float32)]
    lo, hi = ",".join(map(str, range(c))), ",".join(map(str, range(c, 2 * c)))
    buffers = [1, 2 * c, 2 * c, c, c, c, c, c, c, c, c, c, c, c, 2 * c, 2 * c, 1, 1, c]
    spec = "\n".join([
        "pixelcnn_fast.column_program 1",
        f"image height={height} width={width} channels=1",
        "buffers channels=" + ",".join(map(str, buffers)),
        f"input index=0 kind=kernel shape=3,3,1,{2 * c}",
        "input index=1 kind=const",
        f"input index=2 kind=kernel shape=1,1,{c},{c}",
        "input index=3 kind=const",
        f"input index=4 kind=kernel shape=1,1,{2 * c},1",
        "input index=5 kind=const",
        "conv out=1 in=0 kernel=0 dh=1 dw=1 padding=same phase=0 name=gate_conv",
        "binary out=2 fn=add a=b1 b=i1 phase=0 name=gate_bias",
        f"gather out=3 in=2 channels={lo} phase=0 name=split_a",
        "act out=4 in=3 fn=tanh alpha=0.2 phase=0 name=tanh",
        f"gather out=5 in=2 channels={hi} phase=0 name=split_b",
        "act out=6 in=5 fn=sigmoid alpha=0.2 phase=0 name=sigmoid",
        "binary out=7 fn=mul a=b4 b=b6 phase=0 name=gate",
        "conv out=8 in=7 kernel=2 dh=1 dw=1 padding=valid phase=0 name=nin",
        "binary out=9 fn=add a=i3 b=b8 phase=0 name=nin_bias",
        f"act out=10 in=9 fn={nin_act} alpha=0.2 phase=0 name=nin_act",
        "binary out=11 fn=add a=b7 b=b10 phase=0 name=residual",
        "act out=12 in=11 fn=neg alpha=0.2 phase=0 name=neg",
        "act out=13 in=11 fn=softplus alpha=0.2 phase=0 name=unread",
        "gather out=18 in=11 channels=" + ",".join(map(str, range(c - 1, -1, -1))) + " phase=0 name=reverse",
        "concat out=14 parts=b18,b12 phase=0 name=concat",
        "act out=15 in=14 fn=elu alpha=0.2 phase=0 name=elu",
        "conv out=16 in=15 kernel=4 dh=1 dw=1 padding=valid phase=0 name=head_conv",
        "binary out=17 fn=add a=b16 b=i5 phase=0 name=head_bias",
        "head kind=bernoulli buffer=17 levels=1 scale=1 offset=0",
        "end", ""])
    return spec, arrays


@pytest.mark.parametrize("channels", [1, 3, 7, 17, 33])
@pytest.mark.parametrize("batch", [1, 4, 8])
@pytest.mark.parametrize("nin_act", ["relu", "leaky_relu", "elu"])
def test_odd_channel_counts_fused_equal_unfused(channels, batch, nin_act, rng):
    spec, arrays = synthetic_program(channels, rng, const_bias_channels=channels if channels > 3 else 1,
                                     nin_act=nin_act)
    into = assert_fused_equals_unfused(spec, arrays, 0, batch, rng)
    # Steps 1..6 (bias, both splits, tanh, sigmoid, gate) in the first conv's epilogue; nin's bias, relu, the
    # residual add, neg, the unread softplus, the reversing gather, concat and elu in nin's; the head's bias in
    # the head conv's.
    assert into == [-1, 0, 0, 0, 0, 0, 0, -1, 7, 7, 7, 7, 7, 7, 7, 7, -1, 16], into
    # In the GEMM's store: the gate conv's bias (a split reads it, not an activation); nin's bias, relu and the
    # residual add when the bias is a row of C values and nin is no narrow (gemm_dot) product; never the 1-channel
    # head's.
    gemm_ops = core_testing.gemm_fused_ops(build(spec, arrays, 0, True))
    nin = 3 if channels > 4 else 0
    assert gemm_ops == [1 if channels > 2 else 0] + [0] * 6 + [nin] + [0] * 10, gemm_ops


def test_fused_program_matches_a_numpy_forward(rng):
    """The synthetic program's head, fused, against the same network written in NumPy (float64)."""
    c, batch = 7, 2
    spec, arrays = synthetic_program(c, rng, height=4, width=5)
    program = build(spec, arrays, 0, True)
    image = rng.integers(0, 2, (batch, 4, 5, 1)).astype(np.float32)
    got = program.teacher_forced(image)
    k0, b0, k1, b1, k2, b2 = [a.astype(np.float64) for a in arrays]
    x = np.pad(image.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    a = sum(np.einsum("nhwc,cd->nhwd", x[:, dy:dy + 4, dx:dx + 5], k0[dy, dx]) for dy in range(3) for dx in range(3))
    a = a + b0[0, 0, 0]
    gate = np.tanh(a[..., :c]) / (1 + np.exp(-a[..., c:]))
    r = gate + np.maximum(np.einsum("nhwc,cd->nhwd", gate, k1[0, 0]) + b1[0, 0, 0], 0)
    e = np.concatenate([r[..., ::-1], -r], -1)
    e = np.where(e > 0, e, np.expm1(e))
    want = np.einsum("nhwc,cd->nhwd", e, k2[0, 0]) + b2[0, 0, 0]
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-5, err


def test_fusion_is_off_when_asked_and_every_step_runs(rng):
    spec, arrays = synthetic_program(3, rng)
    program = build(spec, arrays, 0, False)
    assert core_testing.fused_into(program) == [-1] * 18
    core_testing.set_epilogue_fusion(program, True)
    assert sum(k >= 0 for k in core_testing.fused_into(program)) == 15


def test_profile_attributes_fused_steps_to_themselves(rng):
    """Sampler.profile's per-step times: a fused op's time goes to its own step, the GEMM's to the conv."""
    spec, arrays = synthetic_program(17, rng, height=7, width=8)
    program = build(spec, arrays, 0, True, poison=False)
    prof = program.sample_profile(4, 3, 1.0)
    seconds = {name: sec for name, kind, sec in prof}
    assert seconds["tanh"] > 0 and seconds["sigmoid"] > 0 and seconds["gate_conv"] > 0
    assert seconds["split_a"] == 0 and seconds["split_b"] == 0  # read in place: no work


ZOO = ["gated_shifted", "gated_masked_conditional", "pixelcnn_pp_grey", "pixelcnn_pp_rgb", "vqvae_prior_one_hot"]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_programs_fused_equal_unfused(name, rng):
    """Delayed vertical stacks / u streams (their chains fused at their delay), shifts, gates tanh(a) *
    sigmoid(b) and a * sigmoid(b), concat_elu, class conditioning, RGB colour passes and mixture heads."""
    from fixtures import zoo_models
    from pixelcnn_fast.sampler import Sampler

    zm = zoo_models.build(name, height=6, width=7)
    sampler = Sampler(zm.model, head=zm.head, levels=zm.levels, value_map=zm.value_map)
    batch = 2
    conditions = [np.eye(10, dtype=np.float32)[[3, 8]]] if zm.num_classes else []
    sampler.executor(batch, conditions)
    spec, arrays = sampler.last_spec
    n = batch if conditions else 0
    into = assert_fused_equals_unfused(spec, arrays, n, batch, rng, min_fused=4, levels=zm.levels)
    kinds = [line.split()[0] for line in spec.splitlines() if line.split()[0] in
             ("conv", "binary", "act", "concat", "gather", "softmax", "reduce", "shift")]
    fused_kinds = {kinds[k] for k, root in enumerate(into) if root >= 0}
    assert {"binary", "act"} <= fused_kinds, fused_kinds
    if name.startswith("gated") or name.startswith("pixelcnn_pp"):
        assert "gather" in fused_kinds  # the gates' splits, read in place


# ------------------------------------------------------------------------------------ on grids (issue 16)
# Programs with a `grids` statement (docs/SEMANTICS.md, "Grids"): a scheduled step computes each position of its
# grid at that position's ready raster step; its epilogue runs there too, so only steps on the same grid with the
# same ready step at every position may join it (same_grid_schedule, column_program_grids.cc).

def _grid_of_buffers(spec):
    """Each buffer's grid (fy, fx, ny, nx) from the spec's `grids` statement."""
    line = next(l for l in spec.splitlines() if l.startswith("grids "))
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    return list(zip(*(map(int, fields[k].split(",")) for k in ("fy", "fx", "ny", "nx"))))


def _step_lines(spec):
    return [l for l in spec.splitlines() if l.split()[0] in
            ("conv", "binary", "act", "concat", "gather", "softmax", "reduce", "shift")]


def assert_grid_fusion(spec, arrays, n, batch, rng, levels):
    """Fused == unfused (poisoned rings, bit for bit) and every fused step on its conv's grid, with convs on
    coarse grids (strided, transposed or stride-1 there) among the fused epilogues; returns fused_into."""
    into = assert_fused_equals_unfused(spec, arrays, n, batch, rng, min_fused=4, levels=levels)
    grids, lines = _grid_of_buffers(spec), _step_lines(spec)
    out = [int(dict(f.split("=", 1) for f in l.split()[1:] if "=" in f)["out"]) for l in lines]
    for k, root in enumerate(into):
        if root >= 0:
            assert lines[root].startswith("conv "), lines[root]
            assert grids[out[k]] == grids[out[root]], (lines[root], lines[k])
    coarse_roots = {root for root in into if root >= 0 and grids[out[root]][:2] != (1, 1)}
    assert coarse_roots, "no epilogue on a coarse grid"
    return into


@pytest.mark.parametrize("name,size,hierarchies,batch", [
    ("pixelcnn_pp_unet_grey", (8, 8), 3, 1), ("pixelcnn_pp_unet_rgb", (8, 12), 2, 3),
    ("pixelcnn_pp_unet_grey", (12, 4), 3, 2)])
def test_unet_fused_equals_unfused_and_keras(name, size, hierarchies, batch, rng):
    """The PixelCNN++ U-net's gates, residuals and concat_elus fused on every grid (strided convs' outputs at
    1/2 and 1/4, transposed convs' at full resolution): fused == unfused bit for bit with poisoned rings, and
    the fused teacher forcing equals the Keras model."""
    import tensorflow as tf

    from fixtures import zoo_models
    from pixelcnn_fast.sampler import Sampler

    h, w = size
    zm = zoo_models.build(name, height=h, width=w, hierarchies=hierarchies, seed=int(rng.integers(1 << 16)))
    sampler = Sampler(zm.model, head="logistic_mixture")
    spec, arrays = sampler.last_spec
    assert "\ngrids " in spec
    into = assert_grid_fusion(spec, arrays, 0, batch, rng, 256)
    kinds = {_step_lines(spec)[k].split()[0] for k, root in enumerate(into) if root >= 0}
    assert {"binary", "act", "gather", "concat"} <= kinds, kinds
    fused = build(spec, arrays, 0, True)
    x = zoo_models.example_inputs(zm, batch, rng)
    want = zm.model(tf.constant(x), training=False).numpy()
    err = float(np.abs(fused.teacher_forced(x) - want).max() / np.abs(want).max())
    assert err < 1e-5, err


@pytest.mark.parametrize("size,padding,strides", [((13, 17), "valid", (2, 2)), ((7, 7), "same", (2, 2)),
                                                  ((1, 5), "valid", (2, 2)), ((7, 8), "valid", (3, 3)),
                                                  ((5, 7), "same", (1, 2))])
def test_odd_sizes_on_grids_fused_equal_unfused(size, padding, strides, rng):
    """Sizes the strides do not divide (TF's SAME / VALID rules; the one-stride down-up block of
    tests/test_grids.py): the elu after the strided conv and the transposed conv's bias and elu fused at the
    grids' edges, batch 1 and 2."""
    from test_grids import _down_up_model

    from pixelcnn_fast.sampler import Sampler

    h, w = size
    model = _down_up_model(h, w, padding, int(rng.integers(1 << 16)), strides)
    spec, arrays = Sampler(model, head="logistic_mixture").last_spec
    for batch in (1, 2):
        assert_grid_fusion(spec, arrays, 0, batch, rng, 256)


@pytest.mark.parametrize("channels,conditional,size", [(3, False, (8, 8)), (1, True, (8, 12))])
def test_tfp_pixelcnn_fused_equals_unfused_and_its_network(channels, conditional, size, rng):
    """tfd.PixelCNN (3 hierarchies, weight norm, gated resnets, per-image class embedding on conditional): fused
    == unfused on its grids, and the fused teacher forcing equals TFP's network."""
    from fixtures import zoo_unet

    why = zoo_unet.tfp_available()
    if why:
        pytest.skip(why)
    from pixelcnn_fast.sampler import Sampler

    h, w = size
    z = zoo_unet.tfp_pixelcnn(height=h, width=w, channels=channels, conditional=conditional, hierarchies=3,
                              nr_mix=3, filters=8, seed=int(rng.integers(1 << 16)))
    sampler = Sampler(z.dist)
    batch = 2
    conds = [np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]] if conditional else []
    sampler.executor(batch, conds)
    spec, arrays = sampler.last_spec
    n = batch if conditional else 0
    assert_grid_fusion(spec, arrays, n, batch, rng, 256)
    x = (2.0 * rng.integers(0, 256, (batch, h, w, channels)) / 255.0 - 1.0).astype(np.float32)
    fused = build(spec, arrays, n, True)
    want = np.asarray(sampler.model([x] + conds if conds else x, training=False))
    err = float(np.abs(fused.teacher_forced(x) - want).max() / np.abs(want).max())
    assert err < 1e-5, err


def test_ring_storage_reused_between_calls_starts_clean(rng):
    """The ring caches' storage is kept between calls (RingPool) and filled again for each: a call after others of
    other seeds and batch sizes draws exactly what it drew first, and poisoned caches stay poisoned (a value a step
    forgot to write would show as NaN, not as the last call's)."""
    spec, arrays = synthetic_program(17, rng, height=6, width=7)
    fast, reference = build(spec, arrays, 0, True), build(spec, arrays, 0, False)
    image = rng.integers(0, 2, (3, 6, 7, 1)).astype(np.float32)
    first = fast.sample(3, 11, 1.0, 0)
    head = fast.teacher_forced(image)
    for n, seed in [(5, 12), (3, 13), (1, 14), (3, 11)]:
        fast.sample(n, seed, 1.0, 0)
    again = fast.sample(3, 11, 1.0, 0)
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])
    np.testing.assert_array_equal(fast.teacher_forced(image), head)
    np.testing.assert_array_equal(head, reference.teacher_forced(image))
    assert np.isfinite(head).all()
