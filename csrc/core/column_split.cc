// Core (framework-free C++17): the column program's threads -- images per thread, or one position's work split
// among the threads of an image group (column_program.h, "Threads").
//
// The split plan says, per step (and colour pass), which output channels each member computes: a conv's GEMM
// segments cut into column windows of gemm_window_unit channels, dealt out in order so each member gets a
// contiguous run of about equal multiply-adds; an activation, binary op or channel gather takes the channels of
// its input's owners when it can (then it reads only what its own thread wrote, and needs no meeting), else an
// even cut; the other kinds (concat, softmax, shift, reduce) run whole on member 0. A step must meet the others
// before it runs when it reads a buffer another member may have written since the last meeting: its
// `unaligned` buffers, checked against what was written at run time (Member::unmet).
//
// Fused epilogues (column_program.cc, plan_epilogues): a conv and the elementwise steps fused into its epilogue
// split as one group, so that every fused op reads only rows its own thread wrote. The conv's column windows are
// the nodes of a union-find; each fused op's output channel joins the nodes of the group channels it reads (a
// gate tanh(a) * sigmoid(b) joins window w of a with window w of b; a broadcast joins them all). Each component
// -- windows plus the op channels that read them -- goes whole to one member, dealt out in order by cost, the
// same for every colour pass (an op may read channels an earlier pass computed at this position, in the
// member's own scratch). A group whose chain mixes every channel thus runs whole on one member while the other
// steps still split. Decided from the program alone, once per program and member count (split_plan); each
// member's conv windows are then copied into dense blocks of its own (gather_plan.h, PackedWindow), so that the
// threads' shares of the weights do not share cache lines, and each core's L2 holds only its own share.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "column_program.h"
#include "kernels.h"

namespace pcf {

ColumnProgram::SplitPlan ColumnProgram::make_split_plan(int members) const {
  prepare();
  SplitPlan plan;
  plan.members = members;
  // One writer per buffer, none writing its own input or the image: then a buffer's value at a position is final
  // once written, and meeting before reads (read-after-write) orders every access.
  // Programs on coarse grids keep one thread per image (their scheduled steps run through run_grid_step).
  if (on_grids()) return plan;
  std::vector<int> writers(buffer_channels_.size(), 0);
  for (const ProgramStep& st : steps_) {
    if (++writers[st.out] > 1 || st.out == 0) return plan;
    for (int b : st.ins)
      if (b == st.out) return plan;
  }
  plan.ok = true;
  const int64_t unit = detail::gemm_window_unit(active_kernels());
  using Owners = std::vector<std::vector<int>>;  // per buffer and channel: the member that writes it (-1: none)
  auto no_owners = [&] {
    Owners o(buffer_channels_.size());
    for (size_t b = 0; b < o.size(); ++b) o[b].assign(buffer_channels_[b], -1);
    return o;
  };
  // Deals units of the given costs out in order: unit u goes to the member whose share of the total holds its middle.
  // A step (or epilogue group) of one unit that writes the head buffer (a Bernoulli head's 1-channel conv) goes to
  // the first member, which draws from it: the draw then needs no meeting (sample(), Member::others_stepped).
  auto deal = [&](const std::vector<double>& cost, bool head = false) {
    if (head && cost.size() == 1) return std::vector<int>(1, 0);
    double total = 0.0;
    for (double c : cost) total += c;
    std::vector<int> who(cost.size(), 0);
    double before = 0.0;
    for (size_t u = 0; u < cost.size(); ++u) {
      who[u] = std::min(members - 1, static_cast<int>((before + cost[u] / 2) * members / std::max(total, 1e-30)));
      before += cost[u];
    }
    return who;
  };
  // Epilogue groups (see the top of this file): per conv step with a fused epilogue, each group buffer's
  // channel -> member, and each conv window unit's member, the same in every pass.
  struct GroupPlan {
    std::vector<std::array<int64_t, 3>> units;  // (segment, c0, c1) windows of the conv's GEMM
    std::vector<int> unit_member;
    std::vector<std::vector<int>> member_of;  // per buffer: per channel, the member that computes it (or empty)
  };
  std::vector<GroupPlan> groups(steps_.size());
  for (size_t k = 0; k < steps_.size(); ++k) {
    if (epilogue_[k].empty()) continue;
    const ProgramStep& conv = steps_[k];
    GroupPlan& gp = groups[k];
    std::vector<double> cost;
    for (size_t g = 0; g < conv.plan.segs.size(); ++g) {
      const detail::Segment& seg = conv.plan.segs[g];
      const int64_t width = seg.d1 - seg.d0, kk = std::max<int64_t>(1, seg.k);
      const int64_t step = seg.dot ? width : unit;  // a narrow segment is one unit
      for (int64_t c0 = 0; c0 < width; c0 += step) {
        gp.units.push_back({int64_t(g), c0, std::min(width, c0 + step)});
        cost.push_back(double(kk) * double(gp.units.back()[2] - c0));
      }
    }
    std::vector<int> parent(gp.units.size());
    for (size_t u = 0; u < parent.size(); ++u) parent[u] = static_cast<int>(u);
    auto find = [&](int u) {
      while (parent[u] != u) u = parent[u] = parent[parent[u]];
      return u;
    };
    auto fresh = [&](double c) {  // a node of its own (an op channel that reads no conv window)
      parent.push_back(static_cast<int>(parent.size()));
      cost.push_back(c);
      return parent.back();
    };
    std::vector<std::vector<int>> node(buffer_channels_.size());  // group buffers: per channel, a node
    node[conv.out].assign(buffer_channels_[conv.out], -1);
    for (size_t u = 0; u < gp.units.size(); ++u) {
      const detail::Segment& seg = conv.plan.segs[gp.units[u][0]];
      for (int64_t ch = seg.d0 + gp.units[u][1]; ch < seg.d0 + gp.units[u][2]; ++ch) node[conv.out][ch] = int(u);
    }
    for (int& nd : node[conv.out])
      if (nd < 0) nd = fresh(0.0);  // a channel no segment writes (no live tap): still owned
    for (size_t s = k + 1; s < steps_.size(); ++s) {  // the fused steps in program order (in-place gathers too)
      if (fused_into_[s] != static_cast<int>(k)) continue;
      const ProgramStep& st = steps_[s];
      const int64_t cout = buffer_channels_[st.out];
      std::vector<int>& out = node[st.out];
      out.assign(cout, -1);
      for (int64_t ch = 0; ch < cout; ++ch) {
        int joined = -1;
        auto read = [&](const Operand& o, int64_t c) {  // the op's channel ch reads channel c of operand o
          if (o.is_const || node[o.index].empty()) return;
          const int nd = node[o.index][c];
          if (joined < 0) {
            joined = find(nd);
          } else {
            const int a = find(nd);
            if (a != joined) {
              parent[a] = joined;
              cost[joined] += cost[a];
            }
          }
        };
        if (st.kind == StepKind::kGather) {
          read(st.operands[0], st.channels[ch]);
        } else if (st.kind == StepKind::kConcat) {
          int64_t off = 0;
          for (const Operand& o : st.operands) {
            const int64_t c = operand_channels(o);
            if (ch >= off && ch < off + c) read(o, ch - off);
            off += c;
          }
        } else {  // act, binary: channel ch, or 0 of a broadcast operand
          for (const Operand& o : st.operands) read(o, operand_channels(o) > 1 ? ch : 0);
        }
        out[ch] = joined >= 0 ? joined : fresh(1.0);
        if (joined >= 0) cost[joined] += 1.0;
      }
    }
    // Components in the order of their first node, dealt out by cost.
    std::vector<int> comp_index(parent.size(), -1), comps;
    std::vector<double> comp_cost;
    for (size_t u = 0; u < parent.size(); ++u) {
      const int r = find(static_cast<int>(u));
      if (comp_index[r] < 0) {
        comp_index[r] = static_cast<int>(comps.size());
        comps.push_back(r);
        comp_cost.push_back(cost[r]);
      }
    }
    bool writes_head = conv.out == head_.buffer;
    for (const FusedOp& op : epilogue_[k]) writes_head = writes_head || steps_[op.step].out == head_.buffer;
    const std::vector<int> who = deal(comp_cost, writes_head);
    auto member_of_node = [&](int nd) { return who[comp_index[find(nd)]]; };
    gp.unit_member.resize(gp.units.size());
    for (size_t u = 0; u < gp.units.size(); ++u) gp.unit_member[u] = member_of_node(static_cast<int>(u));
    gp.member_of.resize(buffer_channels_.size());
    for (size_t b = 0; b < node.size(); ++b)
      for (int nd : node[b]) gp.member_of[b].push_back(member_of_node(nd));
  }
  // Member m's runs of channels of buffer b in [lo, hi).
  auto runs = [](const std::vector<int>& member_of, int m, int64_t lo, int64_t hi) {
    std::vector<std::pair<int64_t, int64_t>> r;
    for (int64_t ch = lo; ch < hi; ++ch) {
      if (member_of[ch] != m) continue;
      if (!r.empty() && r.back().second == ch)
        r.back().second = ch + 1;
      else
        r.emplace_back(ch, ch + 1);
    }
    return r;
  };
  // A conv with its fused epilogue, in one pass (part: its segments and the ops' channel ranges, or whole).
  auto split_group = [&](int k, int p, Owners& owners) {
    const ProgramStep& conv = steps_[k];
    const GroupPlan& gp = groups[k];
    const PassPart* part = p >= 0 && !pass_parts_[k][p].whole ? &pass_parts_[k][p] : nullptr;
    StepSplit sp;
    sp.share.assign(members, Share{});
    for (int m = 0; m < members; ++m) sp.share[m].fused.resize(epilogue_[k].size());
    for (size_t u = 0; u < gp.units.size(); ++u) {
      const auto [g, c0, c1] = gp.units[u];
      if (part != nullptr && std::find(part->segs.begin(), part->segs.end(), int(g)) == part->segs.end()) continue;
      std::vector<int64_t>& w = sp.share[gp.unit_member[u]].windows;
      if (!w.empty() && w[w.size() - 3] == g && w.back() == c0)
        w.back() = c1;  // the same segment's next unit: one wider window
      else
        w.insert(w.end(), {g, c0, c1});
    }
    // Buffers the group reads from outside it: the conv's input (im2col reads every channel at its taps), and
    // the ops' other operands where a channel's reader is not its writer.
    sp.unaligned = conv.ins;
    auto unaligned = [&](int b) {
      if (std::find(sp.unaligned.begin(), sp.unaligned.end(), b) == sp.unaligned.end()) sp.unaligned.push_back(b);
    };
    // Channels computed in this pass: the conv's segments, each op's [lo, hi).
    auto computed = [&](int s, int64_t ch) {
      if (p < 0) return true;
      const PassPart& pp = pass_parts_[s][p];
      if (!pp.run) return false;
      if (steps_[s].kind == StepKind::kConv) {
        for (int g : pp.segs)
          if (ch >= steps_[s].plan.segs[g].d0 && ch < steps_[s].plan.segs[g].d1) return true;
        return false;
      }
      return pp.whole || (ch >= pp.lo && ch < pp.hi);
    };
    for (size_t o = 0; o < epilogue_[k].size(); ++o) {
      const ProgramStep& st = steps_[epilogue_[k][o].step];
      const std::vector<int>& mo = gp.member_of[st.out];
      const int64_t cout = buffer_channels_[st.out];
      for (int m = 0; m < members; ++m) sp.share[m].fused[o] = runs(mo, m, 0, cout);
      int64_t off = 0;
      for (const Operand& op : st.operands) {
        const int64_t c = operand_channels(op);
        if (!op.is_const && gp.member_of[op.index].empty()) {
          for (int64_t ch = 0; ch < cout; ++ch) {
            if (!computed(epilogue_[k][o].step, ch)) continue;
            int64_t rc = c > 1 ? ch : 0;  // the channel of the operand that output channel ch reads
            if (st.kind == StepKind::kGather) rc = st.channels[ch];
            if (st.kind == StepKind::kConcat) {
              if (ch < off || ch >= off + c) continue;
              rc = ch - off;
            }
            if (owners[op.index][rc] != mo[ch]) {
              unaligned(op.index);
              break;
            }
          }
        }
        off += c;
      }
    }
    for (Share& sh : sp.share) {
      sh.run = !sh.windows.empty();
      for (const auto& r : sh.fused) sh.run = sh.run || !r.empty();
    }
    // Who wrote what: the conv's channels and every fused step's (in-place gathers are never read outside).
    for (size_t s = static_cast<size_t>(k); s < steps_.size(); ++s) {
      if (s != static_cast<size_t>(k) && fused_into_[s] != k) continue;
      const int b = steps_[s].out;
      for (int64_t ch = 0; ch < buffer_channels_[b]; ++ch)
        if (computed(static_cast<int>(s), ch)) owners[b][ch] = gp.member_of[b][ch];
    }
    return sp;
  };
  // Step st (pass p's part, or whole: -1); a fused step is its conv's (skipped by the callers).
  auto split = [&](const ProgramStep& st, const PassPart* part, Owners& owners, int p) {
    const int k = static_cast<int>(&st - steps_.data());
    if (!epilogue_[k].empty()) return split_group(k, p, owners);
    const int64_t cout = buffer_channels_[st.out];
    StepSplit sp;
    sp.share.assign(members, Share{});
    std::vector<int> assign(cout, -1);  // the member computing each output channel in this pass
    const bool elementwise = st.kind == StepKind::kAct || st.kind == StepKind::kBinary || st.kind == StepKind::kGather;
    if (st.kind == StepKind::kConv) {
      const detail::GatherPlan& pl = st.plan;
      std::vector<int> segs;
      if (part != nullptr) {
        segs = part->segs;
      } else {
        for (size_t g = 0; g < pl.segs.size(); ++g) segs.push_back(static_cast<int>(g));
      }
      std::vector<std::array<int64_t, 3>> units;  // (segment, c0, c1)
      std::vector<double> cost;
      for (int g : segs) {
        const detail::Segment& seg = pl.segs[g];
        const int64_t width = seg.d1 - seg.d0, k = std::max<int64_t>(1, seg.k);
        const int64_t step = seg.dot ? width : unit;  // a narrow segment is one unit
        for (int64_t c0 = 0; c0 < width; c0 += step) {
          units.push_back({g, c0, std::min(width, c0 + step)});
          cost.push_back(double(k) * double(units.back()[2] - c0));
        }
      }
      const std::vector<int> who = deal(cost, st.out == head_.buffer);
      for (size_t u = 0; u < units.size(); ++u) {
        std::vector<int64_t>& w = sp.share[who[u]].windows;
        const auto [g, c0, c1] = units[u];
        if (!w.empty() && w[w.size() - 3] == g && w.back() == c0)
          w.back() = c1;  // the same segment's next unit: one wider window
        else
          w.insert(w.end(), {g, c0, c1});
        for (int64_t ch = pl.segs[g].d0 + c0; ch < pl.segs[g].d0 + c1; ++ch) assign[ch] = who[u];
      }
    } else if (elementwise) {
      const int64_t lo = part != nullptr ? part->lo : 0, hi = part != nullptr ? part->hi : cout;
      // Follow the owners of the first full-width input buffer: each member then reads what it wrote itself.
      const std::vector<int>* follow = nullptr;
      if (st.kind != StepKind::kGather)
        for (const Operand& o : st.operands)
          if (!o.is_const && buffer_channels_[o.index] == cout) {
            follow = &owners[o.index];
            break;
          }
      for (int64_t ch = lo; follow != nullptr && ch < hi; ++ch)
        if ((*follow)[ch] < 0) follow = nullptr;
      if (follow != nullptr) {
        for (int64_t ch = lo; ch < hi; ++ch) assign[ch] = (*follow)[ch];
      } else {
        std::vector<double> cost;
        for (int64_t c0 = lo; c0 < hi; c0 += unit) cost.push_back(double(std::min(hi, c0 + unit) - c0));
        const std::vector<int> who = deal(cost);
        for (int64_t ch = lo; ch < hi; ++ch) assign[ch] = who[(ch - lo) / unit];
      }
      for (int64_t ch = lo; ch < hi;) {  // runs of one member's channels
        int64_t end = ch + 1;
        while (end < hi && assign[end] == assign[ch]) ++end;
        sp.share[assign[ch]].ranges.emplace_back(ch, end);
        ch = end;
      }
    } else {
      sp.share[0].whole = true;
      std::fill(assign.begin(), assign.end(), 0);
    }
    for (Share& sh : sp.share) sh.run = sh.whole || !sh.windows.empty() || !sh.ranges.empty();
    // A read needs no meeting only where every channel it reads was written by the reading member.
    for (int b : st.ins) {
      bool aligned = (st.kind == StepKind::kAct || st.kind == StepKind::kBinary) && buffer_channels_[b] == cout;
      for (int64_t ch = 0; aligned && ch < cout; ++ch)
        if (assign[ch] >= 0 && owners[b][ch] != assign[ch]) aligned = false;
      if (!aligned && std::find(sp.unaligned.begin(), sp.unaligned.end(), b) == sp.unaligned.end())
        sp.unaligned.push_back(b);
    }
    for (int64_t ch = 0; ch < cout; ++ch)
      if (assign[ch] >= 0) owners[st.out][ch] = assign[ch];
    return sp;
  };
  const size_t nsteps = steps_.size();
  plan.forced.resize(nsteps);
  plan.delayed.resize(nsteps);
  plan.pass.assign(nsteps, std::vector<StepSplit>(c_ + 1));
  // In the order the executor runs them: the delayed steps, then the others (teacher forcing) or the passes.
  // Fused steps have no plan of their own: their conv's group plan covers them.
  Owners forced = no_owners();
  for (int k : delayed_)
    if (fused_into_[k] < 0) plan.forced[k] = split(steps_[k], nullptr, forced, -1);
  for (size_t k = 0; k < nsteps; ++k)
    if (!steps_[k].delayed() && fused_into_[k] < 0) plan.forced[k] = split(steps_[k], nullptr, forced, -1);
  Owners sampled = no_owners();
  for (int k : delayed_)
    if (fused_into_[k] < 0) plan.delayed[k] = split(steps_[k], nullptr, sampled, -1);
  for (int p = 0; p <= c_; ++p)
    for (size_t k = 0; k < nsteps; ++k) {
      const PassPart& part = pass_parts_[k][p];
      if (part.run && fused_into_[k] < 0)
        plan.pass[k][p] = split(steps_[k], part.whole ? nullptr : &part, sampled, p);
    }
  // Each member's conv windows packed densely (gather_plan.h, PackedWindow): once per (step, segment, c0, c1), shared
  // by the plans of teacher forcing, the delayed steps and the passes. A window is not cut at panel widths: its
  // panels then run as one wide tile (kernels_isa.inc, gemm_wide), 8+ FMA chains at once instead of a panel's 2-4.
  const Kernels& kern = active_kernels();
  std::map<std::array<int64_t, 4>, std::shared_ptr<const detail::PackedWindow>> packs;
  auto pack = [&](size_t k, StepSplit& sp) {
    for (Share& sh : sp.share)
      for (size_t w = 0; w + 2 < sh.windows.size(); w += 3) {
        const int64_t g = sh.windows[w], c0 = sh.windows[w + 1], c1 = sh.windows[w + 2];
        std::shared_ptr<const detail::PackedWindow>& pw = packs[{int64_t(k), g, c0, c1}];
        if (!pw)
          pw = std::make_shared<const detail::PackedWindow>(
              detail::pack_segment_window(kern, steps_[k].plan, static_cast<int>(g), c0, c1));
        sh.packed.push_back(pw);
      }
  };
  auto finish = [&](size_t k, StepSplit& sp) {
    pack(k, sp);
    for (size_t m = 1; m < sp.share.size(); ++m) sp.others_run = sp.others_run || sp.share[m].run;
  };
  for (size_t k = 0; k < nsteps; ++k) {
    finish(k, plan.forced[k]);
    finish(k, plan.delayed[k]);
    for (StepSplit& sp : plan.pass[k]) finish(k, sp);
  }
  return plan;
}

std::shared_ptr<const ColumnProgram::SplitPlan> ColumnProgram::split_plan(int members) const {
  prepare();
  auto cached = [&]() -> std::shared_ptr<const SplitPlan> {
    for (const auto& p : split_plans_.plans)
      if (p->members == members) return p;
    return nullptr;
  };
  {
    std::lock_guard<std::mutex> lock(split_plans_.mutex);
    if (auto p = cached()) return p;
  }
  auto plan = std::make_shared<const SplitPlan>(make_split_plan(members));  // outside the lock (prepare() locks)
  std::lock_guard<std::mutex> lock(split_plans_.mutex);
  if (auto p = cached()) return p;  // another thread built it meanwhile
  split_plans_.plans.push_back(plan);
  return plan;
}

std::vector<std::vector<int64_t>> ColumnProgram::split_work(int members) const {
  if (members < 1) throw std::invalid_argument("split_work: members must be >= 1, got " + std::to_string(members));
  const SplitPlan plan = make_split_plan(members);
  std::vector<std::vector<int64_t>> work;
  if (!plan.ok) return work;
  for (size_t k = 0; k < steps_.size(); ++k) {
    std::vector<int64_t> per(members, 0);
    const StepSplit& sp = plan.forced[k];
    for (int m = 0; m < members && !sp.share.empty(); ++m) {
      const Share& sh = sp.share[m];
      if (sh.whole) per[m] += buffer_channels_[steps_[k].out];
      for (size_t w = 0; w + 2 < sh.windows.size(); w += 3) per[m] += sh.windows[w + 2] - sh.windows[w + 1];
      for (const auto& [lo, hi] : sh.ranges) per[m] += hi - lo;
      for (const auto& op : sh.fused)
        for (const auto& [lo, hi] : op) per[m] += hi - lo;
    }
    work.push_back(per);
  }
  return work;
}

int64_t ColumnProgram::run_split(Slice& s, int k, const StepSplit& sp, int64_t i, int64_t j, const PassPart* part,
                                 int p, int64_t* ns) const {
  const ProgramStep& st = steps_[k];
  Member& me = *s.member;
  for (int b : sp.unaligned)
    if (me.unmet(b)) {
      me.meet();
      break;
    }
  const Share& sh = sp.share[me.index];
  int64_t fused_ns = 0;
  if (sh.whole) {
    run_step(s, st, i, j, part);
  } else if (!epilogue_[k].empty()) {  // a conv with its fused epilogue: this member's windows and op ranges
    if (!sh.windows.empty()) run_step(s, st, i, j, part, &sh.packed);
    if (sh.run) fused_ns = run_epilogue(s, k, i, j, p, ns, &sh);
    for (const FusedOp& op : epilogue_[k]) me.wrote(steps_[op.step].out);
  } else if (!sh.windows.empty()) {
    run_step(s, st, i, j, part, &sh.packed);
  } else {
    for (const auto& [lo, hi] : sh.ranges) {
      PassPart range;
      range.run = true;
      range.whole = false;
      range.lo = lo;
      range.hi = hi;
      run_step(s, st, i, j, &range);
    }
  }
  me.wrote(st.out);
  me.others_stepped = me.others_stepped || sp.others_run;
  return fused_ns;
}

namespace {
std::atomic<int> split_policy{static_cast<int>(PositionSplit::kAuto)};
}  // namespace

void set_position_split(PositionSplit policy) { split_policy.store(static_cast<int>(policy)); }
PositionSplit position_split() { return static_cast<PositionSplit>(split_policy.load()); }

namespace {
constexpr int64_t kWarmPositions = 2;  // split positions boundary() does not time
constexpr int kSkipAfterSolo = 15;     // the most calls that do not try the split after one that fell back
constexpr int kRetimeCalls = 64;       // kAuto keeps one thread per image to time its pace again after this many splits
constexpr double kSlowerBy = 1.15;     // a window this much slower than one thread's pace is slow (boundary())
constexpr int64_t kStallNs = 2000000;  // a window this far behind one thread's pace leaves at once (boundary())
int64_t clock_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

bool ColumnProgram::start_row(Slice& s, Member* mine, int64_t i, bool cancelled, bool* stop) const {
  *stop = false;
  if (mine == nullptr) {  // images per thread
    *stop = cancelled;
    return !cancelled;
  }
  Member::Group& g = *mine->group;
  if (g.solo) {  // only member 0 is left
    *stop = cancelled;
    return !cancelled;
  }
  if (mine->index == 0) g.stop = cancelled;
  s.member = mine;
  mine->meet();
  *stop = g.stop;
  return !g.stop;
}

bool ColumnProgram::boundary(Slice& s) const {
  Member& me = *s.member;
  Member::Group& g = *me.group;
  if (me.index == 0 && g.timed) {
    // The first two split positions warm the other threads' caches (their share of the weights) and are not
    // timed. Then the split's pace over a window of a row's positions (at least 8) is compared with one thread's
    // (solo_ns: an earlier call's whole-image pace on one thread, for_each_member), and the group finishes alone
    // when two windows in a row were kSlowerBy slower, or at once when a window is kStallNs behind that pace (a
    // thread descheduled for a scheduler slice: a busy machine). Two windows, not one: this VM stalls both
    // threads for ~0.1-1 ms now and then, and each such window sent the next calls to one thread.
    const int64_t now = clock_ns(), window = std::max<int64_t>(8, w_);
    if (g.split_positions >= kWarmPositions) {
      if (g.window_positions == 0) g.window_start = now;
      const int64_t behind = (now - g.window_start) - g.window_positions * g.solo_ns;
      if (behind > kStallNs || g.always_slow) g.solo = true;
      if (g.window_positions >= window) {
        const bool slow = double(now - g.window_start) / double(g.window_positions) > kSlowerBy * double(g.solo_ns);
        if (slow && g.slow_window) g.solo = true;
        g.slow_window = slow;
      }
      g.window_positions = g.window_positions >= window ? 0 : g.window_positions + 1;
    }
    ++g.split_positions;
  }
  me.meet();
  if (!g.solo) return true;
  s.member = nullptr;
  return me.index == 0;
}

void ColumnProgram::for_each_member(int64_t n, const Parallel& par, bool teacher,
                                    const std::function<void(Slice&)>& body) const {
  const int threads = std::min(par.num_threads(), par.team_threads());
  const PositionSplit policy = position_split();
  // After a call whose split was slower than one thread (a busy machine), the next calls of this program keep one
  // thread per image without trying (each try costs a few split positions), then it tries again: 1 call after a
  // first fallback, then 2, 4, 8 and at most kSkipAfterSolo while the tries keep falling back; a split that holds
  // to the end starts over at 1. A fixed 15 made one transient disturbance cost 15 calls: right after TensorFlow
  // ran, its pool's threads still spin for a while, and keras.io's batch-1 calls after a `model(x)` each read
  // 11.6 ms median against 7.6 ms (docs/SAMPLER.md).
  bool skip = false;
  const bool timed = policy == PositionSplit::kAuto || policy == PositionSplit::kAutoSlow;
  if (timed) {
    int left = split_skips_.load(std::memory_order_relaxed);
    while (left > 0 && !split_skips_.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
    }
    skip = left > 0;
  }
  const bool could_split = threads > 1 && n < threads && policy != PositionSplit::kNever;
  // kAuto compares the split's pace with one thread's, timed by the calls that keep one thread per image: the
  // skipped ones, a program's first call that could split, and one after every kRetimeCalls splits. Until session
  // 15 every call timed row 0 with member 0 alone instead: that read ~28 us per keras.io position against one
  // thread's 20 (member 0 alone with half the weights in the other core's cache), so splits up to 1.75x slower
  // than one thread held (two vCPUs on distant cores: 22.9 ms against 16.5 on one thread), and it cost the
  // others' idle wait through row 0 in every call.
  const int slot = teacher ? 1 : 0;
  bool time_solo = false;
  if (could_split && skip) {
    split_calls_[2].fetch_add(1, std::memory_order_relaxed);
    time_solo = policy == PositionSplit::kAuto;
  }
  if (could_split && !skip) {
    // Image groups: image g gets threads [threads * g / n, threads * (g + 1) / n).
    auto first_of = [&](int64_t g) { return static_cast<int>(threads * g / n); };
    std::vector<std::shared_ptr<const SplitPlan>> plans;  // by member count (at most two counts)
    for (int64_t g = 0; g < n; ++g) {
      const int m = first_of(g + 1) - first_of(g);
      bool have = false;
      for (const auto& p : plans) have = have || p->members == m;
      if (!have) plans.push_back(split_plan(m));
    }
    int64_t pace = 0;
    if (plans.front()->ok && policy == PositionSplit::kAuto) {
      pace = solo_pace_ns_[slot].load(std::memory_order_relaxed);
      time_solo = pace <= 0 || paced_calls_left_[slot].fetch_sub(1, std::memory_order_relaxed) <= 0;
      if (time_solo) split_calls_[3].fetch_add(1, std::memory_order_relaxed);
    }
    if (plans.front()->ok && !time_solo) {
      Team team(threads);
      std::vector<Slice> rings;  // each group's shared ring caches, allocated here before the threads start
      std::vector<std::unique_ptr<SpinBarrier>> barriers;
      std::unique_ptr<Member::Group[]> groups(new Member::Group[n]);
      for (int64_t g = 0; g < n; ++g) {
        groups[g].timed = timed;
        groups[g].solo_ns = pace;
        groups[g].always_slow = policy == PositionSplit::kAutoSlow;
      }
      for (int64_t g = 0; g < n; ++g) {
        rings.push_back(make_slice(g, g + 1));
        barriers.push_back(std::make_unique<SpinBarrier>(first_of(g + 1) - first_of(g), team.abort_flag()));
      }
      team.run(par, [&](int r) {
        int64_t g = 0;
        while (first_of(g + 1) <= r) ++g;
        const int m = first_of(g + 1) - first_of(g);
        Slice s = make_slice(g, g + 1, &rings[g]);
        s.split_group = true;
        Member me;
        if (m > 1) {  // a group of one thread runs as a slice of its own
          me.index = r - first_of(g);
          me.teacher = teacher;
          me.barrier = barriers[g].get();
          for (const auto& p : plans)
            if (p->members == m) me.plan = p.get();
          me.group = &groups[g];
          me.written.assign(buffer_channels_.size(), 0);
          s.member = &me;
        }
        body(s);
      });
      bool fell_back = false;
      for (int64_t g = 0; g < n; ++g) fell_back = fell_back || groups[g].solo;
      if (fell_back) {
        const int skips = std::max(1, split_backoff_.load(std::memory_order_relaxed));
        split_skips_.store(skips, std::memory_order_relaxed);
        split_backoff_.store(std::min(kSkipAfterSolo, 2 * skips), std::memory_order_relaxed);
      } else {
        split_backoff_.store(1, std::memory_order_relaxed);
      }
      split_calls_[fell_back ? 1 : 0].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  // Images per thread: one contiguous slice each, no synchronisation between positions. Exceptions are carried
  // to the caller (none may leave a worker thread).
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n, par.num_threads()));
  std::mutex error_mutex;
  std::exception_ptr error;
  std::atomic<bool> cancelled{false};
  const int64_t start_ns = time_solo ? clock_ns() : 0;
  par.for_each(chunks, int64_t(h_) * w_ * (macs_per_position() + 1), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      try {
        Slice s = make_slice(n * c / chunks, n * (c + 1) / chunks);
        body(s);
        if (s.cancelled) cancelled.store(true, std::memory_order_relaxed);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  });
  if (error) std::rethrow_exception(error);
  // One image per thread (n < threads): the call's time is one image's, h x w positions. A cancelled call ran
  // fewer, so its pace would read fast (and the next splits fall back against it): it keeps the pace it had, and
  // a program with none times its next call again.
  if (time_solo && !cancelled.load(std::memory_order_relaxed)) {
    const int64_t pace = std::max<int64_t>(1, (clock_ns() - start_ns) / (int64_t(h_) * w_));
    solo_pace_ns_[slot].store(static_cast<int>(std::min<int64_t>(pace, 1 << 30)), std::memory_order_relaxed);
    paced_calls_left_[slot].store(kRetimeCalls, std::memory_order_relaxed);
  }
}

}  // namespace pcf
