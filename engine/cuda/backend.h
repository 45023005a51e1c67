// Device backend of the Engine: the model forward plus the KV block and state slot storage on an
// accelerator. The Engine keeps all bookkeeping (sequences, block tables, refcounts, snapshots)
// and calls this interface where the CPU path touches tensor memory; the host pools (KvBlockPool,
// StateSlotPool) stay allocated and serve as staging buffers for Export/Import, which therefore
// keep producing and consuming host bytes in the documented F32 layout.
//
// Device layouts mirror the host pools: KV [attn layer][block][K|V][block_size][kv_heads*head_dim]
// in the compute dtype (fp32 or bf16), states [slot][gdn layer][conv | ssm] in fp32.
// Not thread-safe (the Engine serialises calls).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"
#include "engine/cache.h"
#include "engine/config.h"
#include "engine/weights.h"

namespace prfaas::engine {

// One sequence's rows in a forward call (tokens are concatenated in span order).
struct DeviceSpan {
  int64_t pos0 = 0;                 // position of the first row
  int64_t t = 0;                    // rows
  std::span<const int32_t> blocks;  // the sequence's block table (covers pos0 + t)
  int32_t slot = -1;                // state slot
};

class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;
  // Runs the model over all spans' tokens, updating KV and states on the device, and writes the
  // logits of each span's last row to logits[i * vocab] (host memory).
  virtual void Forward(std::span<const DeviceSpan> spans, const int32_t* tokens, float* logits) = 0;
  virtual void CopyBlock(int32_t src, int32_t dst) = 0;  // all layers, K and V
  virtual void CopySlot(int32_t src, int32_t dst) = 0;
  virtual void ZeroSlot(int32_t slot) = 0;
  // Staging for Export/Import: whole blocks (all layers) and whole slots, device <-> host pool.
  virtual void DownloadBlocks(std::span<const int32_t> blocks, KvBlockPool* host) = 0;
  virtual void UploadBlocks(std::span<const int32_t> blocks, KvBlockPool* host) = 0;
  virtual void DownloadSlot(int32_t slot, StateSlotPool* host) = 0;
  virtual void UploadSlot(int32_t slot, StateSlotPool* host) = 0;
  virtual std::string Describe() const = 0;  // e.g. "cuda:0 NVIDIA H100 bf16"
};

struct DeviceBackendOptions {
  int64_t num_kv_blocks = 0;
  int64_t kv_block_size = 0;
  int64_t num_state_slots = 0;
  bool bf16 = false;  // weights, activations and KV in bf16 (fp32 accumulation, fp32 state)
  // bf16 only: run attention, conv1d and GDN through the library kernels of kernels/cuda
  // (attention.h, conv1d.h, gdn.h) where their shape limits allow (GDN: d_k = d_v = 128),
  // instead of the backend's own simple kernels (engine/cuda/model_kernels.h).
  bool library_kernels = false;
};

// The CUDA backend. Defined only in builds with PRFAAS_CUDA (engine/cuda/backend.cpp); returns
// UNAVAILABLE when no device is present and UNIMPLEMENTED for shapes its kernels do not cover.
Result<std::unique_ptr<DeviceBackend>> CreateCudaBackend(
    const ModelConfig& config, std::shared_ptr<const ModelWeights> weights,
    const DeviceBackendOptions& options);

}  // namespace prfaas::engine
