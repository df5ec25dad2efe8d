"""Python front end: `pixelcnn_fast.lowering`, the lowering's former single module, kept as a re-export.

The lowering now lives in pixelcnn_fast/program/ (ir.py, lower.py, causality.py, tf_executor.py, report.py);
this name stays because it is public: `pixelcnn_fast.lowering` is one of the package's submodules (reached
after a bare `import pixelcnn_fast`, see __init__.py), and pixelcnn_fast/cli.py and conversion.py import from it.
New code imports from pixelcnn_fast.program.
"""

from pixelcnn_fast.program.causality import NO_DEPENDENCY, analyse_causality, decode_frontier, encode_frontier
from pixelcnn_fast.program.ir import LoweringError, NotCausalError, Program, Step, conv_kernel_4d, conv_taps
from pixelcnn_fast.program.lower import lower
from pixelcnn_fast.program.report import CheckReport, check
from pixelcnn_fast.program.tf_executor import run_program

__all__ = ["LoweringError", "NotCausalError", "Step", "Program", "CheckReport", "check", "lower",
           "analyse_causality", "run_program", "encode_frontier", "decode_frontier", "NO_DEPENDENCY",
           "conv_kernel_4d", "conv_taps"]
