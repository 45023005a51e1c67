// The abort paths every stream backend must handle alike, run over tcp and ucx on 127.0.0.1:
// receiver cancel, sender abort, sender death, receiver death, idle ticket, budget overrun.
// Backend-specific behaviour (TLS, raw-socket protocol errors, raw UCP frames, large bundles)
// stays in tcp_transport_test.cpp and ucx_transport_test.cpp. UCX cases skip with the reason
// when UCX is not built or cannot initialise here.
#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/transport/stream_test_util.h"

namespace prfaas::transport {
namespace {

using testing::LoopbackOptions;
using testing::MakeHeader;
using testing::RandomBytes;
using testing::SendLayers;
using testing::StreamPair;
using namespace std::chrono_literals;

class StreamTransportTest : public ::testing::TestWithParam<Backend> {
 protected:
  Backend backend() const { return GetParam(); }
};

TEST_P(StreamTransportTest, ReceiverCancelStopsSender) {
  StreamPair p(backend(), LoopbackOptions(2));
  PRFAAS_SKIP_UNUSABLE(backend(), p);
  Ticket t = p.Issue(9);
  auto b = p.tx->Begin(MakeHeader(t, 9, 200), t);
  ASSERT_TRUE(b.ok());
  std::thread canceller([&] {
    std::this_thread::sleep_for(50ms);
    p.rx->Cancel(t.id, "decode worker draining");
  });
  Status err;
  auto sent = SendLayers(**b, 200, 1 << 20, &err);  // 400 MiB: far more than 50 ms worth
  Status s = err.ok() ? (*b)->Commit() : err;
  canceller.join();
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s;
  EXPECT_NE(s.message().find("decode worker draining"), std::string::npos) << s;
  EXPECT_EQ(p.got.WaitAbort(t.id).code(), StatusCode::kCancelled);
  EXPECT_TRUE(p.got.bundles.empty());
  EXPECT_EQ(p.rx->Stats().buffered_bytes, 0u);
  // The link survives a cancelled ticket.
  Ticket t2 = p.Issue(9);
  auto b2 = p.tx->Begin(MakeHeader(t2, 9, 1), t2);
  ASSERT_TRUE(b2.ok());
  auto sent2 = SendLayers(**b2, 1, 1000, &err);
  EXPECT_TRUE((*b2)->Commit().ok());
}

TEST_P(StreamTransportTest, SenderAbortFreesReceiver) {
  StreamPair p(backend(), LoopbackOptions());
  PRFAAS_SKIP_UNUSABLE(backend(), p);
  Ticket t = p.Issue(9);
  auto b = p.tx->Begin(MakeHeader(t, 9, 4), t);
  ASSERT_TRUE(b.ok());
  Status err;
  auto sent = SendLayers(**b, 2, 1 << 20, &err);
  (*b)->Abort("scheduler moved the request");
  Status s = p.got.WaitAbort(t.id);
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s;
  EXPECT_NE(s.message().find("scheduler moved the request"), std::string::npos);
  EXPECT_EQ(p.rx->Stats().buffered_bytes, 0u);
  EXPECT_TRUE(p.got.bundles.empty());
  EXPECT_EQ(p.tx->Stats().active_bundles, 0u);
}

TEST_P(StreamTransportTest, SenderDeathAbortsOpenTickets) {
  StreamPair p(backend(), LoopbackOptions());
  PRFAAS_SKIP_UNUSABLE(backend(), p);
  Ticket t = p.Issue(9);
  auto b = p.tx->Begin(MakeHeader(t, 9, 4), t);
  ASSERT_TRUE(b.ok());
  Status err;
  auto sent = SendLayers(**b, 1, 1 << 20, &err);
  p.tx->Close();  // the prefill worker dies mid-bundle
  Status s = p.got.WaitAbort(t.id);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_EQ((*b)->Commit().code(), StatusCode::kCancelled);
  EXPECT_EQ(p.rx->Stats().buffered_bytes, 0u);
}

TEST_P(StreamTransportTest, ReceiverDeathFailsSender) {
  StreamPair p(backend(), LoopbackOptions());
  PRFAAS_SKIP_UNUSABLE(backend(), p);
  Ticket t = p.Issue(9);
  auto b = p.tx->Begin(MakeHeader(t, 9, 4), t);
  ASSERT_TRUE(b.ok());
  Status err;
  auto sent = SendLayers(**b, 1, 1 << 20, &err);
  p.rx->Shutdown();
  Status s = err.ok() ? (*b)->Commit() : err;
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
  EXPECT_EQ(p.got.WaitAbort(t.id).code(), StatusCode::kUnavailable);
  // The dead link refuses new bundles within a bounded time.
  for (int i = 0; i < 50 && p.tx->Stats().healthy; ++i) std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(p.tx->Stats().healthy);
  EXPECT_FALSE(p.tx->Begin(MakeHeader(t, 9, 4), t).ok());
}

TEST_P(StreamTransportTest, IdleTicketTimesOutOnBothSides) {
  StreamPair p(backend(), LoopbackOptions());
  PRFAAS_SKIP_UNUSABLE(backend(), p);
  Ticket t = p.Issue(9, 1 << 30, 300ms);
  auto b = p.tx->Begin(MakeHeader(t, 9, 4), t);
  ASSERT_TRUE(b.ok());
  Status err;
  auto sent = SendLayers(**b, 1, 1000, &err);
  // The sender stalls (no commit): the receiver gives up and tells the sender.
  Status s = p.got.WaitAbort(t.id, 5s);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ((*b)->Commit().code(), StatusCode::kDeadlineExceeded);
}

TEST_P(StreamTransportTest, BudgetOverrunIsRefused) {
  StreamPair p(backend(), LoopbackOptions());
  PRFAAS_SKIP_UNUSABLE(backend(), p);
  Ticket t = p.Issue(5, /*budget=*/1000);
  auto b = p.tx->Begin(MakeHeader(t, 5, 1), t);
  ASSERT_TRUE(b.ok());
  auto data = RandomBytes(1001);
  EXPECT_EQ((*b)->Append({0, SegmentKind::kAttnKv, 0, 1, true}, {data.data(), 1001}).code(),
            StatusCode::kResourceExhausted);
  EXPECT_TRUE((*b)->Append({0, SegmentKind::kAttnKv, 0, 1, true}, {data.data(), 1000}).ok());
  EXPECT_TRUE((*b)->Commit().ok());
  ASSERT_TRUE(p.got.WaitBundles(1));
}

INSTANTIATE_TEST_SUITE_P(Backends, StreamTransportTest,
                         ::testing::Values(Backend::kTcp, Backend::kUcx),
                         [](const ::testing::TestParamInfo<Backend>& i) {
                           return std::string(BackendName(i.param));
                         });

}  // namespace
}  // namespace prfaas::transport
