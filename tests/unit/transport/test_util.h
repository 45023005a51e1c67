// Helpers shared by the transport tests: random payloads, bundle headers, a collecting receiver.
#pragma once

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <vector>

#include "transport/transport.h"

namespace prfaas::transport::testing {

inline std::mt19937_64& Rng() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}

inline std::vector<std::byte> RandomBytes(size_t n) {
  std::vector<std::byte> v(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t r = Rng()();
    std::memcpy(v.data() + i, &r, 8);
  }
  for (; i < n; ++i) v[i] = static_cast<std::byte>(Rng()() & 0xFF);
  return v;
}

inline BundleHeader MakeHeader(const Ticket& t, uint64_t fingerprint, int layers) {
  BundleHeader h;
  h.ticket_id = t.id;
  h.request_id = "req-" + std::to_string(t.id);
  h.model_fingerprint = fingerprint;
  for (int i = 0; i < layers; ++i)
    h.layers.push_back({i % 4 == 3 ? LayerKind::kFullAttention : LayerKind::kLinearAttention,
                        DType::kBF16, DType::kF32});
  h.block_size_tokens = 16;
  h.token_begin = t.skip_tokens;
  h.token_end = t.skip_tokens + 1024;
  return h;
}

// Collects what a Receiver delivers; Wait* block with a timeout so tests never hang.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Bundle> bundles;
  std::vector<std::pair<uint64_t, Status>> aborts;
  std::vector<std::pair<uint64_t, uint32_t>> layers;

  ReceiverCallbacks Callbacks() {
    ReceiverCallbacks cb;
    cb.on_commit = [this](Bundle&& b) {
      std::lock_guard lk(mu);
      bundles.push_back(std::move(b));
      cv.notify_all();
    };
    cb.on_abort = [this](uint64_t t, const Status& s) {
      std::lock_guard lk(mu);
      aborts.emplace_back(t, s);
      cv.notify_all();
    };
    cb.on_layer_complete = [this](uint64_t t, uint32_t l) {
      std::lock_guard lk(mu);
      layers.emplace_back(t, l);
    };
    return cb;
  }
  bool WaitBundles(size_t n, std::chrono::milliseconds d = std::chrono::seconds(20)) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, d, [&] { return bundles.size() >= n; });
  }
  // Returns the abort status for a ticket, or OK if none arrived in time.
  Status WaitAbort(uint64_t ticket, std::chrono::milliseconds d = std::chrono::seconds(20)) {
    std::unique_lock lk(mu);
    Status found;
    cv.wait_for(lk, d, [&] {
      for (auto& [t, s] : aborts)
        if (t == ticket) {
          found = s;
          return true;
        }
      return false;
    });
    return found;
  }
};

}  // namespace prfaas::transport::testing
