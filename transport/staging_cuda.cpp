#include "transport/staging_cuda.h"

#include <cuda_runtime_api.h>

#include <condition_variable>
#include <mutex>
#include <vector>

namespace prfaas::transport::internal {
namespace {

std::string CudaText(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

}  // namespace

struct StagingRing::Impl {
  std::byte* base = nullptr;  // cudaHostAlloc'ed, slots x slot_bytes
  cudaStream_t stream = nullptr;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> free;  // slot indexes
  std::mutex copy_mu;     // one D2H copy on the ring's stream at a time
};

Result<std::shared_ptr<StagingRing>> StagingRing::Create(size_t slot_bytes, int slots) {
  if (slot_bytes == 0 || slots < 1) return InvalidArgument("empty staging ring");
  int devices = 0;
  cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0)
    return FailedPrecondition("device memory needs a CUDA device: " +
                              (e != cudaSuccess ? CudaText(e) : std::string("none found")));
  auto impl = std::make_unique<Impl>();
  void* p = nullptr;
  if ((e = cudaHostAlloc(&p, slot_bytes * static_cast<size_t>(slots), cudaHostAllocDefault)) !=
      cudaSuccess)
    return ResourceExhausted("cudaHostAlloc of the staging ring: " + CudaText(e));
  impl->base = static_cast<std::byte*>(p);
  if ((e = cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking)) != cudaSuccess) {
    cudaFreeHost(p);
    return Unavailable("cudaStreamCreate: " + CudaText(e));
  }
  for (int i = slots - 1; i >= 0; --i) impl->free.push_back(i);
  return std::shared_ptr<StagingRing>(new StagingRing(slot_bytes, slots, std::move(impl)));
}

StagingRing::StagingRing(size_t slot_bytes, int slots, std::unique_ptr<Impl> impl)
    : slot_bytes_(slot_bytes), slots_(slots), impl_(std::move(impl)) {}

StagingRing::~StagingRing() {
  // Every handle holds the ring, so no slot is in use here.
  cudaStreamDestroy(impl_->stream);
  cudaFreeHost(impl_->base);
}

void StagingRing::Release(int slot) {
  {
    std::lock_guard lk(impl_->mu);
    impl_->free.push_back(slot);
  }
  impl_->cv.notify_one();
}

Result<std::shared_ptr<const std::byte>> StagingRing::Stage(const void* device_src, size_t n,
                                                            std::chrono::milliseconds timeout) {
  if (n > slot_bytes_) return InvalidArgument("staged piece larger than a ring slot");
  int slot;
  {
    std::unique_lock lk(impl_->mu);
    if (!impl_->cv.wait_for(lk, timeout, [&] { return !impl_->free.empty(); }))
      return DeadlineExceeded("no free staging slot for " + std::to_string(timeout.count()) +
                              " ms (frames are not leaving)");
    slot = impl_->free.back();
    impl_->free.pop_back();
  }
  // From here the handle owns the slot, also on the error paths below.
  std::byte* dst = impl_->base + static_cast<size_t>(slot) * slot_bytes_;
  std::shared_ptr<const std::byte> handle(
      dst, [ring = shared_from_this(), slot](const std::byte*) { ring->Release(slot); });
  cudaError_t e;
  {
    std::lock_guard lk(impl_->copy_mu);
    e = cudaMemcpyAsync(dst, device_src, n, cudaMemcpyDeviceToHost, impl_->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(impl_->stream);
  }
  if (e != cudaSuccess)
    return InvalidArgument(
        "copying a device segment to the staging ring failed (is it device "
        "memory?): " +
        CudaText(e));
  return handle;
}

}  // namespace prfaas::transport::internal
