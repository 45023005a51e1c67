// Unit tests of the KV transport: CRC-32C, the wire codec, the receiver's protocol engine driven
// frame by frame (out-of-order striping, corruption, truncation, versions, budgets), and the
// whole sender/receiver protocol over the in-process backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "common/metrics.h"
#include "tests/unit/transport/test_util.h"
#include "transport/crc32c.h"
#include "transport/session.h"
#include "transport/wire.h"

namespace prfaas::transport {
namespace {

using testing::Collector;
using testing::MakeHeader;
using testing::RandomBytes;
using testing::Rng;

// ---- crc32c ------------------------------------------------------------------------------------

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32cExtendPortable(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF);
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);  // RFC 3720 B.4
  EXPECT_EQ(Crc32c(ones.data(), 32), 0x62A8AB43u);
}

TEST(Crc32c, HardwareMatchesPortableOnRandomInputs) {
  if (!HasSse42()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  for (int i = 0; i < 200; ++i) {
    size_t n = Rng()() % (i % 2 ? 5000 : 100000);  // long inputs take the three-lane path
    auto data = RandomBytes(n + 7);
    size_t skew = Rng()() % 7;  // unaligned starts
    uint32_t seed = static_cast<uint32_t>(Rng()());
    EXPECT_EQ(Crc32cExtendSse42(seed, data.data() + skew, n),
              Crc32cExtendPortable(seed, data.data() + skew, n));
  }
}

TEST(Crc32c, ExtendEqualsWhole) {
  auto data = RandomBytes(10000);
  size_t cut = Rng()() % data.size();
  EXPECT_EQ(Crc32cExtend(Crc32c(data.data(), cut), data.data() + cut, data.size() - cut),
            Crc32c(data.data(), data.size()));
}

TEST(Crc32c, CombineEqualsWhole) {
  for (int i = 0; i < 50; ++i) {
    auto data = RandomBytes(1 + Rng()() % 70000);
    size_t cut = Rng()() % (data.size() + 1);
    EXPECT_EQ(Crc32cCombine(Crc32c(data.data(), cut), Crc32c(data.data() + cut, data.size() - cut),
                            data.size() - cut),
              Crc32c(data.data(), data.size()))
        << "cut " << cut << " of " << data.size();
  }
}

TEST(Crc32c, EveryFlippedByteIsDetected) {
  auto data = RandomBytes(1 << 16);
  const uint32_t good = Crc32c(data.data(), data.size());
  for (int i = 0; i < 500; ++i) {
    size_t pos = Rng()() % data.size();
    auto flip = static_cast<std::byte>(1 + Rng()() % 255);  // any non-zero xor
    data[pos] ^= flip;
    EXPECT_NE(Crc32c(data.data(), data.size()), good) << "pos " << pos;
    data[pos] ^= flip;
  }
}

// ---- wire --------------------------------------------------------------------------------------

TEST(Wire, OpenRoundTrips) {
  Ticket t{Rng()(), 1 << 20, 32};
  BundleHeader h = MakeHeader(t, Rng()(), 7);
  auto body = wire::EncodeOpen(h);
  auto back = wire::DecodeOpen(t.id, body);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, h);
  body.pop_back();
  EXPECT_FALSE(wire::DecodeOpen(t.id, body).ok());
}

TEST(Wire, FrameHeaderAndDescRoundTrip) {
  wire::FrameHeader h;
  h.type = wire::FrameType::kData;
  h.ticket = Rng()();
  h.body_len = wire::kDataDescSize + 100;
  std::array<std::byte, wire::kFrameHeaderSize> buf{};
  wire::EncodeFrameHeader(h, buf.data());
  auto back = wire::DecodeFrameHeader(buf);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->ticket, h.ticket);
  EXPECT_EQ(back->body_len, h.body_len);

  wire::DataDesc d;
  d.seg_index = 3;
  d.info = {5, SegmentKind::kSsmState, 2, 9, true};
  d.seg_in_layer = 2;
  d.seg_crc = 0xDEADBEEF;
  d.seg_length = 1000;
  d.chunk_offset = 900;
  std::array<std::byte, wire::kDataDescSize> db{};
  wire::EncodeDataDesc(d, db.data());
  auto dd = wire::DecodeDataDesc(db, wire::kDataDescSize + 100);
  ASSERT_TRUE(dd.ok()) << dd.status();
  EXPECT_EQ(dd->info, d.info);
  EXPECT_EQ(dd->seg_in_layer, 2);
  EXPECT_EQ(dd->chunk_len, 100u);
  // A chunk that would run past its segment is rejected.
  EXPECT_FALSE(wire::DecodeDataDesc(db, wire::kDataDescSize + 101).ok());
}

TEST(Wire, RejectsBadMagicAndOversizedControl) {
  std::array<std::byte, wire::kFrameHeaderSize> buf{};
  wire::FrameHeader h;
  h.type = wire::FrameType::kAbort;
  h.body_len = wire::kMaxControlBody + 1;
  wire::EncodeFrameHeader(h, buf.data());
  EXPECT_FALSE(wire::DecodeFrameHeader(buf).ok());
  h.body_len = 4;
  wire::EncodeFrameHeader(h, buf.data());
  EXPECT_TRUE(wire::DecodeFrameHeader(buf).ok());
  buf[0] ^= std::byte{1};
  EXPECT_FALSE(wire::DecodeFrameHeader(buf).ok());
}

// ---- receiver engine, frame by frame
// -------------------------------------------------------------

struct FakePath : internal::ReplyPath {
  std::mutex mu;
  std::vector<wire::FrameHeader> sent;
  std::vector<wire::AbortBody> aborts;
  bool closed = false;
  void SendControl(std::vector<std::byte> frame, bool close_after) override {
    std::lock_guard lk(mu);
    auto h = wire::DecodeFrameHeader(frame);
    if (!h.ok()) return;
    sent.push_back(*h);
    if (h->type == wire::FrameType::kAbort) {
      auto a = wire::DecodeAbort(std::span<const std::byte>(frame).subspan(wire::kFrameHeaderSize));
      if (a.ok()) aborts.push_back(*a);
    }
    closed |= close_after;
  }
  bool Acked(uint64_t ticket) {
    std::lock_guard lk(mu);
    for (auto& h : sent)
      if (h.type == wire::FrameType::kAck && h.ticket == ticket) return true;
    return false;
  }
};

// Drives an RxCore with hand-made frames.
struct RxHarness {
  metrics::Registry registry;
  Collector got;
  std::shared_ptr<FakePath> path = std::make_shared<FakePath>();
  std::shared_ptr<internal::RxCore> core;

  RxHarness() {
    CommonOptions o;
    o.registry = &registry;
    core = std::make_shared<internal::RxCore>(o, got.Callbacks(), "test");
  }
  ~RxHarness() { core->Shutdown(); }

  Ticket Issue(uint64_t fingerprint, uint64_t budget = 1 << 24) {
    TicketSpec s;
    s.budget_bytes = budget;
    s.model_fingerprint = fingerprint;
    s.skip_tokens = 64;
    return core->IssueTicket(s);
  }
  wire::FrameHeader Hdr(wire::FrameType type, uint64_t ticket, size_t body) {
    wire::FrameHeader h;
    h.type = type;
    h.ticket = ticket;
    h.body_len = static_cast<uint32_t>(body);
    return h;
  }
  void Open(const BundleHeader& bh) {
    auto body = wire::EncodeOpen(bh);
    ASSERT_TRUE(
        core->OnControl(path, Hdr(wire::FrameType::kOpen, bh.ticket_id, body.size()), body).ok());
  }
  void Chunk(uint64_t ticket, wire::DataDesc d, const std::byte* payload, uint32_t len) {
    d.chunk_len = len;
    auto target = core->BeginChunk(path, ticket, d);
    if (target.dst) std::memcpy(target.dst, payload, len);
    core->EndChunk(ticket, d, std::move(target));
  }
  void Commit(uint64_t ticket, uint16_t stripe, uint16_t stripes, uint32_t segs, uint64_t total) {
    auto body = wire::EncodeCommit({stripe, stripes, segs, total});
    ASSERT_TRUE(
        core->OnControl(path, Hdr(wire::FrameType::kCommit, ticket, body.size()), body).ok());
  }
};

// A bundle cut into segments, each cut into chunks; chunks can be delivered in any order.
struct Plan {
  struct Chunk {
    wire::DataDesc d;
    const std::byte* p;
    uint32_t len;
  };
  std::vector<std::vector<std::byte>> segs;
  std::vector<Chunk> chunks;
  uint64_t total = 0;

  Plan(int layers, size_t seg_bytes, size_t chunk_bytes) {
    for (int l = 0; l < layers; ++l) {
      for (int k = 0; k < 2; ++k) {
        segs.push_back(RandomBytes(seg_bytes + Rng()() % 1000));
      }
    }
    uint32_t idx = 0;
    for (int l = 0; l < layers; ++l) {
      for (int k = 0; k < 2; ++k, ++idx) {
        const auto& s = segs[idx];
        total += s.size();
        wire::DataDesc d;
        d.seg_index = idx;
        d.info = {static_cast<uint32_t>(l),
                  k == 0 ? SegmentKind::kConvState : SegmentKind::kSsmState, 0, 4, k == 1};
        d.seg_in_layer = static_cast<uint16_t>(k);
        d.seg_crc = Crc32c(s.data(), s.size());
        d.seg_length = s.size();
        for (size_t off = 0; off < s.size(); off += chunk_bytes) {
          d.chunk_offset = off;
          chunks.push_back(
              {d, s.data() + off, static_cast<uint32_t>(std::min(chunk_bytes, s.size() - off))});
        }
      }
    }
  }
};

TEST(RxCore, ReassemblesShuffledStripesAndDeliversOnlyOnCommit) {
  RxHarness rx;
  const uint64_t fp = Rng()();
  Ticket t = rx.Issue(fp);
  Plan plan(4, 20000, 3000);
  std::shuffle(plan.chunks.begin(), plan.chunks.end(), Rng());
  // Half the data arrives before OPEN (another stripe can overtake it), and one stripe's COMMIT
  // arrives while the other stripe still carries data.
  size_t half = plan.chunks.size() / 2;
  for (size_t i = 0; i < half; ++i)
    rx.Chunk(t.id, plan.chunks[i].d, plan.chunks[i].p, plan.chunks[i].len);
  rx.Open(MakeHeader(t, fp, 4));
  for (size_t i = half; i + 1 < plan.chunks.size(); ++i)
    rx.Chunk(t.id, plan.chunks[i].d, plan.chunks[i].p, plan.chunks[i].len);
  rx.Commit(t.id, 1, 2, static_cast<uint32_t>(plan.segs.size()), plan.total);
  auto& last = plan.chunks.back();
  rx.Chunk(t.id, last.d, last.p, last.len);
  EXPECT_TRUE(rx.got.bundles.empty()) << "delivered before every stripe committed";
  EXPECT_FALSE(rx.path->Acked(t.id));
  rx.Commit(t.id, 0, 2, static_cast<uint32_t>(plan.segs.size()), plan.total);
  for (auto& [id, st] : rx.got.aborts) ADD_FAILURE() << st;
  ASSERT_EQ(rx.got.bundles.size(), 1u) << rx.core->Stats().buffered_bytes;
  const Bundle& b = rx.got.bundles[0];
  ASSERT_EQ(b.segments.size(), plan.segs.size());
  for (size_t i = 0; i < plan.segs.size(); ++i) {
    ASSERT_EQ(b.segments[i].size, plan.segs[i].size());
    EXPECT_EQ(0, std::memcmp(b.segments[i].data.get(), plan.segs[i].data(), plan.segs[i].size()));
  }
  EXPECT_EQ(b.total_bytes, plan.total);
  EXPECT_TRUE(rx.path->Acked(t.id));
  EXPECT_EQ(rx.got.layers.size(), 4u);  // every layer reported complete exactly once
  EXPECT_EQ(rx.core->Stats().buffered_bytes, 0u);
}

TEST(RxCore, FlippedByteAnywhereIsRejected) {
  for (int trial = 0; trial < 20; ++trial) {
    RxHarness rx;
    const uint64_t fp = Rng()();
    Ticket t = rx.Issue(fp);
    Plan plan(2, 5000, 1500);
    rx.Open(MakeHeader(t, fp, 2));
    // Corrupt one byte of one chunk on the way (the copy, not the source the crc came from).
    size_t victim = Rng()() % plan.chunks.size();
    for (size_t i = 0; i < plan.chunks.size(); ++i) {
      auto& c = plan.chunks[i];
      std::vector<std::byte> copy(c.p, c.p + c.len);
      if (i == victim) copy[Rng()() % c.len] ^= static_cast<std::byte>(1 + Rng()() % 255);
      rx.Chunk(t.id, c.d, copy.data(), c.len);
    }
    rx.Commit(t.id, 0, 1, static_cast<uint32_t>(plan.segs.size()), plan.total);
    EXPECT_TRUE(rx.got.bundles.empty());
    Status s = rx.got.WaitAbort(t.id, std::chrono::milliseconds(0));
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
    EXPECT_NE(s.message().find("checksum"), std::string::npos) << s;
    ASSERT_FALSE(rx.path->aborts.empty());
    EXPECT_EQ(rx.path->aborts[0].code, wire::AbortCode::kChecksum);
    EXPECT_EQ(rx.core->Stats().buffered_bytes, 0u);
  }
}

TEST(RxCore, TruncatedSegmentAbortsAtCommit) {
  RxHarness rx;
  const uint64_t fp = Rng()();
  Ticket t = rx.Issue(fp);
  Plan plan(2, 8000, 1000);
  rx.Open(MakeHeader(t, fp, 2));
  size_t drop = Rng()() % plan.chunks.size();
  for (size_t i = 0; i < plan.chunks.size(); ++i)
    if (i != drop) rx.Chunk(t.id, plan.chunks[i].d, plan.chunks[i].p, plan.chunks[i].len);
  rx.Commit(t.id, 0, 1, static_cast<uint32_t>(plan.segs.size()), plan.total);
  Status s = rx.got.WaitAbort(t.id, std::chrono::milliseconds(0));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s;
  EXPECT_TRUE(rx.got.bundles.empty());
}

TEST(RxCore, MissingSegmentAbortsAtCommit) {
  RxHarness rx;
  const uint64_t fp = Rng()();
  Ticket t = rx.Issue(fp);
  Plan plan(1, 3000, 4096);
  rx.Open(MakeHeader(t, fp, 1));
  for (auto& c : plan.chunks) rx.Chunk(t.id, c.d, c.p, c.len);
  rx.Commit(t.id, 0, 1, static_cast<uint32_t>(plan.segs.size()) + 1, plan.total + 10);
  EXPECT_EQ(rx.got.WaitAbort(t.id, std::chrono::milliseconds(0)).code(), StatusCode::kDataLoss);
}

TEST(RxCore, UnknownVersionAbortsAndClosesThePath) {
  RxHarness rx;
  Ticket t = rx.Issue(1);
  wire::FrameHeader h = rx.Hdr(wire::FrameType::kOpen, t.id, 0);
  h.version = 99;
  rx.core->OnUnknownVersion(rx.path, h);
  Status s = rx.got.WaitAbort(t.id, std::chrono::milliseconds(0));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("version 99"), std::string::npos) << s;
  EXPECT_TRUE(rx.path->closed);
  ASSERT_EQ(rx.path->aborts.size(), 1u);
  EXPECT_EQ(rx.path->aborts[0].code, wire::AbortCode::kUnknownVersion);
}

TEST(RxCore, FingerprintMismatchAborts) {
  RxHarness rx;
  Ticket t = rx.Issue(1234);
  rx.Open(MakeHeader(t, 999, 2));
  Status s = rx.got.WaitAbort(t.id, std::chrono::milliseconds(0));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("fingerprint"), std::string::npos) << s;
}

TEST(RxCore, BudgetOverrunAbortsWithoutBuffering) {
  RxHarness rx;
  Ticket t = rx.Issue(7, /*budget=*/10000);
  Plan plan(2, 6000, 2000);  // ~24 KB > 10 KB
  rx.Open(MakeHeader(t, 7, 2));
  for (auto& c : plan.chunks) rx.Chunk(t.id, c.d, c.p, c.len);
  EXPECT_EQ(rx.got.WaitAbort(t.id, std::chrono::milliseconds(0)).code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(rx.core->Stats().buffered_bytes, 0u);
}

TEST(RxCore, DuplicateChunkIsAProtocolError) {
  RxHarness rx;
  Ticket t = rx.Issue(7);
  Plan plan(1, 5000, 1000);
  rx.Open(MakeHeader(t, 7, 1));
  rx.Chunk(t.id, plan.chunks[0].d, plan.chunks[0].p, plan.chunks[0].len);
  rx.Chunk(t.id, plan.chunks[0].d, plan.chunks[0].p, plan.chunks[0].len);
  EXPECT_EQ(rx.got.WaitAbort(t.id, std::chrono::milliseconds(0)).code(), StatusCode::kInternal);
}

TEST(RxCore, OverlappingChunkIsAProtocolError) {
  // Receive buffers are recycled, so a chunk overlapping another (which could leave bytes of the
  // segment unwritten while the byte count still adds up) must be refused.
  RxHarness rx;
  Ticket t = rx.Issue(7);
  Plan plan(1, 4000, 2000);
  rx.Open(MakeHeader(t, 7, 1));
  wire::DataDesc d = plan.chunks[0].d;
  rx.Chunk(t.id, d, plan.chunks[0].p, 2000);
  d.chunk_offset = 1000;  // overlaps [0, 2000)
  rx.Chunk(t.id, d, plan.chunks[0].p, 2000);
  EXPECT_EQ(rx.got.WaitAbort(t.id, std::chrono::milliseconds(0)).code(), StatusCode::kInternal);
  EXPECT_EQ(rx.core->Stats().buffered_bytes, 0u);
}

TEST(RxCore, UnknownTicketIsAnswered) {
  RxHarness rx;
  Ticket fake{Rng()(), 100, 64};
  rx.Open(MakeHeader(fake, 1, 1));
  ASSERT_EQ(rx.path->aborts.size(), 1u);
  EXPECT_EQ(rx.path->aborts[0].code, wire::AbortCode::kUnknownTicket);
}

TEST(RxCore, IdleTicketTimesOut) {
  metrics::Registry reg;
  Collector got;
  CommonOptions o;
  o.registry = &reg;
  auto core = std::make_shared<internal::RxCore>(o, got.Callbacks(), "idle");
  TicketSpec spec;
  spec.budget_bytes = 100;
  spec.idle_timeout = std::chrono::milliseconds(150);
  Ticket t = core->IssueTicket(spec);
  Status s = got.WaitAbort(t.id, std::chrono::seconds(5));
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  core->Shutdown();
}

// ---- the whole protocol over the in-process backend -------------------------------------------

struct InprocPair {
  metrics::Registry registry;
  Collector got;
  std::unique_ptr<Receiver> rx;
  std::unique_ptr<Sender> tx;
  explicit InprocPair(CommonOptions o = {}) {
    o.registry = &registry;
    std::string name = "rx-" + std::to_string(Rng()());
    auto r = ListenInproc(name, o, got.Callbacks());
    EXPECT_TRUE(r.ok()) << r.status();
    rx = std::move(r).value();
    auto s = ConnectInproc(name, o);
    EXPECT_TRUE(s.ok()) << s.status();
    tx = std::move(s).value();
  }
  Ticket Issue(uint64_t fp, uint64_t budget = 1 << 24) {
    TicketSpec spec;
    spec.budget_bytes = budget;
    spec.model_fingerprint = fp;
    spec.skip_tokens = 128;
    return rx->IssueTicket(spec);
  }
};

TEST(Inproc, LayerwiseBundleArrivesIntact) {
  InprocPair p;
  const uint64_t fp = Rng()();
  Ticket t = p.Issue(fp, 1 << 26);
  auto bundle = p.tx->Begin(MakeHeader(t, fp, 3), t);
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ(p.tx->Stats().active_bundles, 1u);
  std::vector<std::vector<std::byte>> sent;
  for (uint32_t l = 0; l < 3; ++l) {
    for (int k = 0; k < 2; ++k) {
      sent.push_back(RandomBytes(3'000'000 + Rng()() % 1000));
      SegmentInfo info{l, k ? SegmentKind::kSsmState : SegmentKind::kAttnKv, 0, 8, k == 1};
      ASSERT_TRUE((*bundle)->Append(info, {sent.back().data(), sent.back().size()}).ok());
    }
  }
  ASSERT_TRUE((*bundle)->Commit().ok());
  ASSERT_EQ(p.got.bundles.size(), 1u);
  const Bundle& b = p.got.bundles[0];
  EXPECT_EQ(b.header, MakeHeader(t, fp, 3));
  ASSERT_EQ(b.segments.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(b.segments[i].size, sent[i].size());
    EXPECT_EQ(0, std::memcmp(b.segments[i].data.get(), sent[i].data(), sent[i].size()));
  }
  EXPECT_EQ(p.got.layers.size(), 3u);
  auto st = p.tx->Stats();
  EXPECT_EQ(st.bundles_committed, 1u);
  EXPECT_EQ(st.active_bundles, 0u);
  EXPECT_GT(st.bytes_sent, 18'000'000u);
  EXPECT_EQ(st.queued_bytes, 0u);
  std::string text = p.registry.Render();
  EXPECT_NE(text.find("prfaas_transport_sent_bytes_total"), std::string::npos);
  EXPECT_NE(text.find("prfaas_transport_bundles_total{role=\"recv\",result=\"committed\"} 1"),
            std::string::npos)
      << text;
}

// Receive buffers of 2 MiB and up are recycled through the process-wide pool up to its limit; a
// recycled block carries the new bundle's bytes intact, and lowering the limit frees idle blocks.
TEST(Inproc, ReceiveBuffersAreRecycledUpToThePoolLimit) {
  SetReceiveBufferPoolBytes(0);
  ASSERT_EQ(ReceiveBufferPoolCachedBytes(), 0u);
  SetReceiveBufferPoolBytes(16u << 20);
  InprocPair p;
  const uint64_t fp = Rng()();
  auto send = [&](std::vector<std::vector<std::byte>>& sent) {
    Ticket t = p.Issue(fp, 1 << 26);
    auto bundle = p.tx->Begin(MakeHeader(t, fp, 3), t);
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    for (uint32_t l = 0; l < 3; ++l) {
      sent.push_back(RandomBytes((3u << 20) + Rng()() % 1000));  // rounds up to a 4 MiB block
      SegmentInfo info{l, SegmentKind::kAttnKv, 0, 8, false};
      ASSERT_TRUE((*bundle)->Append(info, {sent.back().data(), sent.back().size()}).ok());
    }
    ASSERT_TRUE((*bundle)->Commit().ok());
  };
  std::vector<std::vector<std::byte>> first, second;
  send(first);
  ASSERT_EQ(p.got.bundles.size(), 1u);
  EXPECT_EQ(ReceiveBufferPoolCachedBytes(), 0u);  // all three blocks are held by the consumer
  p.got.bundles.clear();
  EXPECT_EQ(ReceiveBufferPoolCachedBytes(), 12u << 20);

  send(second);  // takes the three idle blocks back
  EXPECT_EQ(ReceiveBufferPoolCachedBytes(), 0u);
  ASSERT_EQ(p.got.bundles.size(), 1u);
  for (size_t i = 0; i < second.size(); ++i) {
    ASSERT_EQ(p.got.bundles[0].segments[i].size, second[i].size());
    EXPECT_EQ(0, std::memcmp(p.got.bundles[0].segments[i].data.get(), second[i].data(),
                             second[i].size()));
  }
  p.got.bundles.clear();
  EXPECT_EQ(ReceiveBufferPoolCachedBytes(), 12u << 20);
  SetReceiveBufferPoolBytes(4u << 20);  // lowering the limit frees what is above it at once
  EXPECT_EQ(ReceiveBufferPoolCachedBytes(), 4u << 20);
  SetReceiveBufferPoolBytes(256u << 20);
}

TEST(Inproc, FingerprintMismatchFailsBothSides) {
  InprocPair p;
  Ticket t = p.Issue(111);
  auto bundle = p.tx->Begin(MakeHeader(t, 222, 1), t);
  Status s = bundle.ok() ? (*bundle)->Commit() : bundle.status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s;
  EXPECT_EQ(p.got.WaitAbort(t.id).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(p.got.bundles.empty());
}

TEST(Inproc, SenderCannotExceedBudget) {
  InprocPair p;
  Ticket t = p.Issue(5, /*budget=*/1000);
  auto bundle = p.tx->Begin(MakeHeader(t, 5, 1), t);
  ASSERT_TRUE(bundle.ok());
  auto data = RandomBytes(1001);
  EXPECT_EQ(
      (*bundle)->Append({0, SegmentKind::kAttnKv, 0, 1, true}, {data.data(), data.size()}).code(),
      StatusCode::kResourceExhausted);
  EXPECT_TRUE((*bundle)->Append({0, SegmentKind::kAttnKv, 0, 1, true}, {data.data(), 1000}).ok());
  EXPECT_TRUE((*bundle)->Commit().ok());
  EXPECT_EQ(p.got.bundles.size(), 1u);
}

TEST(Inproc, SenderAbortReachesReceiver) {
  InprocPair p;
  Ticket t = p.Issue(5);
  auto bundle = p.tx->Begin(MakeHeader(t, 5, 1), t);
  ASSERT_TRUE(bundle.ok());
  auto data = RandomBytes(5000);
  ASSERT_TRUE(
      (*bundle)->Append({0, SegmentKind::kAttnKv, 0, 1, false}, {data.data(), data.size()}).ok());
  (*bundle)->Abort("prefill preempted");
  Status s = p.got.WaitAbort(t.id);
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s;
  EXPECT_NE(s.message().find("prefill preempted"), std::string::npos) << s;
  EXPECT_EQ((*bundle)->Commit().code(), StatusCode::kCancelled);
  EXPECT_EQ(p.rx->Stats().buffered_bytes, 0u);
  EXPECT_EQ(p.tx->Stats().active_bundles, 0u);
  EXPECT_EQ(p.tx->Stats().bundles_aborted, 1u);
}

TEST(Inproc, DroppingAnUncommittedBundleAborts) {
  InprocPair p;
  Ticket t = p.Issue(5);
  { auto bundle = p.tx->Begin(MakeHeader(t, 5, 1), t); }
  EXPECT_EQ(p.got.WaitAbort(t.id).code(), StatusCode::kCancelled);
}

TEST(Inproc, ReceiverCancelReachesSender) {
  InprocPair p;
  Ticket t = p.Issue(5);
  auto bundle = p.tx->Begin(MakeHeader(t, 5, 1), t);
  ASSERT_TRUE(bundle.ok());
  p.rx->Cancel(t.id, "request finished elsewhere");
  auto data = RandomBytes(100);
  Status s = (*bundle)->Append({0, SegmentKind::kAttnKv, 0, 1, true}, {data.data(), data.size()});
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s;
  EXPECT_NE(s.message().find("request finished elsewhere"), std::string::npos) << s;
  EXPECT_EQ((*bundle)->Commit().code(), StatusCode::kCancelled);
}

TEST(Inproc, ReceiverGoneMeansUnavailable) {
  InprocPair p;
  Ticket t = p.Issue(5);
  auto bundle = p.tx->Begin(MakeHeader(t, 5, 1), t);
  ASSERT_TRUE(bundle.ok());
  p.rx.reset();
  auto data = RandomBytes(100);
  Status s = (*bundle)->Append({0, SegmentKind::kAttnKv, 0, 1, true}, {data.data(), data.size()});
  if (s.ok()) s = (*bundle)->Commit();
  EXPECT_TRUE(s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kCancelled) << s;
  EXPECT_FALSE(p.tx->Begin(MakeHeader(t, 5, 1), t).ok());
}

TEST(Inproc, DeviceMemoryNeedsTheCudaBuild) {
#ifdef PRFAAS_HAVE_CUDA_STAGING
  GTEST_SKIP() << "CUDA build: device memory is covered by transport_staging_gpu_test";
#endif
  InprocPair p;
  Ticket t = p.Issue(5);
  auto bundle = p.tx->Begin(MakeHeader(t, 5, 1), t);
  ASSERT_TRUE(bundle.ok());
  int x = 0;
  EXPECT_EQ(
      (*bundle)->Append({0, SegmentKind::kAttnKv, 0, 1, true}, {&x, 4, MemoryKind::kDevice}).code(),
      StatusCode::kUnimplemented);
}

TEST(Inproc, BeginValidatesTheHeader) {
  InprocPair p;
  Ticket t = p.Issue(5);
  BundleHeader h = MakeHeader(t, 5, 1);
  h.token_begin = 0;  // receiver holds 128 tokens already
  EXPECT_EQ(p.tx->Begin(h, t).status().code(), StatusCode::kInvalidArgument);
  h = MakeHeader(t, 5, 1);
  h.ticket_id++;
  EXPECT_EQ(p.tx->Begin(h, t).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace prfaas::transport
