// Core (framework-free C++17): a ColumnProgram as the GPU executor's flat tables (flat_program.h). The one
// place that knows both the program (column_program.h) and the table layout (flat_program.h), so neither of
// those includes the other: the CPU executor builds without the GPU format, and the GPU format (compiled by
// nvcc too) without the CPU executor.
#pragma once

#include <vector>

#include "column_program.h"
#include "flat_program.h"

namespace pcf {

// Which program steps the flat program runs, drops or folds into a conv (epilogue fusion). A conv's output
// buffer read by exactly one step, an activation or a binary step at the same pixel with the same phase and
// channel count, whose other operand (a constant, or a buffer produced before the conv) is ready when the
// conv runs, is folded into the conv: the value goes through that step before it is written, and the step
// and its input buffer disappear from the GPU's step list. Repeated along the chain, keras.io's conv -> bias
// -> relu -> residual add becomes one step: fewer block-wide synchronisations and no round trip through
// memory per elementwise step. The arithmetic is unchanged.
struct FusionPlan {
  std::vector<bool> dead;               // [step]: nothing reads its output (a final sigmoid beside the logits head)
  std::vector<bool> fused;              // [step]: folded into the epilogue of a conv before it
  std::vector<std::vector<int>> chain;  // [conv step]: the steps fused into it, in order
};
FusionPlan plan_fusion(const ColumnProgram& program);

// The flat tables of a program built flattenable (ColumnProgram's constructor, build_from_spec): throws
// std::invalid_argument without a head, std::logic_error for a program built without the GPU's weights.
FlatProgram flatten(const ColumnProgram& program);

}  // namespace pcf
