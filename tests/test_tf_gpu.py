"""Tests: the TF ops' GPU kernels (csrc/tf/masked_conv_ops_gpu.cc) -- the build record, the kernel registry,
how the op library links CUDA and that it loads without a GPU (everywhere), and the GPU kernels against the
CPU kernels, the pure-TF reference and the float64 oracle (only where TF sees a GPU and the kernels were
built: skipped with the reason otherwise; the lent GPU machines of this project have no TensorFlow, so
those run on a user's GPU machine).

Where the in-place build has no GPU kernels (the default without a CUDA 12 toolkit) but an nvcc is found,
test_forced_gpu_build_* builds a copy of the tree with PIXELCNN_FAST_TF_GPU=1 (about a minute on 2 cores)
so that the GOOGLE_CUDA compile, the static cudart link and the registration are exercised anyway.
"""

import collections
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from pixelcnn_fast import build_info, reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_PATH = __import__("pathlib").Path(REPO)
OPS = ["PixelcnnFastMaskedConv2D", "PixelcnnFastMaskedConv2DBackpropInput", "PixelcnnFastMaskedConv2DBackpropFilter",
       "PixelcnnFastSample"]
HOST_MEMORY = {"PixelcnnFastMaskedConv2D": [], "PixelcnnFastMaskedConv2DBackpropInput": ["input_shape"],
               "PixelcnnFastMaskedConv2DBackpropFilter": ["kernel_shape"], "PixelcnnFastSample": []}
# The GPU sampler builds its program on the host: every input stays there.
GPU_HOST_MEMORY = dict(HOST_MEMORY, PixelcnnFastSample=["consts", "image_offset", "n", "seed", "temperature"])  # sorted
CUDA_SMS = [75, 80, 86, 89, 90]  # build_support/toolkits.py: DEFAULT_CUDA_ARCHS; the last one also as PTX


def _built():
    return build_info().get("tf_gpu_kernels", "").startswith("built")


def _registered_devices(op):
    from tensorflow.python.framework import kernels

    return {k.device_type: sorted(k.host_memory_arg) for k in kernels.get_registered_kernels_for_op(op).kernel}


def _build_wheels_module():
    spec = importlib.util.spec_from_file_location("build_wheels", os.path.join(REPO, "scripts", "build_wheels.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def link_report(so_path):
    """What an op library needs from CUDA at load time: DT_NEEDED CUDA libraries, undefined cuda* symbols,
    exported cuda* symbols, and the cubins/PTX it carries."""
    from elftools.elf.elffile import ELFFile  # pyelftools (the `test` extra)

    with open(so_path, "rb") as f:
        elf = ELFFile(f)
        needed = [t.needed for t in elf.get_section_by_name(".dynamic").iter_tags() if t.entry.d_tag == "DT_NEEDED"]
        undefined, exported = [], []
        for sym in elf.get_section_by_name(".dynsym").iter_symbols():
            if not re.match(r"_*cu", sym.name):
                continue
            (undefined if sym["st_shndx"] == "SHN_UNDEF" else exported).append(sym.name)
    return {"cuda_needed": [n for n in needed if re.match(r"lib(cuda|cudart|nvidia)", n)],
            "undefined_cuda_symbols": sorted(undefined), "exported_cuda_symbols": sorted(exported),
            "fatbin": sorted(set(_build_wheels_module().fatbin_entries(so_path)))}


def check_link_report(report):
    # cudart is static (TfGpuKernels in build_support/tf_gpu.py): nothing CUDA is needed to load the library, and no
    # cuda* call may bind to another library's definition (libtensorflow_framework.so.2 exports a cudart
    # stub that forwards to TF's libcudart.so.12).
    assert report["cuda_needed"] == [], report
    assert report["undefined_cuda_symbols"] == [], report
    assert report["exported_cuda_symbols"] == [], report
    assert report["fatbin"] == [("elf", sm) for sm in CUDA_SMS] + [("ptx", CUDA_SMS[-1])], report


# --------------------------------------------------------------------------- everywhere: the build

def test_build_info_records_tf_gpu_kernels():
    info = build_info()
    status = info["tf_gpu_kernels"]
    assert re.match(r"built \(CUDA \d+\.\d+", status) or status.startswith("not built: "), status
    if _built():
        assert "tf_gpu" in info["backends"] and info["tf_gpu_cuda"] and status.startswith(
            f"built (CUDA {info['tf_gpu_cuda']}"), info
        assert info["tf_gpu_archs"] == [f"sm_{s}" for s in CUDA_SMS], info
        assert info["tf_gpu_run_on_a_gpu"] is False, info  # built, never executed on a device yet
    else:
        assert "tf_gpu" not in info["backends"] and info["tf_gpu_cuda"] is None and info["tf_gpu_archs"] == []


def test_toolkit_named_by_the_environment_builds_the_kernels():
    # CI assembles a CUDA 12 toolkit (scripts/cuda12_toolkit.py) and names it: then the in-place build must
    # have the GPU kernels, built by that toolkit's CUDA 12 (not skipped as "not built").
    home = os.environ.get("PIXELCNN_FAST_TF_CUDA_HOME")
    if not home:
        pytest.skip("PIXELCNN_FAST_TF_CUDA_HOME is not set (CI sets it; see scripts/cuda12_toolkit.py)")
    info = build_info()
    assert _built(), info["tf_gpu_kernels"]
    assert info["tf_gpu_cuda"].split(".")[0] == tf.sysconfig.get_build_info()["cuda_version"].split(".")[0], info
    record_path = os.path.join(home, "pixelcnn_fast_toolkit.json")
    if os.path.exists(record_path):  # assembled by our script (a system toolkit has no record)
        with open(record_path) as f:
            record = json.load(f)
        assert info["tf_gpu_cuda"] == ".".join(record["debian_version"].split(".")[:2]), (info, record)


def test_kernel_registry_lists_gpu_kernels_exactly_when_built(fast_ops):
    fast_ops.masked_conv2d  # loads the op library (a load failure fails here)
    for op in OPS:
        devices = _registered_devices(op)
        assert devices.get("CPU") == HOST_MEMORY[op], (op, devices)
        if _built():
            assert devices.get("GPU") == GPU_HOST_MEMORY[op], (op, devices)
        else:
            assert "GPU" not in devices, (op, devices, build_info()["tf_gpu_kernels"])


def test_op_library_links_cudart_statically():
    if not _built():
        pytest.skip(f"no TF GPU kernels in this build ({build_info()['tf_gpu_kernels']})")
    check_link_report(link_report(os.path.join(REPO, "pixelcnn_fast", "_tf_ops.so")))


def test_layer_is_not_jit_compiled():
    # A custom op has no XLA kernel, on the GPU neither: jit_compile="auto" must resolve to False.
    from pixelcnn_fast.layers import MaskedConv2D

    assert MaskedConv2D(4, 3, "A").supports_jit is False


# --------------------------------------------------------------------------- everywhere: a forced GPU build

def _find_any_nvcc():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


LOAD_CHECK = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import pixelcnn_fast
    assert os.path.dirname(pixelcnn_fast.__file__) == os.path.join(sys.argv[1], "pixelcnn_fast"), pixelcnn_fast.__file__
    import tensorflow as tf
    from tensorflow.python.framework import kernels
    from pixelcnn_fast import ops, reference
    out = {"build_info": pixelcnn_fast.build_info(), "gpus": len(tf.config.list_physical_devices("GPU")),
           "registered": {op: sorted(k.device_type for k in kernels.get_registered_kernels_for_op(op).kernel)
                          for op in sys.argv[2:]}}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    w = rng.standard_normal((5, 5, 3, 6)).astype(np.float32)
    with tf.device("/CPU:0"):
        got = ops.masked_conv2d(x, w, "A", color_groups=3).numpy()
    want = reference.masked_conv2d(tf.constant(x), tf.constant(w), "A", color_groups=3).numpy()
    out["cpu_forward_err"] = float(np.abs(got - want).max())
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def forced_build(tmp_path_factory):
    """A tree whose _tf_ops.so has the GPU kernels: the in-place build when it has them (CI builds them with
    the CUDA 12 toolkit of scripts/cuda12_toolkit.py), else a copy of the tree built with
    PIXELCNN_FAST_TF_GPU=1 (PIXELCNN_FAST_CUDA=0: no _cuda module)."""
    if _built():
        return REPO_PATH
    nvcc = _find_any_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc found: the TF GPU kernels cannot be compiled here")
    return build_tree_copy(tmp_path_factory.mktemp("forced") / "tree", PIXELCNN_FAST_TF_GPU="1",
                           PIXELCNN_FAST_CUDA="0")


def build_tree_copy(root, **env_updates):
    """Copies the sources to `root` and builds them in place there with the environment's PIXELCNN_FAST_*
    build settings replaced by env_updates; returns root."""
    ignore = shutil.ignore_patterns("*.so", "*.o", "_build_info.py", "__pycache__")
    os.makedirs(root)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), root)
    for name in ("csrc", "pixelcnn_fast", "build_support"):
        shutil.copytree(os.path.join(REPO, name), root / name, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIXELCNN_FAST_TF_CUDA_HOME",
                                                            "PIXELCNN_FAST_TF_GPU", "PIXELCNN_FAST_CUDA_ARCHS")}
    env.update(env_updates)
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-j2"], cwd=root, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return root


def test_forced_gpu_build_links_cudart_statically(forced_build):
    check_link_report(link_report(str(forced_build / "pixelcnn_fast" / "_tf_ops.so")))


def test_forced_gpu_build_loads_and_registers_without_a_gpu(forced_build, tmp_path):
    # A fresh process with no GPU visible and no library path: the op library must load (no CUDA library is
    # needed until a GPU kernel runs), list its GPU kernels, and its CPU kernels must work.
    check_loads_without_a_gpu(forced_build, tmp_path)


def check_loads_without_a_gpu(root, cwd):
    """Runs LOAD_CHECK on the build at `root` with no GPU visible and no library path; checks that every op has
    its CPU and GPU kernel and the CPU kernel works; returns the build's build_info()."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    env.update(PYTHONPATH=str(root), CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", LOAD_CHECK, str(root)] + OPS, cwd=cwd, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    out = json.loads(line[len("RESULT "):])
    info = out["build_info"]
    assert info["tf_gpu_kernels"].startswith("built (CUDA "), info
    assert "tf_gpu" in info["backends"], info
    if root != REPO_PATH:  # the copy is built with PIXELCNN_FAST_CUDA=0
        assert "cuda" not in info["backends"], info
    assert out["gpus"] == 0
    assert out["registered"] == {op: ["CPU", "GPU"] for op in OPS}, out
    assert out["cpu_forward_err"] < 1e-4, out
    return info


# --------------------------------------------------------------------------- GPU only

Case = collections.namedtuple("Case", "n h w cin cout kh kw mask groups dilation padding")

GPU_CASES = [Case(*c) for c in [
    (3, 5, 7, 2, 3, 1, 1, "A", 1, (1, 1), "same"),       # no live tap: output and gradients exactly 0
    (1, 1, 1, 3, 2, 5, 5, "B", 1, (1, 1), "same"),       # one pixel
    (2, 13, 11, 1, 16, 7, 7, "A", 1, (1, 1), "same"),    # the keras.io first layer
    (2, 9, 8, 12, 9, 3, 3, "B", 3, (1, 1), "same"),      # RGB colour groups
    (1, 7, 7, 3, 6, 7, 7, "A", 3, (1, 1), "valid"),      # valid, output 1x1
    (3, 7, 9, 5, 6, 3, 5, "B", 1, (2, 1), "same"),       # unequal dilation
    (1, 13, 17, 4, 2, 5, 3, "A", 1, (2, 2), "valid"),    # dilated valid
    (2, 9, 7, 19, 45, 5, 5, "B", 1, (1, 2), "same"),     # cin off the 8-channel tile, cout past 32
]]


def _case_id(c):
    d = "x".join(map(str, c.dilation))
    return f"n{c.n}-{c.h}x{c.w}-c{c.cin}to{c.cout}-k{c.kh}x{c.kw}{c.mask}-g{c.groups}-d{d}-{c.padding}"


def _out_hw(c):
    if c.padding == "same":
        return c.h, c.w
    return c.h - c.dilation[0] * (c.kh - 1), c.w - c.dilation[1] * (c.kw - 1)


@pytest.fixture
def tf_gpu():
    """The first GPU TF sees, or a skip naming what is missing."""
    if not _built():
        pytest.skip(f"no TF GPU kernels in this build ({build_info()['tf_gpu_kernels']})")
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        pytest.skip("TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)")
    return "/GPU:0"


def _run(fn, device, x, kernel, dy, c):
    """y, dx, dkernel of fn on `device`; the tensors' devices are returned too."""
    kw = dict(color_groups=c.groups, dilation_rate=c.dilation, padding=c.padding)
    with tf.device(device):
        xt, kt = tf.constant(x), tf.constant(kernel)
        with tf.GradientTape() as tape:
            tape.watch([xt, kt])
            y = fn(xt, kt, c.mask, **kw)
        gx, gk = tape.gradient(y, [xt, kt], output_gradients=tf.constant(dy))
    return {"forward": y, "backprop_input": gx, "backprop_filter": gk}


@pytest.mark.parametrize("c", GPU_CASES, ids=_case_id)
def test_gpu_kernels_match_cpu_reference_and_float64(rng, direct, fast_ops, close_to_f64, tf_gpu, c):
    x = rng.standard_normal((c.n, c.h, c.w, c.cin)).astype(np.float32)
    kernel = rng.standard_normal((c.kh, c.kw, c.cin, c.cout)).astype(np.float32)
    dy = rng.standard_normal((c.n, *_out_hw(c), c.cout)).astype(np.float32)
    gpu = _run(fast_ops.masked_conv2d, tf_gpu, x, kernel, dy, c)
    for name, t in gpu.items():
        assert "GPU" in t.device, f"{name} ran on {t.device}, not on the GPU kernel"
    cpu = _run(fast_ops.masked_conv2d, "/CPU:0", x, kernel, dy, c)
    # The pure-TF reference on the CPU: on a GPU, cuDNN may use TF32 and is no float32 yardstick.
    ref = _run(reference.masked_conv2d, "/CPU:0", x, kernel, dy, c)
    args = (c.mask, c.groups, c.dilation, c.padding)
    exact = {"forward": direct.forward(x, kernel, *args),
             "backprop_input": direct.backprop_input(dy, kernel, (c.h, c.w), *args),
             "backprop_filter": direct.backprop_filter(x, dy, (c.kh, c.kw), *args)}
    scale = {"forward": np.max(direct.forward(np.abs(x), np.abs(kernel), *args), initial=0.0),
             "backprop_input": np.max(direct.backprop_input(np.abs(dy), np.abs(kernel), (c.h, c.w), *args),
                                      initial=0.0),
             "backprop_filter": np.max(direct.backprop_filter(np.abs(x), np.abs(dy), (c.kh, c.kw), *args),
                                       initial=0.0)}
    for name in exact:
        close_to_f64(f"GPU {name}", gpu[name].numpy(), ref[name].numpy(), exact[name], scale[name])
        close_to_f64(f"CPU {name}", cpu[name].numpy(), ref[name].numpy(), exact[name], scale[name])
    dead = direct.dense_mask(c.kh, c.kw, c.cin, c.cout, c.mask, c.groups) == 0
    assert np.all(gpu["backprop_filter"].numpy()[dead] == 0.0), "dead filter-gradient entries must be exactly 0"


def test_gpu_kernels_in_a_tf_function(rng, fast_ops, tf_gpu):
    x = rng.standard_normal((2, 10, 9, 6)).astype(np.float32)
    kernel = rng.standard_normal((5, 5, 6, 9)).astype(np.float32)

    def make_step(device):
        @tf.function
        def step(x, k):
            with tf.device(device):
                with tf.GradientTape() as tape:
                    tape.watch([x, k])
                    y = fast_ops.masked_conv2d(x, k, "B", color_groups=3, dilation_rate=2)
                    loss = tf.reduce_sum(y * y)
                return (y,) + tuple(tape.gradient(loss, [x, k]))
        return step

    got = [t.numpy() for t in make_step(tf_gpu)(tf.constant(x), tf.constant(kernel))]
    want = [t.numpy() for t in make_step("/CPU:0")(tf.constant(x), tf.constant(kernel))]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))


def test_gpu_kernels_report_bad_arguments_like_the_cpu_kernels(tf_gpu):
    # The GPU kernels run the CPU kernels' checks (PrepareProblem): same error, same message.
    from pixelcnn_fast._ext import tf_ops

    raw = tf_ops()
    attrs = dict(mask_type="B", color_groups=1, dilations=[1, 1], padding="same")
    messages = []
    for device in (tf_gpu, "/CPU:0"):
        with tf.device(device):
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"masked_conv2d: dy must have shape") as e:
                raw.pixelcnn_fast_masked_conv2d_backprop_input(
                    tf.constant([1, 5, 5, 2]), tf.zeros((3, 3, 2, 4)), tf.zeros((1, 5, 4, 4)), **attrs)
        messages.append(re.search(r"masked_conv2d: dy must have shape \[[^\]]*\] for input shape \[[^\]]*\] "
                                  r"and kernel \[[^\]]*\], got \[[^\]]*\]", str(e.value)).group(0))
    assert messages[0] == messages[1], messages


@pytest.fixture
def restore_policy():
    import keras

    old = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(old)


def test_gpu_layer_under_mixed_float16(rng, restore_policy, tf_gpu):
    # Keras hands the op float16 under mixed precision; ops.masked_conv2d computes in float32 and casts
    # back, on the GPU as on the CPU.
    import keras

    from pixelcnn_fast.layers import MaskedConv2D

    x = rng.standard_normal((2, 7, 9, 3)).astype(np.float32)
    with tf.device(tf_gpu):
        ref_layer = MaskedConv2D(6, 5, "A", color_groups=3)
        y32 = ref_layer(x)
        keras.config.set_dtype_policy("mixed_float16")
        layer = MaskedConv2D(6, 5, "A", color_groups=3)
        layer.build(x.shape)
        layer.set_weights(ref_layer.get_weights())
        y16 = layer(x)
        assert y16.dtype == tf.float16 and "GPU" in y16.device, (y16.dtype, y16.device)
        scale = float(np.max(np.abs(y32)))
        np.testing.assert_allclose(tf.cast(y16, tf.float32).numpy(), y32.numpy(), rtol=0, atol=2e-2 * scale)

        inp = keras.Input((7, 9, 3))
        h = MaskedConv2D(6, 3, "A", color_groups=3, activation="relu")(inp)
        out = MaskedConv2D(3, 1, "B", color_groups=3)(h)
        model = keras.Model(inp, out)
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        w0 = [w.copy() for w in model.get_weights()]
        hist = model.fit(x, x, batch_size=2, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert any(np.any(a != b) for a, b in zip(w0, model.get_weights()))


def test_gpu_sample_op_draws_the_cpu_ops_images(tf_gpu):
    # The TF sampler op's GPU kernel (csrc/tf/sampler_op_gpu.cc -> csrc/cuda/column_program.cu) against its
    # CPU kernel: the same images for a seed up to draws within rounding of a CDF boundary (tolerated for
    # at most one image of four, as tests/test_cuda_sampler.py does with margins).
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fixtures import seed_models
    from pixelcnn_fast import Sampler
    from pixelcnn_fast.tf_sampler import sample_op

    sampler = Sampler(seed_models.categorical4().model, value_map="level/(N-1)")
    with tf.device("/CPU:0"):
        cpu = sample_op(sampler, 4, seed=11).numpy()
    with tf.device(tf_gpu):
        levels = sample_op(sampler, 4, seed=11)
    assert "GPU" in levels.device, levels.device
    gpu = levels.numpy()
    assert gpu.shape == cpu.shape and gpu.dtype == cpu.dtype
    same = [np.array_equal(a, b) for a, b in zip(gpu, cpu)]
    assert sum(same) >= 3, f"images equal per index: {same}"
