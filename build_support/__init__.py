"""Build: the helpers setup.py runs (not installed; the sdist carries them) -- what is compiled and with which
flags (sources.py: adding a source file is one line there), the toolkit probes (toolkits.py: TensorFlow, nvcc
and the CUDA archs, the TF-GPU toolkit), the TF ops' GPU kernels (tf_gpu.py) and the build_ext command that
compiles the core once and links it into every module, writing pixelcnn_fast/_build_info.py (command.py).

Why setuptools + pybind11 rather than scikit-build-core + CMake: the TF flags come from Python
(tf.sysconfig) anyway, the source list is short, and a small package keeps the build readable; per-file ISA
flags and nvcc objects need only a small build_ext subclass.
"""

import os
import re

# The repository (the unpacked sdist when building a wheel): setup.py's folder.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _version_field(name):
    with open(os.path.join(ROOT, "pixelcnn_fast", "_version.py")) as f:
        return re.search(name + r' = "([^"]+)"', f.read()).group(1)


# Read from pixelcnn_fast/_version.py (the one place the version lives), not imported: the package needs
# its compiled modules (and may need TensorFlow) to import.
VERSION = _version_field("__version__")
TF_REQUIREMENT = _version_field("TF_REQUIREMENT")
