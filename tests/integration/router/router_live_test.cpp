// The live router end to end: real HTTP requests against RouterApp, real gRPC test workers.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <grpcpp/grpcpp.h>

#include "common/block_hash.h"
#include "prfaas/v1/router.grpc.pb.h"
#include "router/ctl/ctl.h"
#include "router/server/router_app.h"
#include "router/tokenizer/byte_tokenizer.h"
#include "router/tokenizer/chat_template.h"
#include "tests/integration/router/http_client.h"
#include "tests/integration/router/test_worker.h"

namespace prfaas::router {
namespace {

using nlohmann::json;
using testing::ExpectedText;
using testing::HttpCall;
using testing::TestWorker;

std::vector<int32_t> Bytes(const std::string& s) {
  return ByteTokenizer().Encode(s, SpecialTokens::kRecognize);
}

std::string Spec(const std::string& id, const std::string& role, const TestWorker& w,
                 const std::string& cluster = "pd-a", const std::string& kind = "pd") {
  return "id=" + id + ",cluster=" + cluster + ",kind=" + kind + ",role=" + role +
         ",grpc=" + w.endpoint();
}

template <typename F>
bool Eventually(F f, int ms = 3000) {
  for (int i = 0; i < ms / 10; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return f();
}

// Concatenates the text of SSE chunks; checks the stream ends with [DONE].
std::string SseText(const std::string& body, bool chat, std::string* finish = nullptr) {
  std::string text;
  std::istringstream in(body);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.rfind("data: ", 0) != 0) continue;
    last = line.substr(6);
    if (last == "[DONE]") break;
    json j = json::parse(last);
    if (j["choices"].empty()) continue;
    const json& c = j["choices"][0];
    if (chat) {
      if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
    } else {
      text += c["text"].get<std::string>();
    }
    if (finish && !c["finish_reason"].is_null()) *finish = c["finish_reason"];
  }
  EXPECT_EQ(last, "[DONE]");
  return text;
}

class RouterLive : public ::testing::Test {
 protected:
  void StartRouter(std::vector<std::string> workers) {
    RouterConfig cfg;
    cfg.http.bind_address = "127.0.0.1";
    cfg.http.port = 0;
    cfg.http.threads = 2;
    cfg.http.model_name = "test-model";
    cfg.http.limits.max_prompt_tokens = 4096;
    cfg.http.limits.max_tokens = 512;
    cfg.http.max_body_bytes = 64 * 1024;
    cfg.http.api_token = api_token_;
    cfg.grpc_bind_address = "127.0.0.1";
    cfg.admin_port = 0;
    cfg.registry_port = 0;
    cfg.admin_token = admin_token_;
    cfg.static_workers = std::move(workers);
    cfg.directory.block_size = 16;
    cfg.directory.policy = "least-loaded";
    cfg.directory.heartbeat_timeout = hb_timeout_;
    cfg.orchestrator.ticket_timeout = std::chrono::milliseconds(2000);
    cfg.orchestrator.prefill_timeout = std::chrono::milliseconds(2000);
    cfg.orchestrator.token_idle_timeout = std::chrono::milliseconds(2000);
    app_ = std::make_unique<RouterApp>(cfg, &registry_);
    ASSERT_TRUE(app_->Start().ok());
    port_ = app_->http_port();
  }
  void TearDown() override {
    if (app_) app_->Stop();
  }
  double Metric(const std::string& series) {
    const std::string text = registry_.Render();
    auto pos = text.find(series + " ");
    if (pos == std::string::npos) return 0;
    return std::stod(text.substr(pos + series.size() + 1));
  }
  int Ctl(std::vector<std::string> args, std::string* out, std::string* err = nullptr) {
    std::vector<std::string> full = {"--router", "127.0.0.1:" + std::to_string(app_->admin_port())};
    if (!admin_token_.empty()) full.insert(full.end(), {"--token", admin_token_});
    full.insert(full.end(), args.begin(), args.end());
    std::ostringstream o, e;
    int rc = RunCtl(full, o, e);
    *out = o.str();
    if (err) *err = e.str();
    return rc;
  }

  metrics::Registry registry_;
  std::unique_ptr<RouterApp> app_;
  std::string api_token_, admin_token_;
  std::chrono::milliseconds hb_timeout_{5000};
  int port_ = 0;
};

TEST_F(RouterLive, CompletionNonStreamingReturnsWorkerTokens) {
  TestWorker p, d;
  StartRouter({Spec("p0", "prefill", p), Spec("d0", "decode", d)});
  auto r = HttpCall(port_, "POST", "/v1/completions",
                    R"({"model":"test-model","prompt":"hello world","max_tokens":7})",
                    "x-request-id: my-req-1\r\n");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.headers.find("x-request-id: my-req-1"), std::string::npos);
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"], "cmpl-my-req-1");
  EXPECT_EQ(j["choices"][0]["text"], ExpectedText(Bytes("hello world"), 7));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 11);
  EXPECT_EQ(j["usage"]["completion_tokens"], 7);
  EXPECT_EQ(p.prefill_calls.load(), 1);
  EXPECT_FALSE(d.last_decode().local_prefill());
  EXPECT_EQ(d.last_decode().request_id(), "my-req-1");
  EXPECT_EQ(Metric(R"(prfaas_router_requests_total{path="pd",status="ok"})"), 1);
}

TEST_F(RouterLive, CompletionStreamingSendsSseChunksAndDone) {
  TestWorker p, d;
  StartRouter({Spec("p0", "prefill", p), Spec("d0", "decode", d)});
  auto r = HttpCall(port_, "POST", "/v1/completions",
                    R"({"prompt":"stream me","max_tokens":12,"stream":true,
                        "stream_options":{"include_usage":true}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.headers.find("text/event-stream"), std::string::npos);
  std::string finish;
  EXPECT_EQ(SseText(r.body, false, &finish), ExpectedText(Bytes("stream me"), 12));
  EXPECT_EQ(finish, "length");
  EXPECT_NE(r.body.find(R"("completion_tokens":12)"), std::string::npos);
}

TEST_F(RouterLive, ChatRendersChatMLTemplate) {
  TestWorker p, d;
  StartRouter({Spec("p0", "prefill", p), Spec("d0", "decode", d)});
  const std::string body =
      R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
          "max_tokens":5,"stream":true})";
  auto r = HttpCall(port_, "POST", "/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<ChatMessage> msgs = {{"system", "Be brief."}, {"user", "Hi"}};
  auto rendered = RenderChatML(msgs);
  ASSERT_TRUE(rendered.ok());
  const auto prompt = ByteTokenizer().Encode(*rendered, SpecialTokens::kRecognize);
  auto got = d.last_decode().prompt_token_ids();
  EXPECT_EQ(std::vector<int32_t>(got.begin(), got.end()), prompt);
  EXPECT_EQ(SseText(r.body, true), ExpectedText(prompt, 5));
  EXPECT_NE(r.body.find(R"("role":"assistant")"), std::string::npos);
  EXPECT_NE(r.body.find("chat.completion.chunk"), std::string::npos);
  // Stop tokens of the ChatML vocabulary are passed to the workers.
  EXPECT_GE(d.last_decode().sampling().stop_token_ids_size(), 1);

  auto full = HttpCall(port_, "POST", "/v1/chat/completions",
                       R"({"messages":[{"role":"user","content":"Hi"}],"max_tokens":3})");
  ASSERT_EQ(full.status, 200) << full.body;
  json j = json::parse(full.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"].get<std::string>().size(), 3u);
}

TEST_F(RouterLive, ErrorsAreOpenAiShaped) {
  TestWorker p, d;
  api_token_ = "sekret";
  StartRouter({Spec("p0", "prefill", p), Spec("d0", "decode", d)});
  const std::string auth = "Authorization: Bearer sekret\r\n";
  auto expect_error = [&](const testing::HttpReply& r, int status, const std::string& type,
                          const std::string& param) {
    EXPECT_EQ(r.status, status) << r.body;
    json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j["error"]["type"], type) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    if (param.empty()) {
      EXPECT_TRUE(j["error"]["param"].is_null());
    } else {
      EXPECT_EQ(j["error"]["param"], param);
    }
  };
  expect_error(HttpCall(port_, "POST", "/v1/completions", R"({"prompt":"x"})"), 401,
               "authentication_error", "");
  expect_error(HttpCall(port_, "POST", "/v1/completions", R"({"prompt":"x"})",
                        "Authorization: Bearer wrong\r\n"),
               401, "authentication_error", "");
  expect_error(HttpCall(port_, "POST", "/v1/completions", "{not json", auth), 400,
               "invalid_request_error", "");
  expect_error(HttpCall(port_, "POST", "/v1/completions", R"({"max_tokens":3})", auth), 400,
               "invalid_request_error", "prompt");
  expect_error(HttpCall(port_, "POST", "/v1/chat/completions", R"({"prompt":"x"})", auth), 400,
               "invalid_request_error", "messages");
  expect_error(
      HttpCall(port_, "POST", "/v1/completions", R"({"prompt":"x","max_tokens":100000})", auth),
      400, "invalid_request_error", "max_tokens");
  auto too_long = HttpCall(port_, "POST", "/v1/completions",
                           json{{"prompt", std::string(5000, 'x')}}.dump(), auth);
  expect_error(too_long, 400, "invalid_request_error", "prompt");
  EXPECT_NE(too_long.body.find("context_length_exceeded"), std::string::npos);
  expect_error(HttpCall(port_, "POST", "/v1/completions",
                        json{{"prompt", std::string(70 * 1024, 'x')}}.dump(), auth),
               413, "invalid_request_error", "");
  expect_error(
      HttpCall(port_, "POST", "/v1/completions", R"({"prompt":"x","model":"gpt-9"})", auth), 404,
      "invalid_request_error", "model");
  expect_error(HttpCall(port_, "GET", "/v1/nope", "", auth), 404, "invalid_request_error", "");
  expect_error(HttpCall(port_, "GET", "/v1/completions", "", auth), 405, "invalid_request_error",
               "");
  EXPECT_EQ(d.decode_calls.load(), 0);  // none of these reached a worker

  auto models = HttpCall(port_, "GET", "/v1/models", "", auth);
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(json::parse(models.body)["data"][0]["id"], "test-model");
  EXPECT_EQ(HttpCall(port_, "GET", "/health").status, 200);
  auto m = HttpCall(port_, "GET", "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("prfaas_router_requests_total"), std::string::npos);
}

TEST_F(RouterLive, ClientDisconnectCancelsDecodeStream) {
  TestWorker p, d;
  d.knobs().token_delay_ms = 20;
  StartRouter({Spec("p0", "prefill", p), Spec("d0", "decode", d)});
  int fd = testing::HttpSend(port_, "POST", "/v1/completions",
                             R"({"prompt":"long one","max_tokens":400,"stream":true})");
  char buf[512];
  ASSERT_GT(::recv(fd, buf, sizeof(buf), 0), 0);  // the stream started
  ::close(fd);
  EXPECT_TRUE(Eventually([&] { return d.cancelled.load() == 1; }))
      << "decode worker never saw the cancellation";
  EXPECT_TRUE(Eventually([&] {
    return Metric(R"(prfaas_router_requests_total{path="pd",status="cancelled"})") == 1;
  }));
}

TEST_F(RouterLive, PrefillFailureRetriesElsewhereThenFallsBackToLocal) {
  TestWorker bad, good, d;
  bad.knobs().fail_prefill = true;
  StartRouter(
      {Spec("p-bad", "prefill", bad), Spec("p-good", "prefill", good), Spec("d0", "decode", d)});
  // least-loaded picks p-bad (lower index) first; the retry goes to p-good.
  auto r = HttpCall(port_, "POST", "/v1/completions", R"({"prompt":"abc","max_tokens":4})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["choices"][0]["text"], ExpectedText(Bytes("abc"), 4));
  EXPECT_EQ(bad.prefill_calls.load(), 1);
  EXPECT_EQ(good.prefill_calls.load(), 1);
  EXPECT_EQ(Metric(R"(prfaas_router_reroutes_total{reason="prefill_failed"})"), 1);

  // Now every prefill worker fails: after the retry the decode worker prefills locally.
  good.knobs().fail_prefill = true;
  app_->directory().Refresh(Now() + std::chrono::hours(1));  // end p-bad's cooldown
  auto r2 = HttpCall(port_, "POST", "/v1/completions", R"({"prompt":"xyz","max_tokens":4})");
  ASSERT_EQ(r2.status, 200) << r2.body;
  EXPECT_EQ(json::parse(r2.body)["choices"][0]["text"], ExpectedText(Bytes("xyz"), 4));
  EXPECT_TRUE(d.last_decode().local_prefill());
}

TEST_F(RouterLive, DecodeFailureResumesOnAnotherWorkerInTheSameStream) {
  TestWorker p, d1, d2;
  d1.knobs().die_after_tokens = 2;
  StartRouter({Spec("p0", "prefill", p), Spec("d1", "decode", d1), Spec("d2", "decode", d2)});
  auto r = HttpCall(port_, "POST", "/v1/completions",
                    R"({"prompt":"resume me","max_tokens":10,"stream":true})");
  ASSERT_EQ(r.status, 200) << r.body;
  std::string finish;
  EXPECT_EQ(SseText(r.body, false, &finish), ExpectedText(Bytes("resume me"), 10));
  EXPECT_EQ(finish, "length");
  ASSERT_EQ(d1.decode_calls.load(), 1);
  ASSERT_EQ(d2.decode_calls.load(), 1);
  const auto resumed = d2.last_decode();
  EXPECT_TRUE(resumed.local_prefill());
  EXPECT_EQ(resumed.resume_token_ids_size(), 3);  // first token from prefill + 2 from d1
  EXPECT_EQ(resumed.sampling().max_tokens(), 7);
  EXPECT_EQ(Metric(R"(prfaas_router_reroutes_total{reason="decode_failed"})"), 1);
}

TEST_F(RouterLive, NoWorkersGives503) {
  StartRouter({});
  auto r = HttpCall(port_, "POST", "/v1/completions", R"({"prompt":"abc","max_tokens":4})");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "server_error");
}

TEST_F(RouterLive, PrfaasctlAdminCommands) {
  TestWorker p, d;
  admin_token_ = "adm";
  StartRouter({Spec("p0", "prefill", p), Spec("d0", "decode", d)});
  std::string out, err;
  ASSERT_EQ(Ctl({"status"}, &out, &err), 0) << err;
  EXPECT_NE(out.find("least-loaded"), std::string::npos) << out;

  ASSERT_EQ(Ctl({"workers"}, &out), 0);
  EXPECT_NE(out.find("ID"), std::string::npos) << out;
  EXPECT_NE(out.find("p0"), std::string::npos);
  EXPECT_NE(out.find("d0"), std::string::npos);

  ASSERT_EQ(Ctl({"drain", "p0"}, &out), 0);
  EXPECT_EQ(p.drains.load(), 1);
  ASSERT_EQ(Ctl({"-o", "json", "workers"}, &out), 0);
  json w = json::parse(out)["workers"];
  EXPECT_EQ(w[0]["id"], "p0");
  EXPECT_EQ(w[0]["state"], "draining");
  ASSERT_EQ(Ctl({"undrain", "p0"}, &out), 0);

  ASSERT_EQ(Ctl({"set-role", "d0", "both"}, &out), 0) << out;
  EXPECT_EQ(d.role_sets.load(), 1);
  EXPECT_EQ(d.last_role.load(), 3);  // WORKER_ROLE_BOTH

  EXPECT_EQ(Ctl({"threshold", "get"}, &out, &err), 1);  // least-loaded has no threshold
  ASSERT_EQ(Ctl({"policy", "set", "prfaas"}, &out, &err), 0) << err;
  ASSERT_EQ(Ctl({"-o", "json", "threshold", "set", "1234"}, &out, &err), 0) << err;
  EXPECT_EQ(json::parse(out)["threshold_tokens"], 1234);
  EXPECT_EQ(json::parse(out)["mode"], "manual");
  ASSERT_EQ(Ctl({"-o", "json", "threshold", "auto"}, &out, &err), 0) << err;
  EXPECT_EQ(json::parse(out)["mode"], "auto");

  ASSERT_EQ(Ctl({"-o", "json", "explain", "what would you do with this prompt?"}, &out, &err), 0)
      << err;
  json ex = json::parse(out);
  EXPECT_EQ(ex["ok"], true);
  EXPECT_EQ(ex["decode_worker"], "d0");
  EXPECT_EQ(ex["prompt_tokens"], 35);
  EXPECT_TRUE(ex["explanation"].is_string());
  ASSERT_EQ(Ctl({"explain", "hi"}, &out), 0);
  EXPECT_NE(out.find("path:"), std::string::npos) << out;

  ASSERT_EQ(Ctl({"cache", "stats"}, &out), 0);
  EXPECT_NE(out.find("attention_keys"), std::string::npos);
  ASSERT_EQ(Ctl({"clusters"}, &out), 0);
  EXPECT_NE(out.find("pd-a"), std::string::npos);

  EXPECT_EQ(Ctl({"drain", "nobody"}, &out, &err), 1);
  EXPECT_NE(err.find("nobody"), std::string::npos);
  EXPECT_EQ(Ctl({"frobnicate"}, &out, &err), 2);
  EXPECT_EQ(Ctl({"threshold", "set", "lots"}, &out, &err), 1);

  std::ostringstream o, e;
  EXPECT_EQ(RunCtl({"--router", "127.0.0.1:" + std::to_string(app_->admin_port()), "--token",
                    "wrong", "status"},
                   o, e),
            1);
  EXPECT_NE(e.str().find("admin token"), std::string::npos) << e.str();
  EXPECT_EQ(RunCtl({"--router", "127.0.0.1:1", "--timeout", "1", "status"}, o, e), 3);
  EXPECT_NE(e.str().find("cannot reach"), std::string::npos) << e.str();
}

TEST_F(RouterLive, RegistryRegistrationLoadAndCacheEventsThenHeartbeatExpiry) {
  TestWorker w;
  hb_timeout_ = std::chrono::milliseconds(300);
  StartRouter({});
  auto stub = v1::Registry::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(app_->registry_port()), grpc::InsecureChannelCredentials()));
  v1::RegisterRequest reg;
  reg.set_worker_id("pd-a/w0");
  reg.set_cluster("pd-a");
  reg.set_cluster_kind(v1::CLUSTER_KIND_PD);
  reg.set_role(v1::WORKER_ROLE_BOTH);
  reg.set_grpc_endpoint(w.endpoint());
  reg.set_block_size(16);
  v1::RegisterReply reg_reply;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Register(&ctx, reg, &reg_reply).ok());
  }
  EXPECT_GT(reg_reply.heartbeat_interval_seconds(), 0);
  {
    v1::RegisterRequest bad = reg;
    bad.set_block_size(64);  // the router hashes 16-token blocks
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Register(&ctx, bad, &reg_reply).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }

  const std::string prompt_text(40, 'q');
  const auto hashes = ChainedBlockHashes(Bytes(prompt_text), 16);
  ASSERT_EQ(hashes.size(), 2u);
  {
    grpc::ClientContext ctx;
    v1::PublishAck ack;
    auto writer = stub->Publish(&ctx, &ack);
    v1::WorkerEvent load;
    load.set_worker_id("pd-a/w0");
    load.mutable_load()->set_queue_depth(2);
    ASSERT_TRUE(writer->Write(load));
    for (auto kind : {v1::CacheEvent::KIND_ATTN_STORED, v1::CacheEvent::KIND_CHECKPOINT_STORED}) {
      v1::WorkerEvent ev;
      ev.set_worker_id("pd-a/w0");
      ev.mutable_cache()->set_kind(kind);
      for (auto h : hashes) ev.mutable_cache()->add_block_hashes(h);
      ASSERT_TRUE(writer->Write(ev));
    }
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
  }
  std::string out, err;
  ASSERT_EQ(Ctl({"-o", "json", "cache", "stats"}, &out, &err), 0) << err;
  EXPECT_EQ(json::parse(out)["attention_keys"], 2);
  EXPECT_EQ(json::parse(out)["checkpoint_keys"], 2);
  ASSERT_EQ(Ctl({"-o", "json", "workers"}, &out, &err), 0) << err;
  EXPECT_EQ(json::parse(out)["workers"][0]["queue"], 2);
  EXPECT_EQ(json::parse(out)["workers"][0]["state"], "up");

  // A colocated worker serves the request with local prefill.
  auto r = HttpCall(port_, "POST", "/v1/completions",
                    json{{"prompt", prompt_text}, {"max_tokens", 3}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(w.last_decode().local_prefill());

  // No more heartbeats: the worker goes down and requests get 503.
  EXPECT_TRUE(Eventually([&] {
    Ctl({"-o", "json", "workers"}, &out);
    return json::parse(out)["workers"][0]["state"] == "down";
  }));
  EXPECT_EQ(HttpCall(port_, "POST", "/v1/completions", R"({"prompt":"x"})").status, 503);
}

}  // namespace
}  // namespace prfaas::router
