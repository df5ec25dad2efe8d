"""Python front end (program IR): the cached sampler's program, from a Keras model to the spec text.

    ir.py               the records: Step, Program, the step vocabulary, LoweringError / NotCausalError
    lower.py            lower(model): trace the model, walk its graph; LOWERINGS maps a TF op type to its
                        lowering function (lower_image_ops.py; integer code inputs: lower_code_ops.py)
    causality.py        frontiers, analyse_causality, each step's phase (NumPy only)
    tf_executor.py      run_program: the pure-TF reference executor
    report.py           check(model): the lowering and causality report
    spec.py             the spec text (csrc/core/program_spec.h): its one writer, and a NumPy reader

Nothing is imported here, so `pixelcnn_fast.program.spec`, `.causality` and `.ir` load without TensorFlow.
"""
