// Core (framework-free C++17): the program record's name tables (program.h), the one place a step kind,
// function or head is spelled.
#include "program.h"

namespace pcf {

template <>
const NameTable<StepKind>& name_table<StepKind>() {
  static const NameTable<StepKind> t = {{"conv", StepKind::kConv},       {"binary", StepKind::kBinary},
                                        {"act", StepKind::kAct},         {"concat", StepKind::kConcat},
                                        {"gather", StepKind::kGather},   {"softmax", StepKind::kSoftmax},
                                        {"reduce", StepKind::kReduce},   {"shift", StepKind::kShift}};
  return t;
}

template <>
const NameTable<BinaryFn>& name_table<BinaryFn>() {
  static const NameTable<BinaryFn> t = {{"add", BinaryFn::kAdd}, {"sub", BinaryFn::kSub}, {"mul", BinaryFn::kMul},
                                        {"div", BinaryFn::kDiv}, {"max", BinaryFn::kMax}, {"min", BinaryFn::kMin}};
  return t;
}

template <>
const NameTable<ActFn>& name_table<ActFn>() {
  static const NameTable<ActFn> t = {{"relu", ActFn::kRelu},           {"relu6", ActFn::kRelu6},
                                     {"elu", ActFn::kElu},             {"selu", ActFn::kSelu},
                                     {"tanh", ActFn::kTanh},           {"sigmoid", ActFn::kSigmoid},
                                     {"softplus", ActFn::kSoftplus},   {"softsign", ActFn::kSoftsign},
                                     {"leaky_relu", ActFn::kLeakyRelu}, {"neg", ActFn::kNeg},
                                     {"exp", ActFn::kExp},             {"square", ActFn::kSquare},
                                     {"abs", ActFn::kAbs},             {"erf", ActFn::kErf}};
  return t;
}

template <>
const NameTable<ReduceFn>& name_table<ReduceFn>() {
  static const NameTable<ReduceFn> t = {
      {"sum", ReduceFn::kSum}, {"mean", ReduceFn::kMean}, {"max", ReduceFn::kMax}, {"min", ReduceFn::kMin}};
  return t;
}

template <>
const NameTable<DrawHead>& name_table<DrawHead>() {
  static const NameTable<DrawHead> t = {
      {"bernoulli", DrawHead::kBernoulli},
      {"logits", DrawHead::kLogits},
      {"probs", DrawHead::kProbs},
      {"logistic_mixture", DrawHead::kLogisticMixture}};
  return t;
}

}  // namespace pcf
