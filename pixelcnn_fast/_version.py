"""Package metadata: the version, in one place (the build reads it: build_support/__init__.py)."""
__version__ = "0.1.0"
# The TensorFlow minor version the compiled op library is built for and checked against at import.
TF_REQUIREMENT = "2.21"
