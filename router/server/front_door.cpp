#include "router/server/front_door.h"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/log.h"

namespace prfaas::router {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

namespace {

const std::vector<double>& LatencyBounds() {
  static const std::vector<double> b = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2,    5,     10,   30,  60,   120};
  return b;
}
const std::vector<double>& TokenBounds() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06,
                                        0.08,  0.1,    0.15,  0.2,  0.3,  0.5,  1};
  return b;
}

std::string ReasonPhrase(int status) {
  return std::string(bhttp::obsolete_reason(static_cast<bhttp::status>(status)));
}

std::string NewRequestId() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  return fmt::format("{:08x}{:08x}", static_cast<uint32_t>(salt),
                     static_cast<uint32_t>(counter.fetch_add(1)));
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A request id from a client is echoed into headers and logs: keep it short and printable.
bool ValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
          c == ':')) {
      return false;
    }
  }
  return true;
}

}  // namespace

class FrontDoor::Impl {
 public:
  class Session;

  Impl(FrontDoorOptions options, Orchestrator& orch, const Tokenizer& tok, metrics::Registry& reg,
       const http::HealthState& health)
      : options_(std::move(options)),
        orch_(orch),
        tok_(tok),
        registry_(reg),
        health_(health),
        acceptor_(ioc_),
        requests_(reg.Counter("prfaas_router_requests_total",
                              "Finished API requests by prefill path and outcome.",
                              {"path", "status"})),
        in_flight_(reg.Gauge("prfaas_router_in_flight_requests",
                             "Requests admitted and not finished.", {"path"})),
        ttft_(reg.Histogram("prfaas_router_ttft_seconds", "Time to first token.", {"path"},
                            LatencyBounds())),
        tpot_(reg.Histogram("prfaas_router_tpot_seconds", "Time per output token.", {"path"},
                            TokenBounds())),
        e2e_(reg.Histogram("prfaas_router_e2e_seconds", "Request received to last token.", {"path"},
                           LatencyBounds())),
        prompt_tokens_(reg.Counter("prfaas_router_prompt_tokens_total",
                                   "Prompt tokens of finished requests.", {"path"})),
        generated_tokens_(reg.Counter("prfaas_router_generated_tokens_total",
                                      "Tokens streamed to clients.", {"path"})),
        prefill_tokens_(reg.Counter("prfaas_router_prefill_tokens_total",
                                    "Uncached prompt tokens sent to prefill.", {"path"})) {}

  Status Start() {
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(options_.bind_address, ec);
    if (ec) return InvalidArgument(fmt::format("bad bind address '{}'", options_.bind_address));
    tcp::endpoint ep(addr, static_cast<unsigned short>(options_.port));
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Unavailable(fmt::format("cannot listen on {}:{}: {}", options_.bind_address,
                                     options_.port, ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    DoAccept();
    for (int i = 0; i < std::max(1, options_.threads); ++i) {
      threads_.emplace_back([this] { ioc_.run(); });
    }
    spdlog::info("router HTTP API listening on {}:{}", options_.bind_address, port_);
    return Status::Ok();
  }

  void Stop() {
    if (stopped_.exchange(true)) return;
    asio::post(ioc_, [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
    });
    {
      std::unique_lock lock(mu_);
      for (auto& c : cancels_) c->Cancel();
      active_cv_.wait_for(lock, std::chrono::seconds(30), [this] { return active_ == 0; });
    }
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  void DoAccept();

  // Admission of one generation; false when at the limit.
  bool Admit(const std::shared_ptr<CancelToken>& cancel) {
    std::lock_guard lock(mu_);
    if (stopped_.load() || active_ >= options_.max_concurrent_requests) return false;
    ++active_;
    cancels_.insert(cancel);
    return true;
  }
  void Done(const std::shared_ptr<CancelToken>& cancel) {
    std::lock_guard lock(mu_);
    --active_;
    cancels_.erase(cancel);
    active_cv_.notify_all();
  }

  FrontDoorOptions options_;
  Orchestrator& orch_;
  const Tokenizer& tok_;
  metrics::Registry& registry_;
  const http::HealthState& health_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  int port_ = 0;
  std::atomic<bool> stopped_{false};
  std::mutex mu_;
  std::condition_variable active_cv_;
  int active_ = 0;
  std::set<std::shared_ptr<CancelToken>> cancels_;

  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Gauge>& in_flight_;
  metrics::Family<metrics::Histogram>& ttft_;
  metrics::Family<metrics::Histogram>& tpot_;
  metrics::Family<metrics::Histogram>& e2e_;
  metrics::Family<metrics::Counter>& prompt_tokens_;
  metrics::Family<metrics::Counter>& generated_tokens_;
  metrics::Family<metrics::Counter>& prefill_tokens_;
};

// One client connection. All socket operations run on the connection's strand; generation
// threads hand bytes over with Post().
class FrontDoor::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Impl& door, tcp::socket socket) : door_(door), socket_(std::move(socket)) {}

  void Start() { DoRead(); }

  // Queues bytes for the client; `last` closes the connection after they are written.
  void Post(std::string bytes, bool last) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), b = std::move(bytes), last] {
      self->Enqueue(std::move(b), last, /*keep_alive=*/false);
    });
  }
  bool gone() const { return gone_.load(); }

 private:
  void DoRead() {
    parser_.emplace();
    parser_->body_limit(door_.options_.max_body_bytes);
    parser_->header_limit(64 * 1024);
    bhttp::async_read(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == bhttp::error::body_limit) {
      ApiError e;
      e.http_status = 413;
      e.message = fmt::format("request body exceeds {} bytes", door_.options_.max_body_bytes);
      SendSimple(e.http_status, "application/json", e.Body(), false, "-");
      return;
    }
    if (ec) {
      Close();
      return;
    }
    Handle(parser_->release());
  }

  std::string Header(int status, std::string_view content_type, size_t content_length,
                     bool keep_alive, const std::string& rid, bool sse = false) {
    std::string h = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nx-request-id: {}\r\n",
                                status, ReasonPhrase(status), content_type, rid);
    if (sse) {
      h += "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n";
    } else {
      h += fmt::format("Content-Length: {}\r\n", content_length);
    }
    h += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    return h;
  }

  void SendSimple(int status, std::string_view content_type, const std::string& body,
                  bool keep_alive, const std::string& rid) {
    Enqueue(Header(status, content_type, body.size(), keep_alive, rid) + body, true, keep_alive);
  }

  void Handle(bhttp::request<bhttp::string_body> req) {
    std::string rid(req["x-request-id"]);
    if (!ValidRequestId(rid)) rid = NewRequestId();
    log::RequestScope scope(rid);
    std::string path(req.target());
    if (auto q = path.find('?'); q != std::string::npos) path.resize(q);
    const bool keep_alive = req.keep_alive();
    const bool get = req.method() == bhttp::verb::get;
    const bool post = req.method() == bhttp::verb::post;
    spdlog::debug("{} {}", std::string(req.method_string()), path);

    auto error = [&](const ApiError& e) {
      SendSimple(e.http_status, "application/json", e.Body(), keep_alive, rid);
    };
    auto method_not_allowed = [&] {
      ApiError e;
      e.http_status = 405;
      e.message =
          fmt::format("method {} not allowed on {}", std::string(req.method_string()), path);
      error(e);
    };
    auto authorised = [&] {
      if (door_.options_.api_token.empty()) return true;
      const auto auth = req[bhttp::field::authorization];
      if (BearerMatches(std::string_view(auth.data(), auth.size()), door_.options_.api_token)) {
        return true;
      }
      ApiError e;
      e.http_status = 401;
      e.type = "authentication_error";
      e.code = "invalid_api_key";
      e.message = "missing or invalid bearer token (Authorization: Bearer <token>)";
      error(e);
      return false;
    };

    if (path == "/health" || path == "/health/live") {
      if (!get) return method_not_allowed();
      const bool ok = path == "/health/live" || door_.health_.ready();
      SendSimple(ok ? 200 : 503, "text/plain; charset=utf-8",
                 ok ? std::string("ok\n") : door_.health_.reason() + "\n", keep_alive, rid);
      return;
    }
    if (path == "/metrics") {
      if (!get) return method_not_allowed();
      SendSimple(200, "text/plain; version=0.0.4; charset=utf-8", door_.registry_.Render(),
                 keep_alive, rid);
      return;
    }
    if (path == "/v1/models") {
      if (!get) return method_not_allowed();
      if (!authorised()) return;
      SendSimple(200, "application/json", FormatModels(door_.options_.model_name, UnixNow()),
                 keep_alive, rid);
      return;
    }
    if (path == "/v1/completions" || path == "/v1/chat/completions") {
      if (!post) return method_not_allowed();
      if (!authorised()) return;
      const bool chat = path == "/v1/chat/completions";
      CompletionRequest creq;
      if (auto e = ParseCompletionRequest(req.body(), chat, door_.options_.limits,
                                          door_.options_.model_name, &creq)) {
        door_.requests_.WithLabels({"none", "client_error"}).Inc();
        return error(*e);
      }
      cancel_ = std::make_shared<CancelToken>();
      if (!door_.Admit(cancel_)) {
        ApiError e;
        e.http_status = door_.stopped_.load() ? 503 : 429;
        e.type = door_.stopped_.load() ? "server_error" : "rate_limit_error";
        e.message = door_.stopped_.load() ? "the router is shutting down"
                                          : "too many requests in flight; retry later";
        door_.requests_.WithLabels({"none", "client_error"}).Inc();
        return error(e);
      }
      rid_ = rid;
      WatchDisconnect();
      std::thread([self = shared_from_this(), creq = std::move(creq)]() mutable {
        Impl& door = self->door_;
        auto cancel = self->cancel_;
        self->Generate(std::move(creq));
        // The session (and its socket) must die while the io_context lives: drop it before
        // telling Stop() this generation is over.
        self.reset();
        door.Done(cancel);
      }).detach();
      return;
    }
    ApiError e;
    e.http_status = 404;
    e.message = fmt::format("no route for {}", path);
    error(e);
  }

  // While a generation runs the client sends nothing; readability then means EOF/reset, i.e.
  // the client went away.
  void WatchDisconnect() {
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_) return;
      char c;
      const ssize_t n = ::recv(self->socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        spdlog::info("client disconnected: cancelling request {}", self->rid_);
        self->gone_.store(true);
        self->cancel_->Cancel();
      } else if (n < 0) {
        self->WatchDisconnect();
      }
      // n > 0: the client pipelined another request; it will be dropped with the connection.
    });
  }

  void Enqueue(std::string bytes, bool last, bool keep_alive) {
    if (closed_) return;
    queue_.push_back(Out{std::move(bytes), last, keep_alive});
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    if (queue_.empty()) {
      writing_ = false;
      return;
    }
    writing_ = true;
    asio::async_write(socket_, asio::buffer(queue_.front().bytes),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        Out done = std::move(self->queue_.front());
                        self->queue_.pop_front();
                        if (ec) {
                          self->gone_.store(true);
                          if (self->cancel_) self->cancel_->Cancel();
                          self->Close();
                          return;
                        }
                        if (done.last) {
                          self->writing_ = false;
                          if (done.keep_alive) {
                            self->DoRead();
                          } else {
                            self->Close();
                          }
                          return;
                        }
                        self->WriteNext();
                      });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }

  // Runs on its own thread: tokenize, orchestrate, stream.
  void Generate(CompletionRequest creq);

  struct Out {
    std::string bytes;
    bool last;
    bool keep_alive;
  };

  Impl& door_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::deque<Out> queue_;
  bool writing_ = false;
  bool closed_ = false;
  std::atomic<bool> gone_{false};
  std::shared_ptr<CancelToken> cancel_;
  std::string rid_;
};

void FrontDoor::Impl::DoAccept() {
  acceptor_.async_accept(asio::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
      spdlog::warn("accept failed: {}", ec.message());
    } else {
      s.set_option(tcp::no_delay(true), ec);
      std::make_shared<Session>(*this, std::move(s))->Start();
    }
    DoAccept();
  });
}

void FrontDoor::Impl::Session::Generate(CompletionRequest creq) {
  log::RequestScope scope(rid_);
  Impl& d = door_;
  const auto t0 = std::chrono::steady_clock::now();
  const ResponseMeta meta{(creq.chat ? "chatcmpl-" : "cmpl-") + rid_, UnixNow(),
                          d.options_.model_name};
  std::string path = "none";
  bool headers_sent = false;
  std::string text;
  int64_t emitted = 0;
  std::chrono::steady_clock::time_point first_at;

  auto finish_request = [&](const char* status) { d.requests_.WithLabels({path, status}).Inc(); };
  auto fail = [&](const ApiError& e, const char* status) {
    spdlog::info("request failed ({}): {}", e.http_status, e.message);
    finish_request(status);  // counted before the client can see the reply
    if (headers_sent) {
      Post(FormatStreamError(e) + std::string(kStreamDone), true);
    } else {
      std::string body = e.Body();
      Post(Header(e.http_status, "application/json", body.size(), false, rid_) + body, true);
    }
  };

  // ---- tokenize ----
  std::vector<int32_t> prompt;
  if (creq.chat) {
    auto rendered = RenderChatML(creq.messages);
    if (!rendered.ok())
      return fail(BadRequest(rendered.status().message(), "messages"), "client_error");
    prompt = d.tok_.Encode(*rendered, SpecialTokens::kRecognize);
  } else if (creq.prompt_ids) {
    for (int32_t id : *creq.prompt_ids) {
      if (id >= d.tok_.VocabSize()) {
        return fail(BadRequest(fmt::format("token id {} is outside the vocabulary (size {})", id,
                                           d.tok_.VocabSize()),
                               "prompt"),
                    "client_error");
      }
    }
    prompt = std::move(*creq.prompt_ids);
  } else {
    prompt = d.tok_.Encode(creq.prompt, SpecialTokens::kRecognize);
  }
  if (auto e = CheckPromptLength(static_cast<int64_t>(prompt.size()), creq, d.options_.limits)) {
    return fail(*e, "client_error");
  }

  GenerateRequest greq;
  greq.request_id = rid_;
  greq.prompt = std::move(prompt);
  greq.sampling.temperature = creq.temperature;
  greq.sampling.top_p = creq.top_p;
  greq.sampling.top_k = creq.top_k;
  greq.sampling.seed = creq.seed;
  greq.sampling.max_tokens = creq.max_tokens;
  greq.sampling.ignore_eos = creq.ignore_eos;
  if (!creq.ignore_eos) greq.sampling.stop_token_ids = d.tok_.Specials().StopIds();

  StreamDecoder decoder(d.tok_, /*skip_special=*/true);
  auto send_headers = [&] {
    if (headers_sent || !creq.stream) return;
    headers_sent = true;
    Post(Header(200, "text/event-stream", 0, false, rid_, /*sse=*/true), false);
    if (creq.chat) Post(FormatStreamChunk(creq, meta, "", "", /*role_delta=*/true), false);
  };
  metrics::Gauge* in_flight = nullptr;
  auto routed = [&](const Decision& decision) {
    path = std::string(PathLabel(decision.path));
    in_flight = &d.in_flight_.WithLabels({path});
    in_flight->Add(1);
    d.prefill_tokens_.WithLabels({path}).Inc(decision.uncached_tokens);
  };
  auto sink = [&](std::span<const int32_t> tokens) {
    if (emitted == 0) {
      first_at = std::chrono::steady_clock::now();
      d.ttft_.WithLabels({path}).Observe(std::chrono::duration<double>(first_at - t0).count());
    }
    emitted += static_cast<int64_t>(tokens.size());
    std::string piece;
    for (int32_t id : tokens) {
      auto p = decoder.Add(id);
      if (p.ok()) piece += *p;  // an out-of-vocabulary id from a worker is dropped
    }
    if (creq.stream) {
      send_headers();
      if (!piece.empty()) Post(FormatStreamChunk(creq, meta, piece, ""), false);
    } else {
      text += piece;
    }
    return !gone_.load();
  };

  auto outcome = d.orch_.Generate(greq, *cancel_, sink, routed);
  if (in_flight) in_flight->Add(-1);
  const auto t1 = std::chrono::steady_clock::now();
  if (emitted > 0) {
    d.generated_tokens_.WithLabels({path}).Inc(static_cast<double>(emitted));
  }
  if (!outcome.ok()) {
    const Status& s = outcome.status();
    if (s.code() == StatusCode::kCancelled || gone_.load()) {
      finish_request("cancelled");
      Post("", true);
      return;
    }
    ApiError e;
    e.message = s.message();
    e.type = "server_error";
    if (s.code() == StatusCode::kDeadlineExceeded) {
      e.http_status = 504;
      return fail(e, "timeout");
    }
    if (s.code() == StatusCode::kInvalidArgument) {
      e.http_status = 400;
      e.type = "invalid_request_error";
      return fail(e, "client_error");
    }
    e.http_status = s.code() == StatusCode::kUnavailable ? 503 : 500;
    return fail(e, "server_error");
  }
  const GenerateOutcome& o = *outcome;
  d.prompt_tokens_.WithLabels({path}).Inc(static_cast<double>(o.prompt_tokens));
  d.e2e_.WithLabels({path}).Observe(std::chrono::duration<double>(t1 - t0).count());
  if (emitted >= 2) {
    d.tpot_.WithLabels({path}).Observe(std::chrono::duration<double>(t1 - first_at).count() /
                                       static_cast<double>(emitted - 1));
  }
  spdlog::info(
      "request done: path {} prefill {} decode {} prompt {} cached {} completion {} "
      "reroutes {} e2e {:.3f}s",
      path, o.prefill_worker, o.decode_worker, o.prompt_tokens, o.cached_tokens,
      o.completion_tokens, o.reroutes, std::chrono::duration<double>(t1 - t0).count());
  finish_request("ok");
  std::string tail = decoder.Finish();
  const char* finish = o.finish == Finish::kLength ? "length" : "stop";
  const UsageCounts usage{o.prompt_tokens, o.completion_tokens, o.cached_tokens};
  if (creq.stream) {
    send_headers();
    std::string out;
    if (!tail.empty()) out += FormatStreamChunk(creq, meta, tail, "");
    out += FormatStreamChunk(creq, meta, "", finish);
    if (creq.include_usage) out += FormatStreamUsage(creq, meta, usage);
    out += kStreamDone;
    Post(std::move(out), true);
  } else {
    text += tail;
    std::string body = FormatFullResponse(creq, meta, text, finish, usage);
    Post(Header(200, "application/json", body.size(), false, rid_) + body, true);
  }
}

FrontDoor::FrontDoor(FrontDoorOptions options, Orchestrator& orchestrator,
                     const Tokenizer& tokenizer, metrics::Registry& registry,
                     const http::HealthState& health)
    : impl_(std::make_unique<Impl>(std::move(options), orchestrator, tokenizer, registry, health)) {
}
FrontDoor::~FrontDoor() {
  Stop();
}
Status FrontDoor::Start() {
  return impl_->Start();
}
void FrontDoor::Stop() {
  impl_->Stop();
}
int FrontDoor::port() const {
  return impl_->port_;
}

}  // namespace prfaas::router
