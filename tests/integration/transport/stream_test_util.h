// Helpers shared by the stream backends' integration tests (tcp, ucx and the backend-
// parameterised stream_transport_test): a loopback receiver/sender pair built through the
// endpoint factory, and layer-wise senders/checkers.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "tests/unit/transport/test_util.h"
#include "transport/endpoint.h"

namespace prfaas::transport::testing {

using namespace std::chrono_literals;

// Loopback options with `connections` stripes for either backend (UCX: its tcp transport on lo).
inline EndpointOptions LoopbackOptions(int connections = 1) {
  EndpointOptions o;
  o.tcp.connections = connections;
  o.ucx.connections = connections;
  o.ucx.transports = "tcp,self";
  o.ucx.net_devices = "lo";
  return o;
}

// The CommonOptions the pair's backend uses (both sides).
inline CommonOptions& Common(EndpointOptions& o, Backend backend) {
  return backend == Backend::kUcx ? o.ucx.common : o.tcp.common;
}

struct StreamPair {
  metrics::Registry registry;
  Collector got;
  std::unique_ptr<Receiver> rx;
  std::unique_ptr<Sender> tx;
  std::string skip;  // why the backend is unusable here (UCX only), if it is

  explicit StreamPair(Backend backend, EndpointOptions o, ReceiverCallbacks cb = {}) {
    Common(o, backend).registry = &registry;
    if (!cb.on_commit) cb = got.Callbacks();
    auto r = Listen(backend, "127.0.0.1", 0, o, cb);
    if (!r.ok()) {
      if (backend == Backend::kUcx) {
        skip = r.status().ToString();
      } else {
        ADD_FAILURE() << r.status();
      }
      return;
    }
    rx = std::move(r).value();
    auto s = Connect(rx->address(), o);
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) tx = std::move(s).value();
  }
  Ticket Issue(uint64_t fp, uint64_t budget = 1ull << 30, std::chrono::milliseconds idle = 10s) {
    TicketSpec spec;
    spec.budget_bytes = budget;
    spec.model_fingerprint = fp;
    spec.skip_tokens = 16;
    spec.idle_timeout = idle;
    return rx->IssueTicket(spec);
  }
};

// Skips when the pair's backend cannot run here (UCX not built or not initialisable).
#define PRFAAS_SKIP_UNUSABLE(backend, pair)                                                        \
  do {                                                                                             \
    if ((backend) == Backend::kUcx && !UcxAvailable()) GTEST_SKIP() << "built without PRFAAS_UCX"; \
    if (!(pair).skip.empty()) GTEST_SKIP() << "backend unusable: " << (pair).skip;                 \
    ASSERT_TRUE((pair).tx);                                                                        \
  } while (0)

// Sends `layers` layers of two segments each (attention KV, then a final state); returns what
// was sent, stopping at the first failed Append (its status in *first_error).
inline std::vector<std::vector<std::byte>> SendLayers(OutboundBundle& b, int layers,
                                                      size_t seg_bytes, Status* first_error) {
  std::vector<std::vector<std::byte>> sent;
  sent.reserve(layers * 2);
  for (int l = 0; l < layers; ++l) {
    for (int k = 0; k < 2; ++k) {
      sent.push_back(RandomBytes(seg_bytes + Rng()() % 4096));
      Status s = b.Append({static_cast<uint32_t>(l),
                           k ? SegmentKind::kSsmState : SegmentKind::kAttnKv, 0, 4, k == 1},
                          {sent.back().data(), sent.back().size()});
      if (!s.ok()) {
        *first_error = s;
        return sent;
      }
    }
  }
  return sent;
}

inline void ExpectSame(const Bundle& b, const std::vector<std::vector<std::byte>>& sent) {
  ASSERT_EQ(b.segments.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(b.segments[i].size, sent[i].size());
    EXPECT_EQ(0, std::memcmp(b.segments[i].data.get(), sent[i].data(), sent[i].size())) << i;
  }
}

}  // namespace prfaas::transport::testing
