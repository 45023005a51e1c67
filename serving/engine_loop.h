// EngineLoop: the one thread that owns a worker's engine::Engine and schedules work on it.
//
// The engine is single-threaded, so prefill jobs, decode steps and housekeeping all run on this
// loop. Each iteration:
//   1. runs posted tasks (imports, releases, snapshots, admin) in FIFO order;
//   2. advances queued prefill jobs by at most `prefill_tokens_per_step` tokens, FCFS, several
//      short prompts batched into one engine call; chunk boundaries stay at absolute multiples of
//      the engine's prefill chunk, so a prompt prefilled in pieces is bit-identical to one pass;
//   3. runs one decode step over every running decode job (continuous batching).
// Interleaving 2 and 3 bounds the time a long prefill can stall running decodes.
//
// Callbacks (done, on_token, on_finish) run on the loop thread and must not block.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "engine/engine.h"

namespace prfaas::serving {

enum class Finish { kStop, kLength, kCancelled, kError };

struct LoopOptions {
  int64_t prefill_tokens_per_step = 512;
  int max_decode_batch = 64;
  // Prefill calls also end at absolute multiples of this (0 = off) so state checkpoints of the
  // prefix cache can be taken there. Every worker of a deployment must use the same value.
  int64_t checkpoint_interval = 0;
  // Where the loop's metrics go (prfaas_worker_batch_size, prfaas_worker_decode_step_seconds,
  // prfaas_engine_forward_seconds); null = none.
  metrics::Registry* registry = nullptr;
};

struct LoopStats {
  int64_t prefill_queue = 0;  // prefill jobs waiting or in progress
  int64_t prefill_tokens_pending = 0;
  int64_t decoding = 0;  // sequences in the decode batch
  int64_t last_decode_batch = 0;
  int64_t steps = 0;
};

class EngineLoop {
 public:
  EngineLoop(std::unique_ptr<engine::Engine> engine, LoopOptions options);
  ~EngineLoop();  // Stop()s
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Fails every pending job (CANCELLED) and joins the thread. Idempotent.
  void Stop();

  const engine::ModelConfig& config() const { return config_; }
  const engine::EngineOptions& engine_options() const { return engine_options_; }

  // Runs fn on the loop thread between steps.
  void Post(std::function<void(engine::Engine&)> fn);
  // Runs fn on the loop thread and waits for its result.
  template <typename F>
  auto Call(F&& fn) -> decltype(fn(std::declval<engine::Engine&>())) {
    using R = decltype(fn(std::declval<engine::Engine&>()));
    auto task = std::make_shared<std::packaged_task<R(engine::Engine&)>>(std::forward<F>(fn));
    auto fut = task->get_future();
    Post([task](engine::Engine& e) { (*task)(e); });
    return fut.get();
  }

  // Appends `tokens` to `seq`; `done` gets the logits of the last token ([vocab]) or an error.
  using PrefillDone = std::function<void(Status, std::vector<float> last_logits)>;
  // Called on the loop thread after each engine call that advanced the sequence (before `done`).
  using PrefillProgress = std::function<void(engine::Engine&, int64_t new_length)>;
  void SubmitPrefill(engine::SequenceId seq, std::vector<int32_t> tokens, PrefillDone done,
                     PrefillProgress progress = nullptr);

  struct DecodeJob {
    engine::SequenceId seq = 0;
    int32_t next_input = 0;  // last sampled token, not yet in the sequence
    engine::SamplingParams sampling;
    uint64_t counter = 1;           // sampling step counter of the next token
    int64_t remaining = 0;          // tokens still to generate
    std::vector<int32_t> stop_ids;  // includes EOS unless ignore_eos
    // Called with each new token; return false to stop (finish reason kCancelled).
    std::function<bool(int32_t token)> on_token;
    std::function<void(Finish, Status)> on_finish;  // exactly once
  };
  // Joins the continuous batch. A job with remaining <= 0 finishes at once (kLength).
  void SubmitDecode(DecodeJob job);
  // Stops a running decode job (on_finish(kCancelled)) or drops a queued prefill for `seq`.
  void Cancel(engine::SequenceId seq);

  LoopStats Stats() const;

 private:
  struct PrefillJob {
    engine::SequenceId seq;
    std::vector<int32_t> tokens;
    size_t done = 0;
    PrefillDone cb;
    PrefillProgress progress;
  };
  void Run();
  bool StepPrefill(engine::Engine& e);
  bool StepDecode(engine::Engine& e);

  std::unique_ptr<engine::Engine> engine_;
  const engine::ModelConfig config_;
  const engine::EngineOptions engine_options_;
  const LoopOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<std::function<void(engine::Engine&)>> tasks_;
  std::deque<PrefillJob> prefill_;
  std::map<engine::SequenceId, DecodeJob> decode_;  // ordered: deterministic batch order
  std::vector<engine::SequenceId> cancelled_;
  LoopStats stats_;
  metrics::Histogram* prefill_batch_ = nullptr;
  metrics::Histogram* decode_batch_ = nullptr;
  metrics::Histogram* decode_step_ = nullptr;
  metrics::Histogram* forward_prefill_ = nullptr;
  metrics::Histogram* forward_decode_ = nullptr;
  std::thread thread_;
};

}  // namespace prfaas::serving
