// Engine: runs a hybrid Gated DeltaNet + gated GQA model on CPU over many sequences.
//
// A sequence owns a block table into the KvBlockPool (attention K/V, paged) and one slot of the
// StateSlotPool (GDN conv + recurrent state valid at the sequence's current length).
//
//   auto eng = Engine::Create(config, weights, {}).value();
//   SequenceId s = eng->AddSequence().value();
//   std::vector<float> logits;                        // [n, vocab] (last row per sequence)
//   eng->Prefill({&s, 1}, {&prompt, 1}, &logits);     // chunked; may be called again to extend
//   int32_t tok = kernels::cpu::SampleToken(logits, params, /*counter=*/0);
//   eng->Decode({&s, 1}, {&tok, 1}, &logits);         // one token per sequence per call
//
// Guarantees
//  * Batch composition never changes a sequence's results: Prefill runs each sequence on its own
//    (fixed chunking), Decode uses row-invariant kernels, so logits are bit-identical whatever
//    other sequences share the call.
//  * Prefill is resumable: a sequence created from shared KV blocks + a state snapshot
//    (AddSequenceFromPrefix) continues exactly like one that prefilled the prefix itself,
//    provided the prefix was prefilled with the same chunk boundaries (e.g. the snapshot length is
//    a multiple of options.prefill_chunk).
//  * Export/Import move a sequence's attention KV for a token range and its GDN state as opaque
//    per-layer byte segments; importing into another Engine with the same model continues
//    bit-exactly.
// With EngineOptions.device = "cuda" the same API runs on the GPU (engine/cuda/backend.h; the
// bookkeeping stays here). The bit-exact guarantees above are the CPU's; the GPU agrees with them
// within the tolerances in docs/engine.md "CUDA backend".
// Not thread-safe: one caller thread at a time (kernels use OpenMP internally).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/cache.h"
#include "engine/config.h"
#include "engine/weights.h"
#include "kernels/cpu/ops.h"

namespace prfaas::engine {

class DeviceBackend;  // engine/cuda/backend.h

using SequenceId = int64_t;
using SnapshotId = int32_t;
using kernels::cpu::SamplingParams;

struct EngineOptions {
  int64_t kv_block_size = 64;
  int64_t num_kv_blocks = 256;
  int64_t num_state_slots = 32;  // running sequences + live snapshots
  int64_t prefill_chunk = 512;   // tokens per prefill forward pass (multiple of gdn_chunk is best)
  int64_t gdn_chunk = 64;        // WY/UT chunk of the GDN prefill kernel
  // Where the model runs: "cpu" (fp32, bit-exact guarantees above) or "cuda" (builds with
  // PRFAAS_CUDA; weights, KV and state on the GPU, see docs/engine.md "CUDA backend").
  std::string device = "cpu";
  std::string dtype = "fp32";  // "fp32" | "bf16" (cuda only)
  // cuda + bf16: use the library attention / conv1d / GDN kernels (kernels/cuda) where they apply.
  bool cuda_library_kernels = false;
};

// Transfer format. The transport carries Segment bytes opaquely; SegmentDesc says what they are.
enum class SegmentKind : uint8_t { kAttnKv = 0, kConvState = 1, kSsmState = 2 };
const char* SegmentKindName(SegmentKind kind);

struct SegmentDesc {
  int32_t layer = 0;  // model layer index (0-based, over all layers)
  SegmentKind kind = SegmentKind::kAttnKv;
  // kAttnKv: tokens [token_begin, token_end). States: token_begin == token_end == the sequence
  // length at which the state is valid.
  int64_t token_begin = 0;
  int64_t token_end = 0;
  // Row-major float32 ("F32") layouts:
  //   kAttnKv    [2, token_end - token_begin, kv_heads, head_dim]  (K rows, then V rows; K is
  //              stored after k_norm and RoPE, i.e. exactly what attention reads)
  //   kConvState [K-1, conv_dim], channels q|k|v (pre-conv inputs, oldest row first)
  //   kSsmState  [H_v, d_k, d_v] (K-major)
  std::vector<int64_t> shape;
  std::string dtype = "F32";
};

struct Segment {
  SegmentDesc desc;
  std::vector<uint8_t> bytes;
};

struct SequenceExport {
  uint64_t model_fingerprint = 0;  // Engine::ModelFingerprint() of the exporter
  int64_t num_tokens = 0;          // sequence length after import
  std::vector<Segment> segments;
};

struct EngineStats {
  int64_t kv_blocks_total = 0, kv_blocks_free = 0, kv_bytes_capacity = 0, kv_bytes_used = 0;
  int64_t state_slots_total = 0, state_slots_free = 0, state_bytes_capacity = 0,
          state_bytes_used = 0;
  int64_t sequences = 0, snapshots = 0;
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> Create(const ModelConfig& config,
                                                std::shared_ptr<const ModelWeights> weights,
                                                const EngineOptions& options);

  ~Engine();

  const ModelConfig& config() const { return config_; }
  const EngineOptions& options() const { return options_; }
  EngineStats Stats() const;
  // Hash of the layer shapes; Import refuses exports from a different model shape.
  uint64_t ModelFingerprint() const;

  // Sequences.
  Result<SequenceId> AddSequence();
  // Starts a sequence of `num_tokens` tokens from shared KV blocks (ceil(num_tokens/block_size)
  // live block ids, refcounted, copied on write) and a state snapshot taken at num_tokens.
  Result<SequenceId> AddSequenceFromPrefix(std::span<const int32_t> blocks, int64_t num_tokens,
                                           SnapshotId state);
  // Same, without a snapshot: the sequence gets a fresh (zero) state slot, so it is only meant
  // to be completed by Import(), which brings the KV after num_tokens and the state at the end.
  // The decode side uses it to join a cached attention prefix with a transferred suffix + state.
  Result<SequenceId> AddSequenceFromBlocks(std::span<const int32_t> blocks, int64_t num_tokens);
  Status Release(SequenceId seq);
  Result<int64_t> Length(SequenceId seq) const;
  Result<std::vector<int32_t>> BlockTable(SequenceId seq) const;
  // Holds a reference on a block (e.g. for a prefix cache) / drops it.
  Status RefBlock(int32_t block);
  Status UnrefBlock(int32_t block);

  // Appends tokens[i] to seqs[i] (any current length, chunked internally) and writes the logits
  // of each sequence's last token to (*logits)[i*vocab ...].
  Status Prefill(std::span<const SequenceId> seqs, std::span<const std::vector<int32_t>> tokens,
                 std::vector<float>* logits);
  // One decode step: appends tokens[i] to seqs[i] (distinct sequences of any lengths) and writes
  // next-token logits [n, vocab].
  Status Decode(std::span<const SequenceId> seqs, std::span<const int32_t> tokens,
                std::vector<float>* logits);

  // State snapshots (prefix-cache checkpoints): a copy of the sequence's conv + recurrent state
  // at its current length.
  Result<SnapshotId> SnapshotState(SequenceId seq);
  Result<int64_t> SnapshotLength(SnapshotId snap) const;
  Status ReleaseSnapshot(SnapshotId snap);

  // Export attention KV for tokens [begin, end) (+ GDN state, which requires end == length).
  Result<SequenceExport> Export(SequenceId seq, int64_t begin, int64_t end,
                                bool include_state) const;
  // Installs an export into `seq`, whose length must equal the KV segments' token_begin; state
  // segments (required when the model has GDN layers) must be valid at the new length.
  Status Import(SequenceId seq, const SequenceExport& data);

 private:
  struct Sequence {
    int64_t length = 0;
    std::vector<int32_t> blocks;
    int32_t slot = -1;
  };
  struct Span {
    Sequence* seq;
    int64_t pos0;
    int64_t t;
    int64_t row0;
  };

  Engine(const ModelConfig& config, std::shared_ptr<const ModelWeights> weights,
         const EngineOptions& options);
  Result<Sequence*> Find(SequenceId id);
  Result<const Sequence*> Find(SequenceId id) const;
  Status EnsureBlocks(Sequence* seq, int64_t new_length);
  // Runs the model on the spans' tokens (rows in span order) and writes the last-row logits of
  // each span to logits[i*vocab]. `decode` selects row-invariant projections and the recurrent GDN.
  void Forward(std::vector<Span>& spans, const int32_t* tokens, bool decode, float* logits);
  void Project(bool decode, const float* x, int64_t m, int64_t k, const std::vector<float>& w,
               int64_t n, float* y) const;
  void AttentionMixer(int64_t layer, int64_t attn_index, std::vector<Span>& spans, bool decode,
                      const float* xn, float* out);
  void GdnMixer(int64_t layer, int64_t gdn_index, std::vector<Span>& spans, bool decode,
                const float* xn, float* out);

  ModelConfig config_;
  std::shared_ptr<const ModelWeights> weights_;
  EngineOptions options_;
  KvBlockPool kv_;
  StateSlotPool states_;
  std::vector<int64_t> attn_index_;  // layer -> index among attention (or GDN) layers
  std::map<SequenceId, Sequence> seqs_;
  std::map<SnapshotId, int64_t> snapshots_;  // slot -> length
  SequenceId next_id_ = 1;
  // Set for options.device != "cpu": runs Forward and owns the device copies of the pools.
  std::unique_ptr<DeviceBackend> device_;
};

}  // namespace prfaas::engine
