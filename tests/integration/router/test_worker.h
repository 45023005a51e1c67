// TestWorker: a real gRPC worker (DecodeService, PrefillService, WorkerAdmin) on 127.0.0.1 for
// router tests, producing deterministic tokens.
//
// Output token k of a request (k = 0 is the first token) is TokenAt(prompt, k): a lowercase ASCII
// letter, so with the byte tokenizer the text is predictable. Protocol as the router expects:
// Decode sends a ticket first (unless local_prefill), waits for the matching Prefill (any
// TestWorker in the process fills the ticket through a shared board), then streams tokens 1..;
// with local_prefill it streams tokens resume.size() .. (all of them when not resuming).
// Failure knobs make it fail prefills, die mid-stream, or be slow; counters expose what it saw.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "prfaas/v1/worker.grpc.pb.h"

namespace prfaas::testing {

int32_t TokenAt(std::span<const int32_t> prompt, int k);
// The text of tokens [0, n) with the byte tokenizer.
std::string ExpectedText(std::span<const int32_t> prompt, int n);

class TestWorker {
 public:
  struct Knobs {
    std::atomic<bool> fail_prefill{false};  // Prefill returns UNAVAILABLE
    std::atomic<int> die_after_tokens{-1};  // Decode aborts after streaming this many
    std::atomic<int> token_delay_ms{0};
  };

  TestWorker();
  ~TestWorker();
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
  Knobs& knobs() { return knobs_; }

  std::atomic<int> decode_calls{0}, prefill_calls{0}, cancelled{0};
  std::atomic<int> role_sets{0}, drains{0};
  std::atomic<int> last_role{0};
  v1::DecodeRequest last_decode();

 private:
  class DecodeSvc;
  class PrefillSvc;
  class AdminSvc;
  Knobs knobs_;
  std::mutex mu_;
  v1::DecodeRequest last_decode_;
  std::unique_ptr<DecodeSvc> decode_;
  std::unique_ptr<PrefillSvc> prefill_;
  std::unique_ptr<AdminSvc> admin_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace prfaas::testing
