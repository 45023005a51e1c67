// Unit tests of the backend factory (transport/endpoint.h): backend names, address parsing, and
// one small round trip per backend through Listen/Connect. The UCX round trip (127.0.0.1,
// UCX_TLS=tcp,self, UCX_NET_DEVICES=lo) runs here too so the sanitizer CI jobs cover the UCX
// backend; it skips with the reason when UCX cannot initialise.
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

TEST(Endpoint, ParsesBackendNames) {
  EXPECT_EQ(*ParseBackend("tcp"), Backend::kTcp);
  EXPECT_EQ(*ParseBackend("inproc"), Backend::kInproc);
  for (Backend b : {Backend::kTcp, Backend::kInproc}) EXPECT_EQ(*ParseBackend(BackendName(b)), b);
  if (UcxAvailable()) {
    EXPECT_EQ(*ParseBackend("ucx"), Backend::kUcx);
    EXPECT_EQ(BackendName(Backend::kUcx), "ucx");
  } else {
    EXPECT_EQ(ParseBackend("ucx").status().code(), StatusCode::kUnimplemented);
  }
  for (const char* bad : {"", "TCP", "rdma", "tcp "}) {
    auto r = ParseBackend(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("tcp, ucx or inproc"), std::string::npos);
  }
}

TEST(Endpoint, RejectsMalformedAddresses) {
  EndpointOptions o;
  for (const char* bad :
       {"", "localhost", "127.0.0.1:", ":80", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:8x",
        "ucx://nohost", "tcp://1.2.3.4", "quic://1.2.3.4:5", "inproc://"})
    EXPECT_EQ(Connect(bad, o).status().code(), StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(Connect("inproc://nobody-listens-here", o).status().code(), StatusCode::kUnavailable);
}

// Sends one two-segment bundle through a receiver made by Listen and a sender made by Connect.
void RoundTrip(Backend backend, const std::string& host, EndpointOptions o,
               const std::string& expect_prefix) {
  metrics::Registry registry;
  o.tcp.common.registry = o.ucx.common.registry = o.inproc.registry = &registry;
  o.tcp.common.peer_cluster = o.ucx.common.peer_cluster = o.inproc.peer_cluster = "pd-east";
  Collector got;
  auto rx = Listen(backend, host, 0, o, got.Callbacks());
  if (backend == Backend::kUcx && !rx.ok())
    GTEST_SKIP() << "UCX cannot initialise here: " << rx.status();
  ASSERT_TRUE(rx.ok()) << rx.status();
  const std::string address = (*rx)->address();
  EXPECT_EQ(address.rfind(expect_prefix, 0), 0u) << address;
  auto tx = Connect(backend == Backend::kInproc ? "inproc://" + address : address, o);
  ASSERT_TRUE(tx.ok()) << tx.status();
  TicketSpec spec;
  spec.budget_bytes = 1 << 22;
  spec.model_fingerprint = 42;
  Ticket t = (*rx)->IssueTicket(spec);
  auto b = (*tx)->Begin(MakeHeader(t, 42, 2), t);
  ASSERT_TRUE(b.ok()) << b.status();
  std::vector<std::vector<std::byte>> sent = {RandomBytes(1 << 20), RandomBytes(12345)};
  for (uint32_t l = 0; l < 2; ++l)
    ASSERT_TRUE(
        (*b)->Append({l, SegmentKind::kAttnKv, 0, 2, true}, {sent[l].data(), sent[l].size()}).ok());
  Status c = (*b)->Commit();
  ASSERT_TRUE(c.ok()) << c;
  ASSERT_TRUE(got.WaitBundles(1));
  ASSERT_EQ(got.bundles[0].segments.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(got.bundles[0].segments[i].size, sent[i].size());
    EXPECT_EQ(0,
              std::memcmp(got.bundles[0].segments[i].data.get(), sent[i].data(), sent[i].size()));
  }
  // Per-peer metrics carry the peer's cluster.
  EXPECT_NE(registry.Render().find("peer_cluster=\"pd-east\""), std::string::npos);
  (*tx)->Close();
  (*rx)->Shutdown();
}

TEST(Endpoint, TcpRoundTrip) {
  RoundTrip(Backend::kTcp, "127.0.0.1", {}, "127.0.0.1:");
}

TEST(Endpoint, TcpSchemeIsAccepted) {
  Collector got;
  auto rx = Listen(Backend::kTcp, "127.0.0.1", 0, {}, got.Callbacks());
  ASSERT_TRUE(rx.ok());
  EXPECT_TRUE(Connect("tcp://" + (*rx)->address(), {}).ok());
}

TEST(Endpoint, InprocRoundTrip) {
  RoundTrip(Backend::kInproc, "endpoint-test-" + std::to_string(Rng()()), {}, "endpoint-test-");
}

TEST(Endpoint, UcxRoundTrip) {
  if (!UcxAvailable()) GTEST_SKIP() << "built without PRFAAS_UCX";
  EndpointOptions o;
  o.ucx.transports = "tcp,self";
  o.ucx.net_devices = "lo";
  o.ucx.connections = 2;
  RoundTrip(Backend::kUcx, "127.0.0.1", o, "ucx://127.0.0.1:");
}

TEST(Endpoint, DefaultPeerClusterIsUnknown) {
  EXPECT_EQ(CommonOptions{}.peer_cluster, "unknown");
}

}  // namespace
}  // namespace prfaas::transport
