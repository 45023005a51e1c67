// Real `prfaas worker` processes on loopback, driven through their gRPC API the way the router
// drives them: colocated vs disaggregated exactness, admission control, failures, role switching
// and graceful shutdown.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <thread>

#include "prfaas/v1/worker.grpc.pb.h"
#include "tests/support/process.h"

namespace prfaas {
namespace {

using testing::ChildProcess;

struct Worker {
  std::unique_ptr<ChildProcess> proc;
  nlohmann::json ready;
  std::unique_ptr<v1::DecodeService::Stub> decode;
  std::unique_ptr<v1::PrefillService::Stub> prefill;
  std::unique_ptr<v1::WorkerAdmin::Stub> admin;
  int http_port() const { return ready["http_port"]; }
  std::string Metrics() const {
    return testing::HttpGet("127.0.0.1", http_port(), "/metrics").body;
  }
};

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::MakeTempDir("prfaas_worker_test"); }

  Worker Start(const std::string& role, std::vector<std::string> extra = {}) {
    static int n = 0;
    std::string name = role + std::to_string(n++);
    std::string ready = dir_ + "/" + name + ".json";
    std::vector<std::string> args = {"worker",       "--role", role,          "--model", "tiny",
                                     "--ready-file", ready,    "--log-level", "warn"};
    args.insert(args.end(), extra.begin(), extra.end());
    Worker w;
    w.proc =
        std::make_unique<ChildProcess>(testing::PrfaasBinary(), args, dir_ + "/" + name + ".log");
    auto j = testing::WaitForReadyFile(ready, std::chrono::seconds(60), w.proc.get());
    if (!j) {
      ADD_FAILURE() << "worker " << name << " did not become ready:\n" << w.proc->Log();
      return w;
    }
    w.ready = *j;
    auto ch = grpc::CreateChannel("127.0.0.1:" + std::to_string(int(w.ready["grpc_port"])),
                                  grpc::InsecureChannelCredentials());
    w.decode = v1::DecodeService::NewStub(ch);
    w.prefill = v1::PrefillService::NewStub(ch);
    w.admin = v1::WorkerAdmin::NewStub(ch);
    return w;
  }

  std::string dir_;
};

v1::DecodeRequest MakeRequest(const std::vector<int32_t>& prompt, int max_tokens, bool local) {
  v1::DecodeRequest r;
  static int id = 0;
  r.set_request_id("req-" + std::to_string(id++));
  for (int32_t t : prompt) r.add_prompt_token_ids(t);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_ignore_eos(true);
  r.set_local_prefill(local);
  return r;
}

struct Outcome {
  grpc::Status status;
  std::vector<int32_t> tokens;
  v1::Finished finished;
  int64_t transferred_bytes = 0;
};

Outcome Colocated(Worker& w, const std::vector<int32_t>& prompt, int max_tokens) {
  Outcome o;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto reader = w.decode->Decode(&ctx, MakeRequest(prompt, max_tokens, true));
  v1::DecodeEvent ev;
  while (reader->Read(&ev)) {
    if (ev.has_tokens())
      for (int32_t t : ev.tokens().token_ids()) o.tokens.push_back(t);
    if (ev.has_finished()) o.finished = ev.finished();
  }
  o.status = reader->Finish();
  return o;
}

// The router's disaggregated path: Decode (ticket) -> Prefill(ticket) -> StartDecode(first).
Outcome Disaggregated(Worker& p, Worker& d, const std::vector<int32_t>& prompt, int max_tokens) {
  Outcome o;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  auto req = MakeRequest(prompt, max_tokens, false);
  auto reader = d.decode->Decode(&ctx, req);
  v1::DecodeEvent ev;
  if (!reader->Read(&ev) || !ev.has_ticket()) {
    o.status = reader->Finish();
    if (o.status.ok()) o.status = grpc::Status(grpc::StatusCode::INTERNAL, "no ticket");
    return o;
  }
  v1::PrefillRequest preq;
  preq.set_request_id(req.request_id());
  *preq.mutable_prompt_token_ids() = req.prompt_token_ids();
  *preq.mutable_sampling() = req.sampling();
  *preq.mutable_ticket() = ev.ticket();
  v1::PrefillReply prep;
  grpc::ClientContext pctx;
  pctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  grpc::Status ps = p.prefill->Prefill(&pctx, preq, &prep);
  if (!ps.ok()) {
    ctx.TryCancel();
    reader->Finish();
    o.status = ps;
    return o;
  }
  o.transferred_bytes = prep.transferred_bytes();
  o.tokens.push_back(prep.first_token_id());
  v1::StartDecodeRequest sreq;
  sreq.set_ticket_id(ev.ticket().ticket_id());
  sreq.set_first_token_id(prep.first_token_id());
  v1::StartDecodeReply srep;
  grpc::ClientContext sctx;
  grpc::Status ss = d.decode->StartDecode(&sctx, sreq, &srep);
  EXPECT_TRUE(ss.ok()) << ss.error_message();
  while (reader->Read(&ev)) {
    if (ev.has_tokens())
      for (int32_t t : ev.tokens().token_ids()) o.tokens.push_back(t);
    if (ev.has_finished()) o.finished = ev.finished();
  }
  o.status = reader->Finish();
  return o;
}

// Bytes a bundle of the tiny preset carries, from its layer layout: 1 full-attention layer
// (K and V, 2 KV heads x 16 dims) and 3 Gated DeltaNet layers (conv state (K-1 = 3) x 128 channels,
// recurrent state 4 value heads x 16 x 16), all float32 on the CPU engine. Cross-checked against
// `prfaas model info`.
struct BundleLayout {
  int64_t kv_per_token = 1 * 2 * 2 * 16 * 4;
  int64_t state = 3 * (3 * 128 + 4 * 16 * 16) * 4;
  int64_t Bytes(int64_t skip, int64_t n) const { return kv_per_token * (n - skip) + state; }
};

BundleLayout TinyLayout(const std::string& dir) {
  BundleLayout l;
  ChildProcess info(testing::PrfaasBinary(), {"model", "info", "--model", "tiny", "-o", "json"},
                    dir + "/model_info.json");
  auto st = info.Wait(std::chrono::seconds(30));
  EXPECT_TRUE(st.has_value() && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << info.Log();
  auto j = nlohmann::json::parse(info.Log(), nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << info.Log();
  if (!j.is_discarded()) {
    EXPECT_EQ(j.value("kv_bytes_per_token_fp32", int64_t{0}), l.kv_per_token) << j.dump();
    EXPECT_EQ(j.value("state_bytes_per_sequence_cpu_engine", int64_t{0}), l.state) << j.dump();
  }
  return l;
}

// The exactness prompts: 20 prompts, lengths 1 .. 4000, several sharing long prefixes.
std::vector<std::vector<int32_t>> ExactnessPrompts() {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int32_t> tok(0, 255);
  std::vector<int> lengths = {1, 2, 3, 63, 64, 65, 127, 200, 511, 512, 513, 1000, 1500, 2048, 4000};
  std::vector<std::vector<int32_t>> prompts;
  for (int n : lengths) {
    std::vector<int32_t> p(n);
    for (auto& t : p) t = tok(rng);
    prompts.push_back(p);
  }
  for (int i = 0; i < 5; ++i) {  // share the 2048-token prompt's prefix, diverge after it
    auto p = prompts[13];
    p.resize(1024 + 256 * i);
    for (int k = 0; k < 100; ++k) p.push_back(tok(rng));
    prompts.push_back(p);
  }
  return prompts;
}

// What the decode worker's cache must offer for `prompt` after `seen` went through it: the
// longest prefix made of blocks of complete prefill pieces (multiples of C = 256 with the default
// flags), ending at a piece boundary, short of the whole prompt. Independent of the worker's code.
int64_t ExpectedDecodeHit(const std::vector<std::vector<int32_t>>& seen,
                          const std::vector<int32_t>& prompt) {
  const int64_t kBlock = 64, kPiece = 256;
  int64_t match = 0;
  for (const auto& s : seen) {
    int64_t lcp = 0;
    while (lcp < static_cast<int64_t>(std::min(s.size(), prompt.size())) && s[lcp] == prompt[lcp])
      ++lcp;
    const int64_t settled = static_cast<int64_t>(s.size()) / kPiece * kPiece;
    match = std::max(match, std::min(lcp, settled) / kBlock * kBlock);
  }
  return std::min<int64_t>(match, static_cast<int64_t>(prompt.size()) - 1) / kPiece * kPiece;
}

// Greedy outputs of `both` (no cache) vs prefill -> decode over `transport`, twice over the 20
// prompts: the first pass hits the caches for the shared prefixes, the second for every prompt.
// Only the missing suffix + the state may cross the wire, byte for byte.
void ExpectExactAcrossPaths(Worker& both, Worker& pre, Worker& dec, const BundleLayout& layout) {
  auto prompts = ExactnessPrompts();
  ASSERT_EQ(prompts.size(), 20u);
  const int kTokens = 12;
  std::vector<std::vector<int32_t>> reference(prompts.size());
  std::vector<std::vector<int32_t>> seen;
  int64_t decode_hits = 0, decode_hit_tokens = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      SCOPED_TRACE("pass " + std::to_string(pass) + " prompt " + std::to_string(i) + " length " +
                   std::to_string(prompts[i].size()));
      const int64_t n = static_cast<int64_t>(prompts[i].size());
      if (pass == 0) {
        Outcome a = Colocated(both, prompts[i], kTokens);
        ASSERT_TRUE(a.status.ok()) << a.status.error_message();
        EXPECT_EQ(a.tokens.size(), static_cast<size_t>(kTokens));
        EXPECT_EQ(a.finished.reason(), v1::FINISH_REASON_LENGTH);
        reference[i] = a.tokens;
      }
      const int64_t hit = ExpectedDecodeHit(seen, prompts[i]);
      const auto pm0 = pre.Metrics();
      const auto dm0 = dec.Metrics();
      Outcome b = Disaggregated(pre, dec, prompts[i], kTokens);
      ASSERT_TRUE(b.status.ok()) << b.status.error_message() << "\n" << dec.proc->LogTail(20);
      EXPECT_EQ(reference[i], b.tokens);
      EXPECT_EQ(b.finished.reason(), v1::FINISH_REASON_LENGTH);
      EXPECT_EQ(b.finished.usage().completion_tokens(), kTokens);
      EXPECT_EQ(b.finished.usage().prompt_tokens(), n);
      // The decode worker reused exactly the expected prefix and only the rest crossed the wire.
      EXPECT_EQ(b.finished.usage().cached_prompt_tokens(), hit);
      EXPECT_EQ(b.transferred_bytes, layout.Bytes(hit, n));
      const auto pm1 = pre.Metrics();
      const auto dm1 = dec.Metrics();
      auto received = [](const std::string& m) {
        return testing::MetricValue(m, "prfaas_transport_received_bytes_total").value_or(-1);
      };
      EXPECT_EQ(received(dm1) - received(dm0), static_cast<double>(layout.Bytes(hit, n)));
      if (pass == 0 && n == 4000) {
        // Chunk-wise export: a cold 4000-token prompt computes in 16 pieces; KV segments of the
        // first pieces must leave before the last piece is computed.
        auto overlapped = [](const std::string& m) {
          return testing::MetricValue(m, "prfaas_worker_kv_export_segments_total",
                                      "phase=\"during_prefill\"")
              .value_or(0);
        };
        EXPECT_GT(overlapped(pm1) - overlapped(pm0), 0.0) << pm1;
      }
      if (hit > 0) ++decode_hits;
      decode_hit_tokens += hit;
      seen.push_back(prompts[i]);
    }
  }
  // The 5 shared-prefix prompts hit in the first pass; in the second every prompt longer than
  // one 256-token piece does (12 of the 20).
  EXPECT_EQ(decode_hits, 5 + 12);
  auto dm = dec.Metrics();
  EXPECT_EQ(testing::MetricValue(dm, "prfaas_worker_prefix_cache_hit_tokens_total",
                                 "service=\"decode\",kind=\"attention\""),
            static_cast<double>(decode_hit_tokens))
      << dm;
  // The shared-prefix prompts hit the prefill worker's cache (attention and state checkpoint).
  auto pm = pre.Metrics();
  auto ckpt = testing::MetricValue(pm, "prfaas_worker_prefix_cache_hit_tokens_total",
                                   "kind=\"checkpoint\"");
  ASSERT_TRUE(ckpt.has_value()) << pm;
  EXPECT_GE(*ckpt, 5 * 1024.0) << pm;
  // Every reservation was returned.
  EXPECT_EQ(testing::MetricValue(dm, "prfaas_worker_kv_used_bytes", "pool=\"attention\""), 0.0)
      << dm;
  EXPECT_EQ(testing::MetricValue(dm, "prfaas_worker_running_requests", "service=\"decode\""), 0.0);
}

TEST_F(WorkerTest, GreedyTokensIdenticalColocatedAndOverTcpWithCacheHitsAtBothEnds) {
  // The reference runs without a prefix cache; both disaggregated workers keep one, so cache
  // hits at either end must not change a single token.
  const auto layout = TinyLayout(dir_);
  Worker both = Start("both", {"--prefix-cache-blocks", "0"});
  Worker pre = Start("prefill", {"--cluster", "remote", "--cluster-kind", "prfaas",
                                 "--prefix-cache-blocks", "2048"});
  Worker dec = Start("decode", {"--prefix-cache-blocks", "2048"});
  ASSERT_TRUE(both.proc && pre.proc && dec.proc);
  ExpectExactAcrossPaths(both, pre, dec, layout);
}

TEST_F(WorkerTest, GreedyTokensIdenticalOverUcx) {
#ifndef PRFAAS_TEST_UCX
  GTEST_SKIP() << "built without the UCX transport (PRFAAS_UCX=OFF)";
#endif
  // Loopback only: the children inherit these.
  ::setenv("UCX_NET_DEVICES", "lo", 1);
  ::setenv("UCX_TLS", "tcp,self", 1);
  const auto layout = TinyLayout(dir_);
  Worker both = Start("both", {"--prefix-cache-blocks", "0"});
  Worker pre = Start("prefill", {"--cluster", "remote", "--cluster-kind", "prfaas", "--transport",
                                 "ucx", "--prefix-cache-blocks", "2048"});
  Worker dec = Start("decode", {"--transport", "ucx", "--prefix-cache-blocks", "2048"});
  ASSERT_TRUE(both.proc && pre.proc && dec.proc);
  EXPECT_EQ(std::string(dec.ready["transport_address"]).rfind("ucx://", 0), 0u) << dec.ready.dump();
  ExpectExactAcrossPaths(both, pre, dec, layout);
}

TEST_F(WorkerTest, DecodeCachesGeneratedBlocksOnlyWhenAsked) {
  // A multi-turn follow-up (prompt + answer + new text) reuses the answer's blocks at the decode
  // worker only with --prefix-cache-generated; by default only the prompt's complete prefill
  // pieces are cached (bit-exactness), so the hit stops at 256.
  const auto layout = TinyLayout(dir_);
  Worker pre = Start("prefill", {"--prefix-cache-blocks", "0"});
  Worker strict = Start("decode");
  Worker reuse = Start("decode", {"--prefix-cache-generated", "true"});
  ASSERT_TRUE(pre.proc && strict.proc && reuse.proc);
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int32_t> tok(0, 255);
  std::vector<int32_t> prompt(300);
  for (auto& t : prompt) t = tok(rng);
  for (Worker* dec : {&strict, &reuse}) {
    SCOPED_TRACE(dec == &strict ? "default" : "--prefix-cache-generated");
    Outcome first = Disaggregated(pre, *dec, prompt, 300);
    ASSERT_TRUE(first.status.ok()) << first.status.error_message();
    ASSERT_EQ(first.tokens.size(), 300u);
    // The first turn's sequence held 300 + 299 tokens: 9 full blocks (576 tokens).
    auto follow = prompt;
    follow.insert(follow.end(), first.tokens.begin(), first.tokens.end());
    for (int k = 0; k < 50; ++k) follow.push_back(tok(rng));
    Outcome second = Disaggregated(pre, *dec, follow, 4);
    ASSERT_TRUE(second.status.ok()) << second.status.error_message();
    const int64_t hit = dec == &strict ? 256 : 512;  // piece boundary inside 256 resp. 576
    EXPECT_EQ(second.finished.usage().cached_prompt_tokens(), hit);
    EXPECT_EQ(second.transferred_bytes, layout.Bytes(hit, static_cast<int64_t>(follow.size())));
  }
}

TEST_F(WorkerTest, PrefixCacheHitRatesForASharedPrefixSequence) {
  Worker w = Start("both", {"--checkpoint-interval", "128", "--prefix-cache-blocks", "64"});
  ASSERT_TRUE(w.proc);
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int32_t> tok(0, 255);
  std::vector<int32_t> system(600);
  for (auto& t : system) t = tok(rng);
  // Four requests share a 600-token prefix: the first fills the cache, the next three hit it up
  // to the last checkpoint inside the shared part (512 tokens: 600 rounded down to C = 128).
  std::vector<std::vector<int32_t>> tokens;
  for (int i = 0; i < 4; ++i) {
    auto p = system;
    for (int k = 0; k < 50; ++k) p.push_back(tok(rng));
    Outcome o = Colocated(w, p, 4);
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  }
  auto m = w.Metrics();
  // Local prefill counts under service="prefill"; service="decode" is for incoming bundles.
  auto hit = testing::MetricValue(m, "prfaas_worker_prefix_cache_hit_tokens_total",
                                  "service=\"prefill\",kind=\"checkpoint\"");
  auto attn = testing::MetricValue(m, "prfaas_worker_prefix_cache_hit_tokens_total",
                                   "service=\"prefill\",kind=\"attention\"");
  auto lookups = testing::MetricValue(m, "prfaas_worker_prefix_cache_lookup_tokens_total",
                                      "service=\"prefill\"");
  auto hits =
      testing::MetricValue(m, "prfaas_worker_prefix_cache_hits_total", "service=\"prefill\"");
  auto misses =
      testing::MetricValue(m, "prfaas_worker_prefix_cache_misses_total", "service=\"prefill\"");
  EXPECT_EQ(testing::MetricValue(m, "prfaas_worker_prefix_cache_lookup_tokens_total",
                                 "service=\"decode\""),
            0.0);
  ASSERT_TRUE(hit && attn && lookups && hits && misses) << m;
  EXPECT_EQ(*hit, 3 * 512.0) << m;
  EXPECT_EQ(*attn, 3 * 576.0) << m;  // 9 full 64-token blocks of the shared 600
  EXPECT_EQ(*lookups, 4 * 650.0);
  EXPECT_EQ(*hits, 3.0);
  EXPECT_EQ(*misses, 1.0);
  auto entries =
      testing::MetricValue(m, "prfaas_worker_prefix_cache_entries", "kind=\"checkpoint\"");
  ASSERT_TRUE(entries.has_value());
  EXPECT_GE(*entries, 4.0);  // 128, 256, 384, 512 of the shared prefix (plus the tails)
}

TEST_F(WorkerTest, AdmissionControlRejectsWhenFull) {
  Worker dec = Start("both", {"--kv-blocks", "4", "--block-size", "64"});
  ASSERT_TRUE(dec.proc);
  std::vector<int32_t> prompt(200, 7);
  Outcome o = Colocated(dec, prompt, 100);  // needs 5 blocks
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << o.status.error_message();
  EXPECT_NE(o.status.error_message().find("blocks"), std::string::npos);
  Outcome ok = Colocated(dec, std::vector<int32_t>(100, 7), 20);  // 2 blocks fit
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

TEST_F(WorkerTest, PrefillQueuesWhenFullInsteadOfFailing) {
  // Room for one 1000-token prompt at a time: the second prefill waits (FCFS), then succeeds.
  Worker pre = Start("prefill", {"--kv-blocks", "20", "--prefix-cache-blocks", "0"});
  Worker dec = Start("decode");
  ASSERT_TRUE(pre.proc && dec.proc);
  std::vector<int32_t> a(1000, 11), b(1000, 12);
  Outcome oa, ob;
  std::thread ta([&] { oa = Disaggregated(pre, dec, a, 4); });
  std::thread tb([&] { ob = Disaggregated(pre, dec, b, 4); });
  ta.join();
  tb.join();
  EXPECT_TRUE(oa.status.ok()) << oa.status.error_message();
  EXPECT_TRUE(ob.status.ok()) << ob.status.error_message();
  auto m = pre.Metrics();
  auto waited =
      testing::MetricValue(m, "prfaas_worker_queue_wait_seconds_count", "service=\"prefill\"");
  ASSERT_TRUE(waited.has_value()) << m;
  EXPECT_EQ(*waited, 2.0);
}

TEST_F(WorkerTest, BadRequestsAreRejectedClearly) {
  Worker w = Start("both");
  ASSERT_TRUE(w.proc);
  EXPECT_EQ(Colocated(w, {}, 4).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Colocated(w, {1, 2}, 0).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  Outcome o = Colocated(w, {1, 999999}, 4);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(o.status.error_message().find("999999"), std::string::npos);
  v1::StartDecodeRequest s;
  s.set_ticket_id(424242);
  v1::StartDecodeReply r;
  grpc::ClientContext ctx;
  EXPECT_EQ(w.decode->StartDecode(&ctx, s, &r).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(WorkerTest, MissingBundleTimesOutAndFreesCapacity) {
  Worker dec = Start("decode", {"--transfer-timeout-seconds", "1.5"});
  ASSERT_TRUE(dec.proc);
  grpc::ClientContext ctx;
  auto reader = dec.decode->Decode(&ctx, MakeRequest(std::vector<int32_t>(300, 3), 8, false));
  v1::DecodeEvent ev;
  ASSERT_TRUE(reader->Read(&ev));
  ASSERT_TRUE(ev.has_ticket());
  auto t0 = std::chrono::steady_clock::now();
  while (reader->Read(&ev)) {
  }
  grpc::Status st = reader->Finish();
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  EXPECT_LT(waited, std::chrono::seconds(10));
  auto m = dec.Metrics();
  EXPECT_EQ(testing::MetricValue(m, "prfaas_worker_kv_used_bytes", "pool=\"attention\""), 0.0) << m;
}

TEST_F(WorkerTest, KilledPrefillWorkerFailsTheRequestWithoutLeaks) {
  Worker pre = Start("prefill");
  Worker dec = Start("decode", {"--transfer-timeout-seconds", "3"});
  ASSERT_TRUE(pre.proc && dec.proc);
  grpc::ClientContext ctx;
  std::vector<int32_t> prompt(4000, 5);
  auto req = MakeRequest(prompt, 8, false);
  auto reader = dec.decode->Decode(&ctx, req);
  v1::DecodeEvent ev;
  ASSERT_TRUE(reader->Read(&ev));
  v1::PrefillRequest preq;
  *preq.mutable_prompt_token_ids() = req.prompt_token_ids();
  *preq.mutable_sampling() = req.sampling();
  *preq.mutable_ticket() = ev.ticket();
  std::thread prefill([&] {
    v1::PrefillReply rep;
    grpc::ClientContext pctx;
    pctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status s = pre.prefill->Prefill(&pctx, preq, &rep);
    EXPECT_FALSE(s.ok());  // the process dies under it
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  pre.proc->Signal(SIGKILL);
  prefill.join();
  while (reader->Read(&ev)) {
  }
  grpc::Status st = reader->Finish();
  EXPECT_FALSE(st.ok());
  auto m = dec.Metrics();
  EXPECT_EQ(testing::MetricValue(m, "prfaas_worker_kv_used_bytes", "pool=\"attention\""), 0.0) << m;
  EXPECT_EQ(testing::MetricValue(m, "prfaas_worker_kv_used_bytes", "pool=\"state\""), 0.0) << m;
}

TEST_F(WorkerTest, KilledDecodeWorkerEndsTheStreamWithAnError) {
  Worker dec = Start("both", {"--kv-blocks", "400"});
  ASSERT_TRUE(dec.proc);
  grpc::ClientContext ctx;
  auto reader = dec.decode->Decode(&ctx, MakeRequest({1, 2, 3}, 20000, true));
  v1::DecodeEvent ev;
  int tokens = 0;
  while (tokens < 5 && reader->Read(&ev)) tokens += ev.tokens().token_ids_size();
  ASSERT_GE(tokens, 5);
  dec.proc->Signal(SIGKILL);
  while (reader->Read(&ev)) {
  }
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST_F(WorkerTest, RoleSwitchWithoutRestart) {
  Worker w = Start("prefill");
  ASSERT_TRUE(w.proc);
  Outcome refused = Colocated(w, {1, 2, 3}, 2);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(refused.status.error_message().find("role is prefill"), std::string::npos);
  v1::SetRoleRequest req;
  req.set_role(v1::WORKER_ROLE_DECODE);
  v1::SetRoleReply rep;
  grpc::ClientContext ctx;
  ASSERT_TRUE(w.admin->SetRole(&ctx, req, &rep).ok());
  EXPECT_EQ(rep.role(), v1::WORKER_ROLE_DECODE);
  EXPECT_TRUE(Colocated(w, {1, 2, 3}, 2).status.ok());
  EXPECT_EQ(testing::MetricValue(w.Metrics(), "prfaas_worker_info", "role=\"decode\""), 1.0);
  v1::WorkerStatusReply st;
  grpc::ClientContext sctx;
  ASSERT_TRUE(w.admin->Status(&sctx, v1::WorkerStatusRequest(), &st).ok());
  EXPECT_EQ(st.role(), v1::WORKER_ROLE_DECODE);
  EXPECT_FALSE(st.draining());
}

TEST_F(WorkerTest, SigtermDrainsAndExitsZero) {
  Worker w = Start("both");
  ASSERT_TRUE(w.proc);
  // A request in flight when SIGTERM arrives still completes.
  std::thread client([&] {
    Outcome o = Colocated(w, std::vector<int32_t>(64, 9), 64);
    EXPECT_TRUE(o.status.ok()) << o.status.error_message();
    EXPECT_EQ(o.tokens.size(), 64u);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  w.proc->Signal(SIGTERM);
  client.join();
  auto status = w.proc->Wait(std::chrono::seconds(30));
  ASSERT_TRUE(status.has_value()) << "worker did not exit";
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0) << w.proc->Log();
}

}  // namespace
}  // namespace prfaas
