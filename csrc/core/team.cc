// Core (framework-free C++17): a team of threads that stay together for one call and meet at spinning barriers.
#include "team.h"

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace pcf {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Pauses before yielding (a few microseconds): a partner that is running arrives within a few hundred
// nanoseconds (the work between two meetings is a fraction of a position); one that is descheduled needs this
// thread's core.
constexpr int kSpinsBeforeYield = 256;

}  // namespace

SpinBarrier::SpinBarrier(int members, const std::atomic<bool>* abort)
    : arrivals_(new Arrivals[members > 0 ? members : 1]), members_(members), abort_(abort) {}

void SpinBarrier::wait(int member) {
  if (members_ <= 1) return;
  // Round r: this member's count becomes r (release: its writes before it go with it), then it waits until each
  // other member's count is at least r (acquire). Another member cannot be past round r + 1 meanwhile (it waits
  // for this count to reach r + 1), so the signed difference of 32-bit counts never wraps wrongly.
  const uint32_t round = arrivals_[member].count.load(std::memory_order_relaxed) + 1;
  arrivals_[member].count.store(round, std::memory_order_release);
  for (int o = 0; o < members_; ++o) {
    if (o == member) continue;
    for (int spins = 0; static_cast<int32_t>(arrivals_[o].count.load(std::memory_order_acquire) - round) < 0;
         ++spins) {
      if (abort_ != nullptr && abort_->load(std::memory_order_relaxed)) throw TeamAborted{};
      if (spins < kSpinsBeforeYield)
        cpu_relax();
      else
        std::this_thread::yield();
    }
  }
}

Team::Team(int members) : members_(members) {
  if (members < 1) throw std::invalid_argument("Team: members must be >= 1, got " + std::to_string(members));
}

void Team::run(const Parallel& par, const std::function<void(int member)>& fn) {
  if (members_ > 1 && par.team_threads() < members_)
    throw std::invalid_argument("Team: " + std::to_string(members_) + " members need as many concurrent threads, the host promises " +
                                std::to_string(par.team_threads()));
  auto guarded = [&](int member) {
    try {
      fn(member);
    } catch (const TeamAborted&) {
      // another member failed first; its exception is the one rethrown
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      abort_.store(true);
    }
  };
  if (members_ == 1) {
    guarded(0);
  } else {
    par.for_each(members_, 1, [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e; ++m) guarded(static_cast<int>(m));
    });
  }
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    abort_.store(false);
    std::rethrow_exception(e);
  }
}

namespace testing {

double barrier_ns(const Parallel& par, int members, int64_t rounds) {
  Team team(members);
  SpinBarrier barrier(members, team.abort_flag());
  std::vector<std::atomic<int64_t>> reached(members);
  for (auto& r : reached) r.store(0);
  std::atomic<bool> early{false};
  double ns = 0.0;
  team.run(par, [&](int member) {
    barrier.wait(member);  // start together
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t k = 0; k < rounds; ++k) {
      reached[member].store(k + 1, std::memory_order_relaxed);
      barrier.wait(member);
      // After round k every member has stored k + 1 and none can have stored k + 2 yet.
      for (int o = 0; o < members; ++o) {
        const int64_t v = reached[o].load(std::memory_order_relaxed);
        if (v < k + 1 || v > k + 2) early.store(true);
      }
    }
    barrier.wait(member);
    if (member == 0)
      ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / double(rounds);
  });
  if (early.load()) throw std::logic_error("barrier_ns: a member passed a barrier before all had arrived");
  return ns;
}

void team_failure(const Parallel& par, int members, int failing, int64_t rounds) {
  Team team(members);
  SpinBarrier barrier(members, team.abort_flag());
  team.run(par, [&](int member) {
    for (int64_t k = 0; k < rounds; ++k) {
      if (member == failing && k == rounds / 2)
        throw std::runtime_error("member " + std::to_string(member) + " failed at round " + std::to_string(k));
      barrier.wait(member);
    }
  });
}

}  // namespace testing

}  // namespace pcf
