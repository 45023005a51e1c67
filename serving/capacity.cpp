#include "serving/capacity.h"

#include <algorithm>

namespace prfaas::serving {

Capacity::Capacity(int64_t total_blocks, int64_t total_slots)
    : total_blocks_(total_blocks), total_slots_(total_slots) {}

Status Capacity::TryReserve(Need need) {
  std::lock_guard<std::mutex> lock(mu_);
  // Waiting prefills go first; a fast-path reservation must not overtake them.
  if (queue_.empty() && FitsLocked(need)) {
    reserved_blocks_ += need.blocks;
    reserved_slots_ += need.slots;
    return Status::Ok();
  }
  return ResourceExhausted("worker at capacity: needs " + std::to_string(need.blocks) +
                           " KV blocks and " + std::to_string(need.slots) + " state slots; " +
                           std::to_string(total_blocks_ - reserved_blocks_) + "/" +
                           std::to_string(total_blocks_) + " blocks and " +
                           std::to_string(total_slots_ - reserved_slots_) + "/" +
                           std::to_string(total_slots_) + " slots free");
}

Status Capacity::ReserveWait(Need need, std::chrono::steady_clock::time_point deadline,
                             const std::function<bool()>& cancelled) {
  if (need.blocks > total_blocks_ || need.slots > total_slots_) {
    return ResourceExhausted("request needs " + std::to_string(need.blocks) +
                             " KV blocks but the worker has only " + std::to_string(total_blocks_));
  }
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t me = next_waiter_++;
  queue_.push_back(me);
  for (;;) {
    if (queue_.front() == me && FitsLocked(need)) {
      queue_.pop_front();
      reserved_blocks_ += need.blocks;
      reserved_slots_ += need.slots;
      cv_.notify_all();
      return Status::Ok();
    }
    Status fail;
    if (cancelled && cancelled()) fail = Cancelled("cancelled while waiting for capacity");
    if (std::chrono::steady_clock::now() >= deadline) {
      fail = DeadlineExceeded("timed out waiting for KV capacity");
    }
    if (!fail.ok()) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), me));
      cv_.notify_all();
      return fail;
    }
    cv_.wait_for(lock, std::chrono::milliseconds(20));
  }
}

void Capacity::Release(Need need) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    reserved_blocks_ -= need.blocks;
    reserved_slots_ -= need.slots;
  }
  cv_.notify_all();
}

int64_t Capacity::reserved_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_blocks_;
}
int64_t Capacity::reserved_slots() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_slots_;
}
int64_t Capacity::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

}  // namespace prfaas::serving
