// Pinned host staging ring for sending device (GPU) memory; CUDA builds only
// (PRFAAS_HAVE_CUDA_STAGING). Internal to transport/.
//
// OutboundBundle::Append with MemoryKind::kDevice copies each chunk of the segment from device
// memory into a free slot of this ring (cudaMemcpyAsync on the ring's own stream, device to
// pinned host) and sends the chunk straight from the slot. A slot is free again once the frame
// that carries it has been written (or dropped): the handle Stage() returns releases it when its
// last copy goes away. A full ring blocks Stage() (bounded by a timeout), so a sender never holds
// more pinned memory than slots x slot_bytes however large the bundle. The receiver always
// delivers host bytes; the engine uploads them (docs/wire-format.md, "Device memory").
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include "common/status.h"

namespace prfaas::transport::internal {

class StagingRing : public std::enable_shared_from_this<StagingRing> {
 public:
  // Allocates slots x slot_bytes of pinned host memory; fails when CUDA has no usable device.
  static Result<std::shared_ptr<StagingRing>> Create(size_t slot_bytes, int slots);
  ~StagingRing();
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  // Waits up to `timeout` for a free slot, copies n <= slot_bytes() bytes from device memory at
  // `device_src` into it and waits for the copy. The returned pointer addresses the staged bytes;
  // the slot is released when the last copy of it is destroyed.
  Result<std::shared_ptr<const std::byte>> Stage(const void* device_src, size_t n,
                                                 std::chrono::milliseconds timeout);

  size_t slot_bytes() const { return slot_bytes_; }
  int slots() const { return slots_; }
  size_t capacity() const { return slot_bytes_ * static_cast<size_t>(slots_); }

 private:
  struct Impl;
  StagingRing(size_t slot_bytes, int slots, std::unique_ptr<Impl> impl);
  void Release(int slot);

  const size_t slot_bytes_;
  const int slots_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prfaas::transport::internal
