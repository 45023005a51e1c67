// The load generator against real servers on 127.0.0.1 started by the test: a Beast-socket
// HTTP server speaking the OpenAI SSE format deterministically, and a gRPC DecodeService for
// `bench profile`.
//
// Fake HTTP server behaviour, keyed by the request's max_tokens:
//   500 / 429  -> that HTTP status with a JSON error body
//   999        -> accept, send headers, then never finish (client timeout)
//   998        -> a 200 stream that ends without [DONE] (connection closed)
//   otherwise  -> first token after 50 us per prompt byte, then max_tokens tokens 2 ms apart;
//                 odd max_tokens use chunked encoding and a usage chunk, even ones a
//                 close-delimited body; every SSE event is written in two pieces.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange
#include <vector>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "bench/loadgen/client.h"
#include "bench/loadgen/profile.h"
#include "bench/loadgen/stats.h"
#include "prfaas/v1/worker.grpc.pb.h"
#include "sim/cost_model.h"

namespace prfaas::bench {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

class FakeOpenAiServer {
 public:
  FakeOpenAiServer() : acceptor_(io_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~FakeOpenAiServer() {
    stop_ = true;
    // A blocking accept() is not woken by close() from another thread: connect to wake it.
    {
      beast::error_code ec;
      tcp::socket wake(io_);
      wake.connect(acceptor_.local_endpoint(), ec);
      accept_thread_.join();
      acceptor_.close(ec);
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& t : conns_) t.join();
  }
  int port() const { return port_; }
  int max_concurrent() const { return max_concurrent_.load(); }
  int requests() const { return requests_.load(); }

 private:
  void AcceptLoop() {
    while (!stop_) {
      beast::error_code ec;
      tcp::socket s(io_);
      acceptor_.accept(s, ec);
      if (ec || stop_) return;
      s.set_option(tcp::no_delay(true), ec);
      std::lock_guard<std::mutex> lock(mu_);
      conns_.emplace_back([this, s = std::move(s)]() mutable { Serve(std::move(s)); });
    }
  }

  // A request counts as concurrent from when it was read until just before its last write, so
  // the count never exceeds what the client has in flight.
  void Serve(tcp::socket s) {
    beast::error_code ec;
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    http::read(s, buf, req, ec);
    if (!ec) {
      const int now = ++concurrent_;
      int prev = max_concurrent_.load();
      while (now > prev && !max_concurrent_.compare_exchange_weak(prev, now)) {
      }
      ++requests_;
      Respond(s, req);
    }
    s.shutdown(tcp::socket::shutdown_both, ec);
    s.close(ec);
  }
  void Leave() { --concurrent_; }

  static void Write(tcp::socket& s, const std::string& data) {
    beast::error_code ec;
    net::write(s, net::buffer(data), ec);
  }

  void Sleep(double seconds) {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }

  void Respond(tcp::socket& s, const http::request<http::string_body>& req) {
    auto j = nlohmann::json::parse(req.body(), nullptr, false);
    const int max_tokens = j.value("max_tokens", 1);
    const bool chat = j.contains("messages");
    const std::string prompt = chat ? j["messages"][0].value("content", "") : j.value("prompt", "");
    if (max_tokens == 500 || max_tokens == 429) {
      const std::string body = R"({"error":{"message":"fake failure","type":"x"}})";
      Leave();
      Write(s, fmt::format("HTTP/1.1 {} Err\r\nContent-Type: application/json\r\n"
                           "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                           max_tokens, body.size(), body));
      return;
    }
    const bool chunked = max_tokens % 2 == 1;
    Write(s, std::string("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n") +
                 (chunked ? "Transfer-Encoding: chunked\r\n" : "") + "Connection: close\r\n\r\n");
    auto send = [&](const std::string& event) {
      // Two writes per event, with a pause, so the client sees events split across reads.
      const size_t half = event.size() / 2;
      for (const std::string& piece : {event.substr(0, half), event.substr(half)}) {
        Write(s, chunked ? fmt::format("{:x}\r\n{}\r\n", piece.size(), piece) : piece);
        Sleep(0.0002);
      }
    };
    if (max_tokens == 999) {
      while (!stop_) Sleep(0.01);
      Leave();
      return;
    }
    Sleep(50e-6 * static_cast<double>(prompt.size()));
    const int n = max_tokens == 998 ? 3 : max_tokens;
    for (int i = 0; i < n; ++i) {
      nlohmann::json c;
      const bool last = i + 1 == n && max_tokens != 998;
      if (chat) {
        c = {{"choices", {{{"index", 0}, {"delta", {{"content", "t"}}}}}}};
      } else {
        c = {{"choices", {{{"index", 0}, {"text", "t"}}}}};
      }
      c["choices"][0]["finish_reason"] = last ? nlohmann::json("length") : nlohmann::json();
      send("data: " + c.dump() + "\n\n");
      if (i + 1 < n) Sleep(0.002);
    }
    if (max_tokens == 998) {
      Leave();
      return;
    }
    if (chunked) {
      send(R"(data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":)" +
           std::to_string(n) + "}}\n\n");
    }
    Leave();
    send("data: [DONE]\n\n");
    if (chunked) Write(s, "0\r\n\r\n");
  }

  net::io_context io_;
  tcp::acceptor acceptor_;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
  std::atomic<int> concurrent_{0}, max_concurrent_{0}, requests_{0};
};

PlannedRequest Req(int64_t i, double at, size_t prompt_bytes, int max_tokens) {
  return PlannedRequest{.index = i,
                        .arrival_s = at,
                        .prompt = std::string(prompt_bytes, 'a'),
                        .prompt_tokens = static_cast<int64_t>(prompt_bytes),
                        .max_tokens = max_tokens};
}

RunOptions Opts(int port) {
  RunOptions o;
  o.endpoint = {.host = "127.0.0.1", .port = std::to_string(port), .base_path = ""};
  o.concurrency = 64;
  o.timeout_s = 5;
  return o;
}

TEST(LoadgenIntegrationTest, CountsErrorsTimeoutsAndTtftOrdering) {
  FakeOpenAiServer server;
  std::vector<PlannedRequest> reqs;
  std::vector<int> kinds = {500, 500, 500, 429, 429, 999, 999, 998};
  int64_t i = 0;
  for (int k : kinds) {
    reqs.push_back(Req(i, 0.001 * static_cast<double>(i), 10, k));
    ++i;
  }
  // Short prompts (first token after ~0.5 ms) and long ones (~200 ms).
  for (int r = 0; r < 10; ++r) {
    reqs.push_back(Req(i++, 0.002 * r, 10, 5 + r));
    reqs.push_back(Req(i++, 0.002 * r, 4000, 6 + r));
  }
  std::sort(reqs.begin(), reqs.end(),
            [](const auto& a, const auto& b) { return a.arrival_s < b.arrival_s; });
  RunOptions o = Opts(server.port());
  o.timeout_s = 1.0;
  LoadRunner runner(o);
  auto t0 = std::chrono::steady_clock::now();
  auto res = runner.Run(reqs);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->size(), reqs.size());
  EXPECT_LT(wall, 4.0);  // the hung requests end at their 1 s timeout

  std::vector<double> short_ttft, long_ttft;
  for (size_t k = 0; k < reqs.size(); ++k) {
    const RequestResult& r = (*res)[k];
    const int mt = reqs[k].max_tokens;
    EXPECT_TRUE(r.sent);
    if (mt == 500 || mt == 429) {
      EXPECT_FALSE(r.ok);
      EXPECT_EQ(r.error_kind, fmt::format("http_{}", mt));
      EXPECT_NE(r.error_message.find("fake failure"), std::string::npos) << r.error_message;
    } else if (mt == 999) {
      EXPECT_EQ(r.error_kind, "timeout");
      EXPECT_GE(r.e2e_s, 0.9);
      EXPECT_LT(r.e2e_s, 2.0);
    } else if (mt == 998) {
      EXPECT_EQ(r.error_kind, "bad_stream");
      EXPECT_EQ(r.output_tokens, 3);
    } else {
      ASSERT_TRUE(r.ok) << r.error_kind << ": " << r.error_message;
      EXPECT_EQ(r.output_tokens, mt);
      EXPECT_GT(r.ttft_s, 0);
      EXPECT_LT(r.ttft_s, r.e2e_s);
      // The server spends at least 2 ms between tokens. (Only a lower bound on e2e is robust on
      // a loaded machine: a late client compresses the gaps it observes.)
      EXPECT_GE(r.e2e_s, 0.002 * (mt - 1) * 0.95);
      (reqs[k].prompt_tokens > 100 ? long_ttft : short_ttft).push_back(r.ttft_s);
    }
  }
  ASSERT_EQ(short_ttft.size(), 10u);
  ASSERT_EQ(long_ttft.size(), 10u);
  EXPECT_GT(*std::min_element(long_ttft.begin(), long_ttft.end()), 0.15);
  EXPECT_LT(Percentile(short_ttft, 50), Percentile(long_ttft, 50));

  Report rep = BuildReport(*res, Slo{.ttft_s = 0.1, .tpot_s = 0});
  EXPECT_EQ(rep.completed, 20);
  EXPECT_EQ(rep.failed, 8);
  EXPECT_EQ(rep.errors["http_500"], 3);
  EXPECT_EQ(rep.errors["http_429"], 2);
  EXPECT_EQ(rep.errors["timeout"], 2);
  EXPECT_EQ(rep.errors["bad_stream"], 1);
  // Long prompts (>= 200 ms to first token) never meet a 100 ms TTFT bound; failures never do.
  const auto met =
      std::count_if(short_ttft.begin(), short_ttft.end(), [](double t) { return t <= 0.1; });
  EXPECT_EQ(rep.slo_met, met);
  EXPECT_GT(met, 0);
  EXPECT_GT(rep.tpot.count, 0);
}

TEST(LoadgenIntegrationTest, ChatAndConcurrencyBound) {
  FakeOpenAiServer server;
  std::vector<PlannedRequest> reqs;
  for (int k = 0; k < 12; ++k) reqs.push_back(Req(k, 0, 20, 4));
  RunOptions o = Opts(server.port());
  o.chat = true;
  o.concurrency = 3;
  LoadRunner runner(o);
  auto res = runner.Run(reqs);
  ASSERT_TRUE(res.ok()) << res.status();
  for (const auto& r : *res) {
    EXPECT_TRUE(r.ok) << r.error_kind << ": " << r.error_message;
    EXPECT_EQ(r.output_tokens, 4);  // even max_tokens: counted from content chunks
  }
  EXPECT_EQ(server.requests(), 12);
  EXPECT_LE(server.max_concurrent(), 3);
  EXPECT_GE(server.max_concurrent(), 2);
}

TEST(LoadgenIntegrationTest, OpenLoopArrivalTimes) {
  FakeOpenAiServer server;
  std::vector<PlannedRequest> reqs = {Req(0, 0, 10, 2), Req(1, 0.3, 10, 2)};
  LoadRunner runner(Opts(server.port()));
  auto res = runner.Run(reqs);
  ASSERT_TRUE(res.ok());
  EXPECT_LT((*res)[0].start_s, 0.1);
  EXPECT_GE((*res)[1].start_s, 0.299);
  EXPECT_LT((*res)[1].start_s, 0.5);
}

TEST(LoadgenIntegrationTest, StopCancelsInFlightAndSkipsTheRest) {
  FakeOpenAiServer server;
  std::vector<PlannedRequest> reqs = {Req(0, 0, 10, 999), Req(1, 0, 10, 999), Req(2, 30, 10, 2)};
  RunOptions o = Opts(server.port());
  o.timeout_s = 60;
  LoadRunner runner(o);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    runner.Stop();
  });
  auto t0 = std::chrono::steady_clock::now();
  auto res = runner.Run(reqs);
  stopper.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(res.ok());
  EXPECT_LT(wall, 2.0);
  EXPECT_TRUE(runner.stopped());
  EXPECT_EQ((*res)[0].error_kind, "cancelled");
  EXPECT_EQ((*res)[1].error_kind, "cancelled");
  EXPECT_FALSE((*res)[2].sent);
  Report rep = BuildReport(*res, {});
  EXPECT_EQ(rep.not_sent, 1);
  EXPECT_EQ(rep.errors["cancelled"], 2);
}

TEST(LoadgenIntegrationTest, ConnectionRefused) {
  int port;
  {
    net::io_context io;
    tcp::acceptor a(io, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    port = a.local_endpoint().port();
  }
  LoadRunner runner(Opts(port));
  auto res = runner.Run({Req(0, 0, 10, 2), Req(1, 0.01, 10, 2)});
  ASSERT_TRUE(res.ok());
  for (const auto& r : *res) EXPECT_EQ(r.error_kind, "connect");
}

// ---- bench profile against a fake worker ------------------------------------------------------

// Prefill takes 2 ms + 20 us per prompt token; decode emits one token every 3 ms per stream.
class FakeDecodeService final : public prfaas::v1::DecodeService::Service {
 public:
  grpc::Status Decode(grpc::ServerContext*, const prfaas::v1::DecodeRequest* req,
                      grpc::ServerWriter<prfaas::v1::DecodeEvent>* w) override {
    if (!req->local_prefill()) return {grpc::StatusCode::INVALID_ARGUMENT, "want local_prefill"};
    std::this_thread::sleep_for(
        std::chrono::microseconds(2000 + 20 * req->prompt_token_ids_size()));
    for (int i = 0; i < req->sampling().max_tokens(); ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
      prfaas::v1::DecodeEvent ev;
      ev.mutable_tokens()->add_token_ids(65);
      if (!w->Write(ev)) return grpc::Status::CANCELLED;
    }
    prfaas::v1::DecodeEvent fin;
    fin.mutable_finished()->set_reason(prfaas::v1::FINISH_REASON_LENGTH);
    w->Write(fin);
    return grpc::Status::OK;
  }
};

TEST(LoadgenIntegrationTest, ProfileAgainstFakeWorker) {
  FakeDecodeService svc;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(&svc);
  auto server = b.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ProfileOptions o;
  o.worker = fmt::format("127.0.0.1:{}", port);
  o.lengths = {16, 4096};
  o.batches = {1, 4};
  o.repeats = 1;
  o.decode_context = 16;
  o.decode_tokens = 12;
  auto prof = RunProfile(o);
  ASSERT_TRUE(prof.ok()) << prof.status();
  const auto& j = *prof;
  ASSERT_EQ(j["prefill"].size(), 2u);
  const double p16 = j["prefill"][0]["seconds"], p4096 = j["prefill"][1]["seconds"];
  EXPECT_GT(p16, 0.0015);
  EXPECT_GT(p4096, 0.080);  // 2 ms + 82 ms
  EXPECT_GT(p4096, p16);
  ASSERT_EQ(j["decode"].size(), 2u);
  for (const auto& d : j["decode"]) {
    EXPECT_GT(d["seconds"].get<double>(), 0.0025);
    EXPECT_LT(d["seconds"].get<double>(), 0.030);
    EXPECT_EQ(d["context_tokens"], 22);
  }
  // The simulator accepts what we wrote.
  auto model = sim::ProfileCostModel::FromJsonText(j.dump(), "profile");
  ASSERT_TRUE(model.ok()) << model.status();
  server->Shutdown();
}

}  // namespace
}  // namespace prfaas::bench
