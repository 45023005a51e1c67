// Integration tests of the UCX backend on 127.0.0.1 (UCX_TLS=tcp,self, UCX_NET_DEVICES=lo):
// striped round trips, a 256 MiB+ bundle, a stalled receiver, backpressure, and frames from a raw
// UCP client (every flipped payload byte rejected, unknown version). The abort paths shared with
// TCP (sender abort, receiver cancel, peer death, idle timeout, budget) are in
// stream_transport_test.cpp. Each test skips with the reason when UCX cannot initialise here.
// Under ThreadSanitizer, run with UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_MALLOC_HOOKS=no (the tsan
// test preset sets them): UCX's memory hooks patch madvise/mmap and crash TSan's interceptors at
// thread exit.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "common/metrics.h"
#include "tests/integration/transport/stream_test_util.h"
#include "tests/unit/transport/test_util.h"
#include "transport/crc32c.h"
#include "transport/endpoint.h"
#include "transport/wire.h"

#ifdef PRFAAS_HAVE_UCX
#include <arpa/inet.h>
#include <netinet/in.h>
#include <ucp/api/ucp.h>
#endif

namespace prfaas::transport {
namespace {

using testing::Collector;
using testing::ExpectSame;
using testing::MakeHeader;
using testing::RandomBytes;
using testing::Rng;
using testing::SendLayers;
using namespace std::chrono_literals;

EndpointOptions LoopbackUcx(int connections = 1) {
  return testing::LoopbackOptions(connections);
}

struct UcxPair : testing::StreamPair {
  explicit UcxPair(EndpointOptions o = LoopbackUcx(), ReceiverCallbacks cb = {})
      : StreamPair(Backend::kUcx, std::move(o), std::move(cb)) {}
};

#define SKIP_WITHOUT_UCX(pair) PRFAAS_SKIP_UNUSABLE(Backend::kUcx, pair)

TEST(UcxTransport, FactoryParsesAndReportsUcxAddresses) {
  if (!UcxAvailable()) {
    EXPECT_EQ(ParseBackend("ucx").status().code(), StatusCode::kUnimplemented);
    GTEST_SKIP() << "built without PRFAAS_UCX";
  }
  ASSERT_TRUE(ParseBackend("ucx").ok());
  EXPECT_EQ(*ParseBackend("ucx"), Backend::kUcx);
  UcxPair p;
  SKIP_WITHOUT_UCX(p);
  EXPECT_EQ(p.rx->address().rfind("ucx://127.0.0.1:", 0), 0u) << p.rx->address();
}

TEST(UcxTransport, StripedBundleArrivesIntact) {
  EndpointOptions o = LoopbackUcx(3);
  o.ucx.common.chunk_bytes = 256 << 10;
  UcxPair p(o);
  SKIP_WITHOUT_UCX(p);
  const uint64_t fp = Rng()();
  for (int round = 0; round < 2; ++round) {
    Ticket t = p.Issue(fp);
    auto b = p.tx->Begin(MakeHeader(t, fp, 6), t);
    ASSERT_TRUE(b.ok()) << b.status();
    Status err;
    auto sent = SendLayers(**b, 6, 1 << 20, &err);
    ASSERT_TRUE(err.ok()) << err;
    Status c = (*b)->Commit();
    ASSERT_TRUE(c.ok()) << c;
    ASSERT_TRUE(p.got.WaitBundles(round + 1));
    ExpectSame(p.got.bundles[round], sent);
    EXPECT_EQ(p.got.bundles[round].header, MakeHeader(t, fp, 6));
  }
  std::this_thread::sleep_for(250ms);  // let the telemetry ticker sample
  auto st = p.tx->Stats();
  EXPECT_EQ(st.connections, 3u);
  EXPECT_EQ(st.bundles_committed, 2u);
  EXPECT_GT(st.goodput_bytes_per_s, 0.0);
  EXPECT_TRUE(st.healthy);
  EXPECT_EQ(p.got.layers.size(), 12u);
  std::string text = p.registry.Render();
  EXPECT_NE(text.find("prfaas_transport_sent_bytes_total{peer=\"" + p.rx->address() +
                      "\",peer_cluster=\"unknown\"}"),
            std::string::npos)
      << text;
}

TEST(UcxTransport, QuarterGiBBundleArrivesIntact) {
  EndpointOptions o = LoopbackUcx(2);
  UcxPair p(o);
  SKIP_WITHOUT_UCX(p);
  const size_t total = (256u << 20) + 12345, seg = 4u << 20;
  auto src = RandomBytes(total);
  Ticket t = p.Issue(7);
  const int segs = static_cast<int>((total + seg - 1) / seg);
  auto b = p.tx->Begin(MakeHeader(t, 7, segs), t);
  ASSERT_TRUE(b.ok());
  for (int i = 0; i < segs; ++i) {
    const size_t n = std::min(seg, total - i * seg);
    Status s = (*b)->Append({static_cast<uint32_t>(i), SegmentKind::kAttnKv, 0, 1, true},
                            {src.data() + i * seg, n});
    ASSERT_TRUE(s.ok()) << s;
  }
  Status c = (*b)->Commit();
  ASSERT_TRUE(c.ok()) << c;
  ASSERT_TRUE(p.got.WaitBundles(1));
  const Bundle& got = p.got.bundles[0];
  EXPECT_EQ(got.total_bytes, total);
  ASSERT_EQ(got.segments.size(), static_cast<size_t>(segs));
  for (int i = 0; i < segs; ++i)
    ASSERT_EQ(0,
              std::memcmp(got.segments[i].data.get(), src.data() + i * seg, got.segments[i].size))
        << "segment " << i;
  EXPECT_EQ(p.rx->Stats().buffered_bytes, 0u);
}

// ---- abort paths -------------------------------------------------------------------------------

TEST(UcxTransport, BackpressureBoundsQueuedBytes) {
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  Collector got;
  ReceiverCallbacks cb = got.Callbacks();
  // The first finished layer blocks the receiver's progress thread: it stops reading.
  cb.on_layer_complete = [opened](uint64_t, uint32_t layer) {
    if (layer == 0) opened.wait_for(10s);
  };
  EndpointOptions o = LoopbackUcx(2);
  o.ucx.common.max_queued_bytes = 2 << 20;
  o.ucx.common.chunk_bytes = 256 << 10;
  UcxPair p(o, cb);
  SKIP_WITHOUT_UCX(p);
  Ticket t = p.Issue(3);
  auto b = p.tx->Begin(MakeHeader(t, 3, 64), t);
  ASSERT_TRUE(b.ok());
  std::atomic<bool> done{false};
  uint64_t max_queued = 0;
  std::thread watcher([&] {
    while (!done) {
      max_queued = std::max(max_queued, p.tx->Stats().queued_bytes);
      std::this_thread::sleep_for(1ms);
    }
  });
  std::thread releaser([&] {
    std::this_thread::sleep_for(700ms);
    gate.set_value();
  });
  auto start = std::chrono::steady_clock::now();
  Status err;
  // 128 MiB: far more than the window plus what UCX and the kernel buffer on loopback.
  auto sent = SendLayers(**b, 64, 1 << 20, &err);
  auto elapsed = std::chrono::steady_clock::now() - start;
  Status committed = err.ok() ? (*b)->Commit() : err;
  done = true;
  watcher.join();
  releaser.join();
  ASSERT_TRUE(committed.ok()) << committed;
  EXPECT_GE(elapsed, 500ms) << "Append never waited for the stalled receiver";
  EXPECT_LE(max_queued, (2u << 20) + (256u << 10) + 100u);
  ASSERT_TRUE(got.WaitBundles(1));
  ExpectSame(got.bundles[0], sent);
}

TEST(UcxTransport, StalledReceiverTimesOutSender) {
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  Collector got;
  ReceiverCallbacks cb = got.Callbacks();
  cb.on_layer_complete = [opened](uint64_t, uint32_t) { opened.wait_for(10s); };
  EndpointOptions o = LoopbackUcx(1);
  o.ucx.common.max_queued_bytes = 1 << 20;
  o.ucx.common.idle_timeout = 300ms;
  UcxPair p(o, cb);
  SKIP_WITHOUT_UCX(p);
  Ticket t = p.Issue(3);
  auto b = p.tx->Begin(MakeHeader(t, 3, 256), t);
  ASSERT_TRUE(b.ok());
  auto start = std::chrono::steady_clock::now();
  Status err;
  auto sent = SendLayers(**b, 256, 1 << 20, &err);
  Status s = err.ok() ? (*b)->Commit() : err;
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 8s);
  gate.set_value();
  EXPECT_FALSE(p.tx->Stats().healthy);
}

TEST(UcxTransport, ConnectToNothingFails) {
  if (!UcxAvailable()) GTEST_SKIP() << "built without PRFAAS_UCX";
  UcxPair probe;  // find a port UCX could listen on, then free it
  if (!probe.skip.empty()) GTEST_SKIP() << "UCX unusable: " << probe.skip;
  const std::string addr = probe.rx->address();
  probe.tx.reset();
  probe.rx.reset();
  EndpointOptions o = LoopbackUcx();
  o.ucx.connect_timeout = 3s;
  auto start = std::chrono::steady_clock::now();
  auto s = Connect(addr, o);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.status().code() == StatusCode::kUnavailable ||
              s.status().code() == StatusCode::kDeadlineExceeded)
      << s.status();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

// ---- frames from a raw UCP client --------------------------------------------------------------

#ifdef PRFAAS_HAVE_UCX
// A blocking UCP stream client driven by the test thread.
class RawUcx {
 public:
  explicit RawUcx(const std::string& address) {
    ucp_config_t* cfg = nullptr;
    if (ucp_config_read(nullptr, nullptr, &cfg) != UCS_OK) return;
    ucp_config_modify(cfg, "TLS", "tcp,self");
    ucp_config_modify(cfg, "NET_DEVICES", "lo");
    ucp_params_t p{};
    p.field_mask = UCP_PARAM_FIELD_FEATURES;
    p.features = UCP_FEATURE_STREAM;
    ucs_status_t s = ucp_init(&p, cfg, &ctx_);
    ucp_config_release(cfg);
    if (s != UCS_OK) return;
    ucp_worker_params_t wp{};
    if (ucp_worker_create(ctx_, &wp, &worker_) != UCS_OK) return;
    const std::string hp = address.substr(address.find("//") + 2);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(std::stoi(hp.substr(hp.rfind(':') + 1))));
    ::inet_pton(AF_INET, hp.substr(0, hp.rfind(':')).c_str(), &sa.sin_addr);
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
    ep.sockaddr.addrlen = sizeof sa;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = [](void* arg, ucp_ep_h, ucs_status_t) { *static_cast<bool*>(arg) = true; };
    ep.err_handler.arg = &failed_;
    if (ucp_ep_create(worker_, &ep, &ep_) != UCS_OK) ep_ = nullptr;
  }
  ~RawUcx() {
    if (ep_) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      Wait(ucp_ep_close_nbx(ep_, &p), 2s);
    }
    if (worker_) ucp_worker_destroy(worker_);
    if (ctx_) ucp_cleanup(ctx_);
  }
  bool ok() const { return ep_ != nullptr; }
  bool failed() const { return failed_; }

  bool Send(const std::vector<std::byte>& bytes) {
    ucp_request_param_t p{};
    return Wait(ucp_stream_send_nbx(ep_, bytes.data(), bytes.size(), &p), 5s);
  }
  // Reads one frame; false on timeout or a failed endpoint.
  bool Read(wire::FrameHeader* h, std::vector<std::byte>* body) {
    std::array<std::byte, wire::kFrameHeaderSize> hb{};
    if (!Recv(hb.data(), hb.size())) return false;
    auto d = wire::DecodeFrameHeader(hb);
    if (!d.ok()) return false;
    *h = *d;
    body->resize(h->body_len);
    return body->empty() || Recv(body->data(), body->size());
  }
  // Progresses until the endpoint fails (the receiver closed it) or the timeout.
  bool WaitFailed(std::chrono::milliseconds d) {
    auto end = std::chrono::steady_clock::now() + d;
    while (!failed_ && std::chrono::steady_clock::now() < end) ucp_worker_progress(worker_);
    return failed_;
  }

 private:
  bool Recv(void* buf, size_t n) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_STREAM_RECV_FLAG_WAITALL;
    size_t got = 0;
    return Wait(ucp_stream_recv_nbx(ep_, buf, n, &got, &p), 5s);
  }
  bool Wait(ucs_status_ptr_t r, std::chrono::milliseconds d) {
    if (r == nullptr) return true;
    if (UCS_PTR_IS_ERR(r)) return false;
    auto end = std::chrono::steady_clock::now() + d;
    ucs_status_t s;
    while ((s = ucp_request_check_status(r)) == UCS_INPROGRESS) {
      if (std::chrono::steady_clock::now() > end) {
        ucp_request_cancel(worker_, r);
        ucp_request_free(r);  // released once UCX completes it
        return false;
      }
      ucp_worker_progress(worker_);
    }
    ucp_request_free(r);
    return s == UCS_OK;
  }

  ucp_context_h ctx_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  bool failed_ = false;
};

std::vector<std::byte> DataFrame(uint64_t ticket, const std::vector<std::byte>& seg, uint32_t crc) {
  std::vector<std::byte> frame(wire::kFrameHeaderSize + wire::kDataDescSize);
  wire::FrameHeader h;
  h.type = wire::FrameType::kData;
  h.ticket = ticket;
  h.body_len = static_cast<uint32_t>(wire::kDataDescSize + seg.size());
  wire::EncodeFrameHeader(h, frame.data());
  wire::DataDesc d;
  d.info = {0, SegmentKind::kAttnKv, 0, 1, true};
  d.seg_length = seg.size();
  d.seg_crc = crc;
  wire::EncodeDataDesc(d, frame.data() + wire::kFrameHeaderSize);
  frame.insert(frame.end(), seg.begin(), seg.end());
  return frame;
}

TEST(UcxTransport, EveryFlippedByteIsRejected) {
  UcxPair p;
  SKIP_WITHOUT_UCX(p);
  RawUcx c(p.rx->address());
  ASSERT_TRUE(c.ok());
  const auto seg = RandomBytes(1024 + Rng()() % 1024);
  const uint32_t crc = Crc32c(seg.data(), seg.size());
  // One session per flipped position: every byte of the payload, a random bit each time.
  for (size_t pos = 0; pos < seg.size(); ++pos) {
    Ticket t = p.Issue(1);
    auto bad = seg;
    bad[pos] ^= static_cast<std::byte>(1u << (Rng()() % 8));
    ASSERT_TRUE(c.Send(
        wire::ControlFrame(wire::FrameType::kOpen, t.id, wire::EncodeOpen(MakeHeader(t, 1, 1)))));
    ASSERT_TRUE(c.Send(DataFrame(t.id, bad, crc)));
    ASSERT_TRUE(c.Send(wire::ControlFrame(wire::FrameType::kCommit, t.id,
                                          wire::EncodeCommit({0, 1, 1, bad.size()}))));
    wire::FrameHeader h;
    std::vector<std::byte> body;
    ASSERT_TRUE(c.Read(&h, &body)) << "no answer for a flip at byte " << pos;
    ASSERT_EQ(h.type, wire::FrameType::kAbort) << pos;
    auto a = wire::DecodeAbort(body);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->code, wire::AbortCode::kChecksum) << pos << ": " << a->reason;
    EXPECT_EQ(p.got.WaitAbort(t.id).code(), StatusCode::kDataLoss);
  }
  // The intact segment goes through on the same endpoint.
  Ticket t = p.Issue(1);
  ASSERT_TRUE(c.Send(
      wire::ControlFrame(wire::FrameType::kOpen, t.id, wire::EncodeOpen(MakeHeader(t, 1, 1)))));
  ASSERT_TRUE(c.Send(DataFrame(t.id, seg, crc)));
  ASSERT_TRUE(c.Send(wire::ControlFrame(wire::FrameType::kCommit, t.id,
                                        wire::EncodeCommit({0, 1, 1, seg.size()}))));
  wire::FrameHeader h;
  std::vector<std::byte> body;
  ASSERT_TRUE(c.Read(&h, &body));
  EXPECT_EQ(h.type, wire::FrameType::kAck);
  ASSERT_TRUE(p.got.WaitBundles(1));
  EXPECT_EQ(0, std::memcmp(p.got.bundles[0].segments[0].data.get(), seg.data(), seg.size()));
  EXPECT_TRUE(p.got.bundles.size() == 1);
}

TEST(UcxTransport, UnknownVersionIsRejectedAndEndpointClosed) {
  UcxPair p;
  SKIP_WITHOUT_UCX(p);
  Ticket t = p.Issue(1);
  RawUcx c(p.rx->address());
  ASSERT_TRUE(c.ok());
  auto frame =
      wire::ControlFrame(wire::FrameType::kOpen, t.id, wire::EncodeOpen(MakeHeader(t, 1, 1)));
  frame[4] = std::byte{7};  // version 7
  ASSERT_TRUE(c.Send(frame));
  wire::FrameHeader h;
  std::vector<std::byte> body;
  ASSERT_TRUE(c.Read(&h, &body));
  EXPECT_EQ(h.type, wire::FrameType::kAbort);
  auto a = wire::DecodeAbort(body);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->code, wire::AbortCode::kUnknownVersion);
  EXPECT_TRUE(c.WaitFailed(5s)) << "endpoint should be closed";
  Status s = p.got.WaitAbort(t.id);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("version 7"), std::string::npos) << s;
}
#endif  // PRFAAS_HAVE_UCX

}  // namespace
}  // namespace prfaas::transport
