// Core (framework-free C++17): the text serialisation of a column program (the ProgramSpec record of
// program.h); build_from_spec (column_program.h) builds the executable program from it plus its arrays.
//
// Why text: the TF op carries the program as a string attr (part of the graph, readable in a GraphDef,
// hashable by TF's kernel cache) and its arrays as float inputs, so the constants (kernels after their
// masking mechanism, biases, label embeddings) stay graph tensors that follow the model's variables.
// The Python writer is the front end's spec writer (pixelcnn_fast); both sides print floats with "%.9g" (exact for
// float32), so C++'s canonical form of a Python-written spec is the same string.
//
// Format (version 1). One statement per line; blank lines and lines whose first non-blank character is
// '#' are ignored. A statement is a keyword followed by key=value tokens separated by blanks; every key
// of a statement is required (except name=), keys may come in any order, unknown or repeated keys are
// errors. Lists are comma-separated without blanks. An operand is `b<k>` (buffer k) or `i<k>` (input
// k, i.e. consts[k] of build_from_spec; a Step's constant Operand). Names are percent-encoded (bytes
// <= ' ', >= 0x7f and '%' as %XX) so that a layer path with blanks stays one token.
//
//   pixelcnn_fast.column_program 1                      first statement: magic and version
//   image height=H width=W channels=C
//   buffers channels=c0,c1,...                            c0 == C: buffer 0 is the image
//   input index=k kind=const                              rank-4 (n|1, H|1, W|1, c) constant, added once
//   input index=k kind=kernel shape=kh,kw,cin,cout        a conv's kernel (cin, cout: its buffers' channels)
//   conv out=b in=b kernel=k dh=1 dw=1 padding=same|valid phase=p name=...
//   conv ... padding=offset oy=y ox=x ...                 offset taps: tap (ky, kx) reads (y + ky dh, x + kx dw)
//   binary out=b fn=add|sub|mul|div|max|min a=<operand> b=<operand> phase=p name=...   (<= 1 input operand)
//   act out=b in=b fn=relu|...|erf alpha=0.2 phase=p name=...
//   concat out=b parts=<operand>,<operand>,... phase=p name=...
//   gather out=b in=b channels=0,2,... phase=p name=...
//   softmax out=b in=b group=g log=0|1 phase=p name=...
//   reduce out=b in=b fn=sum|mean|max|min phase=p name=...
//   shift out=b in=b dy=y dx=x phase=p name=...          out[i, j] = in[i + y, j + x], zero outside the image
//   any step may add phases=p,n,p,n,...: its output channels' own phases as runs (n channels of phase p,
//   in channel order, summing to the output's channels, each p <= phase, the largest == phase); without
//   it every channel has the step's phase. The executor then computes a channel only in the colour pass
//   of its own phase (an RGB colour-group model's blocks once each instead of once per channel drawn).
//   Any step may add delay=dy,dx (absent: 0,0): it computes position (i, j) at the raster step
//   (i + dy) W + min(j + dx, W), before the colour passes (phase must be 0); the builder checks that every
//   read finds its value computed (docs/SEMANTICS.md, "Delays"). phases=, delay= and name= are the optional keys.
//   head kind=bernoulli|logits|probs buffer=b levels=L scale=s offset=o
//   head kind=logistic_mixture buffer=b levels=L scale=s offset=o components=K
//                                                         K mixture components (docs/SEMANTICS.md, "Logistic-
//                                                         mixture heads"): buffer b holds 3K (grey) or 10K (RGB)
//                                                         values per pixel, L levels are drawn per channel
//   end                                                   last statement: guards against truncation
//
// Inputs are declared in index order 0, 1, ... before the steps; every const input is added to the
// program (add_const) in index order, so a step's `i<k>` maps to one constant however often it is used.
#pragma once

#include <string>

#include "program.h"

namespace pcf {

// Parses and checks the structure (indices in range, inputs used as declared, kernel shapes against
// buffer channels). Throws std::invalid_argument "program spec line N, token 'T': what".
ProgramSpec parse_program_spec(const std::string& text);
// The canonical text of a spec (no comments, keys in the order of the format above).
std::string format_program_spec(const ProgramSpec& spec);

}  // namespace pcf
