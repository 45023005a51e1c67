// Device-memory sends through the pinned staging ring (CUDA builds): segments that fit in the
// ring and segments several times larger (streamed through it twice), over the in-process and
// TCP backends, arrive byte-identical to what was in device memory. Skips without a CUDA device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "common/metrics.h"
#include "tests/unit/transport/test_util.h"
#include "transport/endpoint.h"

namespace prfaas::transport {
namespace {

using testing::Collector;
using testing::MakeHeader;
using testing::RandomBytes;
using testing::Rng;

bool HaveGpu(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    *why = cudaGetErrorString(e);
  else if (n == 0)
    *why = "no CUDA device";
  return e == cudaSuccess && n > 0;
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(const std::vector<std::byte>& host) {
    EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(host.size(), 1)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, host.data(), host.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(p); }
};

void SendDeviceBundle(Backend backend, const std::string& where) {
  std::string why;
  if (!HaveGpu(&why)) GTEST_SKIP() << why;
  metrics::Registry registry;
  EndpointOptions o;
  for (CommonOptions* c : {&o.tcp.common, &o.inproc}) {
    c->registry = &registry;
    c->chunk_bytes = 256 << 10;
    c->staging_slots = 4;  // 1 MiB of pinned memory: the 5 MiB segment cannot fit
  }
  o.tcp.connections = 2;
  Collector got;
  auto rx = Listen(backend, where, 0, o, got.Callbacks());
  ASSERT_TRUE(rx.ok()) << rx.status();
  auto tx =
      Connect(backend == Backend::kInproc ? "inproc://" + (*rx)->address() : (*rx)->address(), o);
  ASSERT_TRUE(tx.ok()) << tx.status();
  TicketSpec spec;
  spec.budget_bytes = 1 << 26;
  spec.model_fingerprint = 3;
  Ticket t = (*rx)->IssueTicket(spec);
  auto b = (*tx)->Begin(MakeHeader(t, 3, 3), t);
  ASSERT_TRUE(b.ok()) << b.status();
  std::vector<std::vector<std::byte>> host = {RandomBytes(300000 + Rng()() % 1000),
                                              RandomBytes((5 << 20) + Rng()() % 1000),
                                              RandomBytes(0)};
  std::vector<std::unique_ptr<DeviceBuffer>> dev;
  for (uint32_t l = 0; l < host.size(); ++l) {
    dev.push_back(std::make_unique<DeviceBuffer>(host[l]));
    Status s = (*b)->Append({l, SegmentKind::kAttnKv, 0, 1, true},
                            {dev.back()->p, host[l].size(), MemoryKind::kDevice});
    ASSERT_TRUE(s.ok()) << s;
  }
  Status c = (*b)->Commit();
  ASSERT_TRUE(c.ok()) << c;
  ASSERT_TRUE(got.WaitBundles(1));
  const Bundle& bundle = got.bundles[0];
  ASSERT_EQ(bundle.segments.size(), host.size());
  for (size_t i = 0; i < host.size(); ++i) {
    ASSERT_EQ(bundle.segments[i].size, host[i].size());
    EXPECT_EQ(0, std::memcmp(bundle.segments[i].data.get(), host[i].data(), host[i].size())) << i;
  }
}

TEST(StagingGpu, DeviceSegmentsOverInproc) {
  SendDeviceBundle(Backend::kInproc, "staging-" + std::to_string(Rng()()));
}

TEST(StagingGpu, DeviceSegmentsOverTcp) {
  SendDeviceBundle(Backend::kTcp, "127.0.0.1");
}

}  // namespace
}  // namespace prfaas::transport
