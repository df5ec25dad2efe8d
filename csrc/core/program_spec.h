// Core (framework-free C++17): a text serialisation of a column program, and building a ColumnProgram
// from it plus the constant arrays.
//
// Why text: the TF op carries the program as a string attr (part of the graph, readable in a GraphDef,
// hashable by TF's kernel cache) and its arrays as float inputs, so the constants (kernels after their
// masking mechanism, biases, label embeddings) stay graph tensors that follow the model's variables.
// The Python writer is pixelcnn_fast/tf_sampler.py; both sides print floats with "%.9g" (exact for
// float32), so C++'s canonical form of a Python-written spec is the same string.
//
// Format (version 1). One statement per line; blank lines and lines whose first non-blank character is
// '#' are ignored. A statement is a keyword followed by key=value tokens separated by blanks; every key
// of a statement is required (except name=), keys may come in any order, unknown or repeated keys are
// errors. Lists are comma-separated without blanks. An operand is `b<k>` (buffer k) or `i<k>` (input
// k, i.e. consts[k] of build_from_spec). Names are percent-encoded (bytes <= ' ', >= 0x7f and '%' as
// %XX) so that a layer path with blanks stays one token.
//
//   pixelcnn_fast.column_program 1                      first statement: magic and version
//   image height=H width=W channels=C
//   buffers channels=c0,c1,...                            c0 == C: buffer 0 is the image
//   input index=k kind=const                              rank-4 (n|1, H|1, W|1, c) constant, added once
//   input index=k kind=kernel shape=kh,kw,cin,cout        a conv's kernel (cin, cout: its buffers' channels)
//   conv out=b in=b kernel=k dh=1 dw=1 padding=same|valid phase=p name=...
//   binary out=b fn=add|sub|mul|div|max|min a=<operand> b=<operand> phase=p name=...   (<= 1 input operand)
//   act out=b in=b fn=relu|...|erf alpha=0.2 phase=p name=...
//   concat out=b parts=<operand>,<operand>,... phase=p name=...
//   gather out=b in=b channels=0,2,... phase=p name=...
//   softmax out=b in=b group=g log=0|1 phase=p name=...
//   reduce out=b in=b fn=sum|mean|max|min phase=p name=...
//   any step may add phases=p,n,p,n,...: its output channels' own phases as runs (n channels of phase p,
//   in channel order, summing to the output's channels, each p <= phase, the largest == phase); without
//   it every channel has the step's phase. The executor then computes a channel only in the colour pass
//   of its own phase (an RGB colour-group model's blocks once each instead of once per channel drawn).
//   It is the one optional key besides name=.
//   head kind=bernoulli|logits|probs buffer=b levels=L scale=s offset=o
//   end                                                   last statement: guards against truncation
//
// Inputs are declared in index order 0, 1, ... before the steps; every const input is added to the
// program (add_const) in index order, so a step's `i<k>` maps to one constant however often it is used.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "column_program.h"

namespace pcf {

struct SpecOperand {
  bool is_input = false;  // true: consts[index]; false: buffer index
  int index = 0;
};

struct SpecInput {
  bool is_kernel = false;
  int64_t shape[4] = {0, 0, 0, 0};  // kernels: (kh, kw, cin, cout)
};

struct SpecStep {
  StepKind kind = StepKind::kAct;
  int out = 0;
  int in = -1;                        // single-input kinds
  std::vector<SpecOperand> operands;  // binary: (a, b); concat: the parts in order
  int kernel = -1;                    // conv: input index of its kernel
  int dh = 1, dw = 1;
  bool same_padding = true;
  BinaryFn binary = BinaryFn::kAdd;
  ActFn act = ActFn::kRelu;
  float alpha = 0.2f;
  std::vector<int32_t> channels;
  int group = 1;
  bool log = false;
  ReduceFn reduce = ReduceFn::kSum;
  int phase = 0;
  std::vector<int64_t> phase_runs;  // phases=: (phase, count) pairs; empty: every channel at `phase`
  std::string name;
  int line = 0;  // where it was parsed (0: built in code), for build errors
};

struct ProgramSpec {
  int height = 0, width = 0, channels = 0;
  std::vector<int64_t> buffer_channels;
  std::vector<SpecInput> inputs;
  std::vector<SpecStep> steps;
  HeadSpec head;
};

// Parses and checks the structure (indices in range, inputs used as declared, kernel shapes against
// buffer channels). Throws std::invalid_argument "program spec line N, token 'T': what".
ProgramSpec parse_program_spec(const std::string& text);
// The canonical text of a spec (no comments, keys in the order of the format above).
std::string format_program_spec(const ProgramSpec& spec);

// Builds the program through ColumnProgram's add_* API. consts[k] is input k as a rank-4 array in
// ConstTensor's (n, h, w, c) fields: a constant's own shape, a kernel's (kh, kw, cin, cout). batch > 0
// also checks that every constant's first dimension is 1 or batch (the executor indexes it per image).
// Throws std::invalid_argument naming the input or the step's spec line.
ColumnProgram build_from_spec(const ProgramSpec& spec, const std::vector<ConstTensor>& consts, int64_t batch = 0);
ColumnProgram build_from_spec(const std::string& spec, const std::vector<ConstTensor>& consts, int64_t batch = 0);

}  // namespace pcf
