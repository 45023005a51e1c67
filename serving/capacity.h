// Capacity: admission control over a worker's KV blocks and state slots.
//
// Every admitted request reserves the most it can ever need (prompt + max_tokens worth of KV
// blocks, one state slot) before it touches the engine, so the engine can never run out of memory
// mid-request: no over-commit, no preemption. Decode admission fails fast (RESOURCE_EXHAUSTED, the
// router tries elsewhere); prefill admission waits its turn (FCFS) up to a deadline.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "common/status.h"

namespace prfaas::serving {

struct Need {
  int64_t blocks = 0;
  int64_t slots = 0;
};

class Capacity {
 public:
  Capacity(int64_t total_blocks, int64_t total_slots);

  // Reserves now or fails with RESOURCE_EXHAUSTED describing what is short.
  Status TryReserve(Need need);
  // Waits in FCFS order until `need` fits, `deadline` passes (DEADLINE_EXCEEDED) or `cancelled()`
  // turns true (CANCELLED; polled every few ms). Needs larger than the total fail at once.
  Status ReserveWait(Need need, std::chrono::steady_clock::time_point deadline,
                     const std::function<bool()>& cancelled);
  void Release(Need need);

  int64_t total_blocks() const { return total_blocks_; }
  int64_t total_slots() const { return total_slots_; }
  int64_t reserved_blocks() const;
  int64_t reserved_slots() const;
  int64_t waiting() const;

 private:
  bool FitsLocked(Need n) const {
    return reserved_blocks_ + n.blocks <= total_blocks_ &&
           reserved_slots_ + n.slots <= total_slots_;
  }
  const int64_t total_blocks_, total_slots_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int64_t reserved_blocks_ = 0, reserved_slots_ = 0;
  std::deque<uint64_t> queue_;  // FCFS tickets of waiters
  uint64_t next_waiter_ = 0;
};

// RAII holder of a reservation.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Capacity* c, Need n) : cap_(c), need_(n) {}
  Reservation(Reservation&& o) noexcept : cap_(o.cap_), need_(o.need_) { o.cap_ = nullptr; }
  Reservation& operator=(Reservation&& o) noexcept {
    Reset();
    cap_ = o.cap_;
    need_ = o.need_;
    o.cap_ = nullptr;
    return *this;
  }
  ~Reservation() { Reset(); }
  void Reset() {
    if (cap_) cap_->Release(need_);
    cap_ = nullptr;
  }

 private:
  Capacity* cap_ = nullptr;
  Need need_;
};

}  // namespace prfaas::serving
