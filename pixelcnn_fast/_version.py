"""Package metadata: the version, in one place (setup.py reads it)."""
__version__ = "0.1.0"
# The TensorFlow minor version the compiled op library is built for and checked against at import.
TF_REQUIREMENT = "2.21"
