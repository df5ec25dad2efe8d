// Core (framework-free C++17): a team of threads that stay together for one call and meet at spinning barriers.
//
// The column program's executor splits one position's work across threads when a call has fewer images than
// threads (column_program.h). Its threads meet several times per position, so a meeting must cost well under a
// microsecond: a dispatch through the host's pool per step (a mutex, a condition variable, a wake-up) costs
// tens. A Team instead takes the host's threads once per call (Parallel::for_each with one unit per member,
// on a host whose team_threads() promises they run at once) and its members meet at SpinBarriers: each member
// counts its arrivals in a cache line of its own and waits until every other member's count has reached its own
// (no read-modify-write on a shared line: a meeting of two costs one cache-line transfer each way, not the
// locked increment's extra round trip). Spinning backs off to std::this_thread::yield() after a short while,
// so a busy machine (more runnable threads than cores) lets the late member run instead of livelocking.
//
// Failure: an exception in one member (anything but TeamAborted) is captured, sets the team's abort flag, and
// every other member leaves its next (or current) barrier wait by throwing TeamAborted; Team::run rethrows the
// first exception on the caller once every member has returned. No exception escapes a worker thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>

#include "parallel.h"

namespace pcf {

// Thrown out of SpinBarrier::wait when another member of the team failed; Team::run swallows it.
struct TeamAborted {};

class SpinBarrier {
 public:
  // members >= 1; abort (optional): when set, waiting members throw TeamAborted.
  explicit SpinBarrier(int members, const std::atomic<bool>* abort = nullptr);
  SpinBarrier(const SpinBarrier&) = delete;
  SpinBarrier& operator=(const SpinBarrier&) = delete;
  int members() const { return members_; }
  // Called by member 0..members-1 (each index by one thread): returns once every member has called it this
  // round; writes made before it by any member are visible after it to all. A single-member barrier returns
  // at once.
  void wait(int member);

 private:
  struct alignas(64) Arrivals {
    std::atomic<uint32_t> count{0};  // written by its member only
  };
  std::unique_ptr<Arrivals[]> arrivals_;  // per member, a cache line each
  int members_;
  const std::atomic<bool>* abort_;
};

class Team {
 public:
  explicit Team(int members);
  int members() const { return members_; }
  // Set when a member failed: barriers built with it make the other members leave (TeamAborted).
  const std::atomic<bool>* abort_flag() const { return &abort_; }
  // Calls fn(member) for member 0..members-1, each on its own thread of par, all at once; returns when all
  // have returned and rethrows the first exception one of them raised. Throws std::invalid_argument when par
  // does not promise `members` concurrent threads (Parallel::team_threads), which would deadlock a barrier.
  void run(const Parallel& par, const std::function<void(int member)>& fn);

 private:
  int members_;
  std::atomic<bool> abort_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

namespace testing {
// Mean nanoseconds per SpinBarrier::wait over `rounds` meetings of `members` threads of par (the test seam and
// the report's "synchronisation cost per meeting"); checks on the way that no member passes a round early.
double barrier_ns(const Parallel& par, int members, int64_t rounds);
// `members` threads of par meet `rounds` times; member `failing` throws std::runtime_error("member F failed at
// round R") halfway. Team::run must bring every other member out of its barrier and rethrow that here.
void team_failure(const Parallel& par, int members, int failing, int64_t rounds);
}  // namespace testing

}  // namespace pcf
