# Benchmarks (GPU harness support): imports pixelcnn_fast's compiled parts (_core, _cuda, cuda.py) on a machine without TensorFlow.
"""pixelcnn_fast/__init__.py imports the Keras layer, the lowering and the sampler front end, hence TensorFlow.
The GPU benchmark machine has no TensorFlow, but the parts bench_cuda.py needs (pixelcnn_fast._core,
pixelcnn_fast._cuda and their front end pixelcnn_fast.cuda, which reads only _ext / _version / _build_info) do not
need it. ``module("pixelcnn_fast.cuda")`` imports normally when it can and otherwise registers the package
without running its __init__ (a bare package object whose __path__ is the package directory), then imports the
submodule. Nothing is patched when the package imports normally (TensorFlow present).
"""

import importlib
import importlib.util
import sys
import types

PACKAGE = "pixelcnn_fast"


def _bare_package():
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{PACKAGE} is not importable: run from the repository root or set PYTHONPATH to it")
    pkg = types.ModuleType(PACKAGE)
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__file__ = spec.origin
    pkg.__package__ = PACKAGE
    pkg.__spec__ = spec
    pkg.__bare__ = True  # how the harness tells it was loaded without __init__ (for the report)
    sys.modules[PACKAGE] = pkg
    return pkg


INIT_ERROR = None  # why the package __init__ could not run, when module() fell back on the bare package


def module(name):
    """Imports `name` (a pixelcnn_fast submodule). When the package __init__ itself fails (TensorFlow or Keras
    missing, or anything else it imports failing), the submodule is imported from the bare package instead; an
    error of the submodule itself is raised as usual."""
    global INIT_ERROR
    try:
        return importlib.import_module(name)
    except Exception as exc:
        pkg = sys.modules.get(PACKAGE)
        if pkg is not None and not getattr(pkg, "__bare__", False):
            raise  # the package imported fine: the submodule's own error
        if pkg is None:
            INIT_ERROR = "%s: %s" % (type(exc).__name__, exc)
    if sys.modules.get(PACKAGE) is None:
        _bare_package()
    return importlib.import_module(name)


def package_origin():
    """Where pixelcnn_fast was imported from, and whether its __init__ ran."""
    pkg = sys.modules.get(PACKAGE)
    if pkg is None:
        return None
    return {"path": list(getattr(pkg, "__path__", [])), "init_ran": not getattr(pkg, "__bare__", False),
            "init_error": INIT_ERROR}
