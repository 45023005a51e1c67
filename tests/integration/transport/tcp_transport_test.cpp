// Integration tests of the TCP backend on 127.0.0.1: striped multi-connection transfers, mutual
// TLS, the TCP-specific abort paths (connection reset, stalled receiver), backpressure, and
// protocol errors sent by a raw socket. The abort paths shared with UCX (sender abort, receiver
// cancel, peer death, idle timeout, budget) are in stream_transport_test.cpp.
#include <gtest/gtest.h>

#include <array>
#include <boost/asio.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

#include "common/metrics.h"
#include "tests/integration/transport/stream_test_util.h"
#include "tests/unit/transport/test_util.h"
#include "transport/transport.h"
#include "transport/wire.h"

namespace prfaas::transport {
namespace {

using testing::Collector;
using testing::ExpectSame;
using testing::MakeHeader;
using testing::RandomBytes;
using testing::Rng;
using testing::SendLayers;
namespace asio = boost::asio;
using namespace std::chrono_literals;

struct TcpPair {
  metrics::Registry registry;
  Collector got;
  std::unique_ptr<Receiver> rx;
  std::unique_ptr<Sender> tx;
  uint16_t port = 0;

  explicit TcpPair(TcpOptions o = {}, ReceiverCallbacks cb = {}, TcpOptions rxo_override = {},
                   bool use_rx_override = false) {
    o.common.registry = &registry;
    TcpOptions rxo = use_rx_override ? rxo_override : o;
    rxo.common.registry = &registry;
    if (!cb.on_commit) cb = got.Callbacks();
    auto r = ListenTcp("127.0.0.1", 0, rxo, cb);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return;
    rx = std::move(r).value();
    port = static_cast<uint16_t>(std::stoi(rx->address().substr(rx->address().rfind(':') + 1)));
    auto s = ConnectTcp("127.0.0.1", port, o);
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

TEST(TcpTransport, StripedBundleArrivesIntact) {
  TcpOptions o;
  o.connections = 4;
  o.common.chunk_bytes = 256 << 10;
  TcpPair p(o);
  ASSERT_TRUE(p.tx);
  const uint64_t fp = Rng()();
  for (int round = 0; round < 2; ++round) {
    Ticket t = p.Issue(fp);
    auto b = p.tx->Begin(MakeHeader(t, fp, 6), t);
    ASSERT_TRUE(b.ok()) << b.status();
    Status err;
    auto sent = SendLayers(**b, 6, 1 << 20, &err);
    ASSERT_TRUE(err.ok()) << err;
    ASSERT_TRUE((*b)->Commit().ok());
    ASSERT_TRUE(p.got.WaitBundles(round + 1));
    ExpectSame(p.got.bundles[round], sent);
    EXPECT_EQ(p.got.bundles[round].header, MakeHeader(t, fp, 6));
  }
  std::this_thread::sleep_for(250ms);  // let the telemetry ticker sample
  auto st = p.tx->Stats();
  EXPECT_EQ(st.connections, 4u);
  EXPECT_EQ(st.bundles_committed, 2u);
  EXPECT_GT(st.goodput_bytes_per_s, 0.0);
  EXPECT_GT(st.rtt_seconds, 0.0);
  EXPECT_TRUE(st.healthy);
  std::string text = p.registry.Render();
  for (const char* name :
       {"prfaas_transport_link_goodput_bytes_per_second", "prfaas_transport_link_rtt_seconds",
        "prfaas_transport_link_retransmits_total", "prfaas_transport_received_bytes_total"})
    EXPECT_NE(text.find(name), std::string::npos) << name;
}

// ---- TLS ---------------------------------------------------------------------------------------

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("prfaas-tls-" + std::to_string(Rng()()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Makes a CA and one leaf certificate signed by it, with the openssl CLI.
bool MakeCa(const std::filesystem::path& dir, const std::string& ca,
            const std::vector<std::string>& leaves) {
  auto run = [&](const std::string& cmd) {
    return std::system(("cd '" + dir.string() + "' && " + cmd + " >/dev/null 2>&1").c_str()) == 0;
  };
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  if (!run("openssl req -x509 " + key + " -keyout " + ca + ".key -out " + ca +
           ".pem -days 1 -subj /CN=" + ca))
    return false;
  for (const auto& l : leaves) {
    if (!run("openssl req " + key + " -keyout " + l + ".key -out " + l + ".csr -subj /CN=" + l) ||
        !run("openssl x509 -req -in " + l + ".csr -CA " + ca + ".pem -CAkey " + ca +
             ".key -CAcreateserial -out " + l + ".pem -days 1"))
      return false;
  }
  return true;
}

TlsOptions Tls(const std::filesystem::path& dir, const std::string& leaf, const std::string& ca) {
  return {(dir / (leaf + ".pem")).string(), (dir / (leaf + ".key")).string(),
          (dir / (ca + ".pem")).string()};
}

TEST(TcpTransport, MutualTlsDeliversAndRejectsStrangers) {
  TempDir dir;
  ASSERT_TRUE(MakeCa(dir.path, "ca", {"server", "client"}));
  ASSERT_TRUE(MakeCa(dir.path, "evil", {"mallory"}));
  TcpOptions rxo, txo;
  rxo.tls = Tls(dir.path, "server", "ca");
  txo.tls = Tls(dir.path, "client", "ca");
  txo.connections = 2;
  TcpPair p(txo, {}, rxo, true);
  ASSERT_TRUE(p.tx);
  const uint64_t fp = Rng()();
  Ticket t = p.Issue(fp);
  auto b = p.tx->Begin(MakeHeader(t, fp, 2), t);
  ASSERT_TRUE(b.ok());
  Status err;
  auto sent = SendLayers(**b, 2, 300000, &err);
  ASSERT_TRUE(err.ok()) << err;
  ASSERT_TRUE((*b)->Commit().ok());
  ASSERT_TRUE(p.got.WaitBundles(1));
  ExpectSame(p.got.bundles[0], sent);

  // A client whose certificate comes from another CA never gets a bundle through.
  TcpOptions bad;
  bad.tls = Tls(dir.path, "mallory", "ca");
  bad.connections = 1;
  bad.common.idle_timeout = 2s;
  bad.common.commit_timeout = 3s;
  auto s = ConnectTcp("127.0.0.1", p.port, bad);
  if (s.ok()) {
    Ticket t2 = p.Issue(fp);
    auto b2 = (*s)->Begin(MakeHeader(t2, fp, 1), t2);
    Status st = b2.ok() ? (*b2)->Commit() : b2.status();
    EXPECT_FALSE(st.ok());
  }
  // A plaintext client cannot talk to the TLS receiver either.
  TcpOptions plain;
  plain.connections = 1;
  plain.common.commit_timeout = 3s;
  auto s2 = ConnectTcp("127.0.0.1", p.port, plain);
  if (s2.ok()) {
    Ticket t3 = p.Issue(fp);
    auto b3 = (*s2)->Begin(MakeHeader(t3, fp, 1), t3);
    Status st = b3.ok() ? (*b3)->Commit() : b3.status();
    EXPECT_FALSE(st.ok());
  }
  EXPECT_EQ(p.got.bundles.size(), 1u);
}

TEST(TcpTransport, BadTlsFilesAreReported) {
  TcpOptions o;
  o.tls = TlsOptions{"/nonexistent.pem", "/nonexistent.key", "/nonexistent-ca.pem"};
  Collector c;
  auto r = ListenTcp("127.0.0.1", 0, o, c.Callbacks());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

// ---- abort paths -------------------------------------------------------------------------------

TEST(TcpTransport, BackpressureBoundsQueuedBytes) {
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  Collector got;
  ReceiverCallbacks cb = got.Callbacks();
  // The first finished layer blocks the receiver's only I/O thread: it stops reading.
  cb.on_layer_complete = [opened](uint64_t, uint32_t layer) {
    if (layer == 0) opened.wait_for(10s);
  };
  TcpOptions o;
  o.connections = 2;
  o.common.max_queued_bytes = 2 << 20;
  o.common.chunk_bytes = 256 << 10;
  o.sndbuf_bytes = 256 << 10;
  o.rcvbuf_bytes = 256 << 10;
  TcpPair p(o, cb);
  ASSERT_TRUE(p.tx);
  Ticket t = p.Issue(3);
  auto b = p.tx->Begin(MakeHeader(t, 3, 16), t);
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
  auto sent = SendLayers(**b, 16, 1 << 20, &err);  // 32 MiB >> window + socket buffers
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(err.ok()) << err;
  ASSERT_TRUE((*b)->Commit().ok());
  done = true;
  watcher.join();
  releaser.join();
  EXPECT_GE(elapsed, 500ms) << "Append never waited for the stalled receiver";
  EXPECT_LE(max_queued, (2u << 20) + (256u << 10) + 100u);
  ASSERT_TRUE(got.WaitBundles(1));
  ExpectSame(got.bundles[0], sent);
}

TEST(TcpTransport, StalledReceiverTimesOutSender) {
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();
  Collector got;
  ReceiverCallbacks cb = got.Callbacks();
  cb.on_layer_complete = [opened](uint64_t, uint32_t) { opened.wait_for(10s); };
  TcpOptions o;
  o.connections = 1;
  o.common.max_queued_bytes = 1 << 20;
  o.common.idle_timeout = 300ms;
  o.sndbuf_bytes = 128 << 10;
  o.rcvbuf_bytes = 128 << 10;
  TcpPair p(o, cb);
  ASSERT_TRUE(p.tx);
  Ticket t = p.Issue(3);
  auto b = p.tx->Begin(MakeHeader(t, 3, 64), t);
  ASSERT_TRUE(b.ok());
  auto start = std::chrono::steady_clock::now();
  Status err;
  auto sent = SendLayers(**b, 64, 1 << 20, &err);
  Status s = err.ok() ? (*b)->Commit() : err;
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 8s);
  gate.set_value();
  EXPECT_FALSE(p.tx->Stats().healthy);
}

// ---- raw-socket protocol errors ----------------------------------------------------------------

struct RawClient {
  asio::io_context io;
  asio::ip::tcp::socket sock{io};
  explicit RawClient(uint16_t port) { sock.connect({asio::ip::make_address("127.0.0.1"), port}); }
  void Send(const std::vector<std::byte>& bytes) { asio::write(sock, asio::buffer(bytes)); }
  // Reads one frame (header + body); returns false on EOF.
  bool Read(wire::FrameHeader* h, std::vector<std::byte>* body) {
    std::array<std::byte, wire::kFrameHeaderSize> hb{};
    boost::system::error_code ec;
    asio::read(sock, asio::buffer(hb), ec);
    if (ec) return false;
    auto d = wire::DecodeFrameHeader(hb);
    if (!d.ok()) return false;
    *h = *d;
    body->resize(h->body_len);
    asio::read(sock, asio::buffer(*body), ec);
    return !ec;
  }
};

TEST(TcpTransport, UnknownVersionIsRejectedAndConnectionClosed) {
  TcpPair p;
  ASSERT_TRUE(p.rx);
  Ticket t = p.Issue(1);
  RawClient c(p.port);
  auto frame =
      wire::ControlFrame(wire::FrameType::kOpen, t.id, wire::EncodeOpen(MakeHeader(t, 1, 1)));
  frame[4] = std::byte{7};  // version 7
  c.Send(frame);
  wire::FrameHeader h;
  std::vector<std::byte> body;
  ASSERT_TRUE(c.Read(&h, &body));
  EXPECT_EQ(h.type, wire::FrameType::kAbort);
  auto a = wire::DecodeAbort(body);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->code, wire::AbortCode::kUnknownVersion);
  EXPECT_FALSE(c.Read(&h, &body)) << "connection should be closed";
  Status s = p.got.WaitAbort(t.id);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("version 7"), std::string::npos) << s;
}

TEST(TcpTransport, ConnectionResetMidSegmentAborts) {
  TcpPair p;
  ASSERT_TRUE(p.rx);
  Ticket t = p.Issue(1);
  {
    RawClient c(p.port);
    c.Send(wire::ControlFrame(wire::FrameType::kOpen, t.id, wire::EncodeOpen(MakeHeader(t, 1, 1))));
    auto payload = RandomBytes(100000);
    std::vector<std::byte> frame(wire::kFrameHeaderSize + wire::kDataDescSize);
    wire::FrameHeader h;
    h.type = wire::FrameType::kData;
    h.ticket = t.id;
    h.body_len = static_cast<uint32_t>(wire::kDataDescSize + payload.size());
    wire::EncodeFrameHeader(h, frame.data());
    wire::DataDesc d;
    d.info = {0, SegmentKind::kAttnKv, 0, 1, true};
    d.seg_length = payload.size();
    wire::EncodeDataDesc(d, frame.data() + wire::kFrameHeaderSize);
    frame.insert(frame.end(), payload.begin(), payload.begin() + 50000);  // half the payload
    c.Send(frame);
    std::this_thread::sleep_for(50ms);
    c.sock.set_option(asio::socket_base::linger(true, 0));  // close with RST
    c.sock.close();
  }
  Status s = p.got.WaitAbort(t.id);
  EXPECT_TRUE(s.code() == StatusCode::kDataLoss || s.code() == StatusCode::kUnavailable) << s;
  EXPECT_EQ(p.rx->Stats().buffered_bytes, 0u);
}

TEST(TcpTransport, GarbageBytesCloseTheConnection) {
  TcpPair p;
  ASSERT_TRUE(p.rx);
  RawClient c(p.port);
  auto garbage = RandomBytes(64);
  // Garbage must not start with the frame magic, which a random draw hits once in 2^32.
  std::array<std::byte, wire::kFrameHeaderSize> valid{};
  wire::EncodeFrameHeader(wire::FrameHeader{}, valid.data());
  if (std::memcmp(garbage.data(), valid.data(), 4) == 0) garbage[0] ^= std::byte{1};
  c.Send(garbage);
  wire::FrameHeader h;
  std::vector<std::byte> body;
  EXPECT_FALSE(c.Read(&h, &body));
}

TEST(TcpTransport, ConnectToNothingFails) {
  // A port that refuses connections for the whole test: bound (so nobody else can listen on it)
  // but never listening. Closing a probe socket instead would let another process take the port.
  asio::io_context io;
  asio::ip::tcp::socket holder(io);
  holder.open(asio::ip::tcp::v4());
  holder.bind({asio::ip::make_address("127.0.0.1"), 0});
  const uint16_t port = holder.local_endpoint().port();
  TcpOptions o;
  o.connect_timeout = 2s;
  auto s = ConnectTcp("127.0.0.1", port, o);
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable) << s.status();
}

}  // namespace
}  // namespace prfaas::transport
