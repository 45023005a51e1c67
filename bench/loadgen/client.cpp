#include "bench/loadgen/client.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <utility>  // before Asio: its awaitable.hpp uses std::exchange

#include <fmt/format.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "bench/loadgen/sse.h"

namespace prfaas::bench {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

Result<Endpoint> ParseUrl(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind("https://", 0) == 0) {
    return InvalidArgument("url '" + url + "': https is not supported; use http://");
  }
  std::string rest = url.rfind(scheme, 0) == 0 ? url.substr(scheme.size()) : url;
  Endpoint e;
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) e.base_path = rest.substr(slash);
  while (!e.base_path.empty() && e.base_path.back() == '/') e.base_path.pop_back();
  // A base that already names the API root ("/v1") is accepted: paths are appended after it.
  if (e.base_path.size() >= 3 && e.base_path.compare(e.base_path.size() - 3, 3, "/v1") == 0) {
    e.base_path.resize(e.base_path.size() - 3);
  }
  if (authority.empty()) return InvalidArgument("url '" + url + "': missing host");
  if (authority.front() == '[') {  // [v6addr]:port
    const size_t close = authority.find(']');
    if (close == std::string::npos) return InvalidArgument("url '" + url + "': bad IPv6 host");
    e.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return InvalidArgument("url '" + url + "': bad port");
      e.port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    e.host = authority.substr(0, colon);
    if (colon != std::string::npos) e.port = authority.substr(colon + 1);
  }
  if (e.host.empty() || e.port.empty() ||
      e.port.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument("url '" + url + "': expected http://host[:port][/prefix]");
  }
  return e;
}

std::string RequestBody(const RunOptions& o, const PlannedRequest& r) {
  nlohmann::json j = {{"model", o.model},
                      {"max_tokens", r.max_tokens},
                      {"stream", true},
                      {"stream_options", {{"include_usage", true}}},
                      {"temperature", o.temperature}};
  if (o.ignore_eos) j["ignore_eos"] = true;
  if (o.chat) {
    j["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", r.prompt}}});
  } else {
    j["prompt"] = r.prompt;
  }
  return j.dump();
}

class Session;

class LoadRunner::Impl {
 public:
  Impl(const RunOptions& o, const std::vector<PlannedRequest>& reqs)
      : opts(o),
        reqs(reqs),
        results(reqs.size()),
        arrival_timer(io),
        progress_timer(io),
        signals(io) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      results[i].index = reqs[i].index;
      results[i].scheduled_s = reqs[i].arrival_s;
      results[i].prompt_tokens = reqs[i].prompt_tokens;
    }
  }

  void Start() {
    t0 = Clock::now();
    if (opts.handle_signals) {
      signals.add(SIGINT);
      signals.add(SIGTERM);
      signals.async_wait([this](const beast::error_code& ec, int) {
        if (!ec) StopNow();
      });
    }
    if (opts.progress) Progress();
    ScheduleArrivals();
    MaybeFinish();
  }

  double Now() const { return std::chrono::duration<double>(Clock::now() - t0).count(); }

  void ScheduleArrivals() {
    if (stopping) return;
    const double now = Now();
    while (next < reqs.size() && reqs[next].arrival_s <= now) queue.push_back(next++);
    Launch();
    if (next < reqs.size()) {
      arrival_timer.expires_at(t0 + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(reqs[next].arrival_s)));
      arrival_timer.async_wait([this](const beast::error_code& ec) {
        if (!ec) ScheduleArrivals();
      });
    }
  }

  void Launch();
  void OnDone(size_t i) {
    active.erase(i);
    --in_flight;
    ++done;
    if (!results[i].ok) ++errors;
    Launch();
    MaybeFinish();
  }

  void StopNow();

  void MaybeFinish() {
    const bool all = next == reqs.size() && queue.empty();
    if ((all || stopping) && in_flight == 0 && !finished) {
      finished = true;
      arrival_timer.cancel();
      progress_timer.cancel();
      beast::error_code ec;
      signals.cancel(ec);
      if (opts.progress) {
        DrawProgress();
        std::fputc('\n', stderr);
      }
    }
  }

  void Progress() {
    DrawProgress();
    progress_timer.expires_after(std::chrono::milliseconds(250));
    progress_timer.async_wait([this](const beast::error_code& ec) {
      if (!ec && !finished) Progress();
    });
  }

  void DrawProgress() {
    const size_t total = std::max<size_t>(reqs.size(), 1);
    const int width = 30;
    const int filled = static_cast<int>(width * done / total);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r[%s] %zu/%zu done, %d in flight, %zu queued, %zu errors, %.1fs   ",
                 bar.c_str(), done, reqs.size(), in_flight, queue.size(), errors, Now());
    std::fflush(stderr);
  }

  net::io_context io;
  const RunOptions& opts;
  const std::vector<PlannedRequest>& reqs;
  std::vector<RequestResult> results;
  tcp::resolver::results_type endpoints;
  Clock::time_point t0;
  net::steady_timer arrival_timer;
  net::steady_timer progress_timer;
  net::signal_set signals;
  std::deque<size_t> queue;  // arrived, waiting for a concurrency slot
  std::map<size_t, std::weak_ptr<Session>> active;
  size_t next = 0;  // first request not yet arrived
  int in_flight = 0;
  size_t done = 0, errors = 0;
  bool stopping = false, finished = false;
};

// One request: connect, send, stream the response. Handlers hold a shared_ptr; once Finish ran,
// late completions (after the socket was closed) return without touching the result.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(LoadRunner::Impl& impl, size_t i)
      : impl_(impl), i_(i), req_(impl.reqs[i]), res_(impl.results[i]), stream_(impl.io) {}

  void Start() {
    res_.sent = true;
    res_.start_s = impl_.Now();
    start_ = Clock::now();
    const std::string path = impl_.opts.endpoint.base_path +
                             (impl_.opts.chat ? "/v1/chat/completions" : "/v1/completions");
    http_req_.method(http::verb::post);
    http_req_.target(path);
    http_req_.version(11);
    http_req_.set(http::field::host, impl_.opts.endpoint.host + ":" + impl_.opts.endpoint.port);
    http_req_.set(http::field::content_type, "application/json");
    http_req_.set(http::field::accept, "text/event-stream");
    http_req_.set(http::field::user_agent, "prfaas-bench");
    http_req_.keep_alive(false);
    http_req_.body() = RequestBody(impl_.opts, req_);
    http_req_.prepare_payload();
    stream_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(impl_.opts.timeout_s)));
    stream_.async_connect(impl_.endpoints, [self = shared_from_this()](const beast::error_code& ec,
                                                                       const tcp::endpoint&) {
      self->OnConnect(ec);
    });
  }

  void Cancel() {
    cancelled_ = true;
    Fail("cancelled", "stopped by the user");
  }

 private:
  double Elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  void OnConnect(const beast::error_code& ec) {
    if (finished_) return;
    if (ec) return FailIo(ec, "connect");
    beast::error_code ignored;
    stream_.socket().set_option(tcp::no_delay(true), ignored);
    http::async_write(
        stream_, http_req_,
        [self = shared_from_this()](const beast::error_code& ec, size_t) { self->OnWrite(ec); });
  }

  void OnWrite(const beast::error_code& ec) {
    if (finished_) return;
    if (ec) return FailIo(ec, "io");
    parser_.emplace();
    // Not boost::none: Boost 1.74 compares Content-Length against the empty optional and fails.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    http::async_read_header(
        stream_, buf_, *parser_,
        [self = shared_from_this()](const beast::error_code& ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(const beast::error_code& ec) {
    if (finished_) return;
    if (ec) return FailIo(ec, "io");
    status_ = parser_->get().result_int();
    if (parser_->is_done()) return EndOfBody();
    ReadBody();
  }

  void ReadBody() {
    parser_->get().body().data = body_buf_.data();
    parser_->get().body().size = body_buf_.size();
    http::async_read_some(
        stream_, buf_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    if (finished_) return;
    const size_t n = body_buf_.size() - parser_->get().body().size;
    if (ec == http::error::need_buffer) ec = {};
    if (n > 0) Consume(std::string_view(body_buf_.data(), n));
    if (finished_) return;
    if (ec) {
      if ((ec == http::error::end_of_stream || ec == net::error::eof) && parser_->is_done()) {
        return EndOfBody();
      }
      return FailIo(ec, "io");
    }
    if (parser_->is_done()) return EndOfBody();
    ReadBody();
  }

  void Consume(std::string_view bytes) {
    if (status_ != 200) {
      if (error_body_.size() < 300) error_body_.append(bytes.substr(0, 300 - error_body_.size()));
      return;
    }
    std::vector<std::string> events;
    sse_.Feed(bytes, events);
    for (const std::string& e : events) {
      OnEvent(e);
      if (finished_) return;
    }
  }

  void OnEvent(const std::string& data) {
    Result<StreamChunk> c = ParseOpenAiChunk(data);
    if (!c.ok()) return Fail("bad_stream", c.status().message());
    if (c->error) return Fail("stream_error", *c->error);
    if (c->has_content) {
      if (res_.ttft_s < 0) res_.ttft_s = Elapsed();
      ++content_chunks_;
    }
    if (c->completion_tokens) usage_tokens_ = *c->completion_tokens;
    if (c->finish_reason) saw_finish_ = true;
    if (c->done) Succeed();
  }

  void EndOfBody() {
    if (status_ != 200) {
      return Fail(fmt::format("http_{}", status_),
                  fmt::format("HTTP {}: {}", status_, error_body_));
    }
    std::vector<std::string> events;
    sse_.Finish(events);
    for (const std::string& e : events) {
      OnEvent(e);
      if (finished_) return;
    }
    if (saw_finish_) return Succeed();
    Fail("bad_stream", "stream ended without [DONE] or a finish_reason");
  }

  void Succeed() {
    res_.ok = true;
    res_.e2e_s = Elapsed();
    res_.output_tokens = usage_tokens_ >= 0 ? usage_tokens_ : content_chunks_;
    Finish();
  }

  void FailIo(const beast::error_code& ec, const char* phase) {
    if (ec == beast::error::timeout) {
      return Fail("timeout", fmt::format("no complete response within {:g} s (in {})",
                                         impl_.opts.timeout_s, phase));
    }
    Fail(cancelled_ ? "cancelled" : phase, ec.message());
  }

  void Fail(const std::string& kind, const std::string& message) {
    if (finished_) return;
    res_.ok = false;
    res_.error_kind = kind;
    res_.error_message = message;
    res_.e2e_s = Elapsed();
    res_.output_tokens = usage_tokens_ >= 0 ? usage_tokens_ : content_chunks_;
    Finish();
  }

  void Finish() {
    finished_ = true;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    impl_.OnDone(i_);
  }

  LoadRunner::Impl& impl_;
  size_t i_;
  const PlannedRequest& req_;
  RequestResult& res_;
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  http::request<http::string_body> http_req_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::array<char, 16384> body_buf_{};
  SseParser sse_;
  std::string error_body_;
  Clock::time_point start_;
  unsigned status_ = 0;
  int64_t content_chunks_ = 0;
  int64_t usage_tokens_ = -1;
  bool saw_finish_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
};

void LoadRunner::Impl::Launch() {
  while (!stopping && !queue.empty() && in_flight < std::max(opts.concurrency, 1)) {
    const size_t i = queue.front();
    queue.pop_front();
    auto s = std::make_shared<Session>(*this, i);
    active[i] = s;
    ++in_flight;
    s->Start();
  }
}

void LoadRunner::Impl::StopNow() {
  if (stopping) return;
  stopping = true;
  arrival_timer.cancel();
  queue.clear();
  // Cancel() re-enters OnDone, which erases from `active`: collect first.
  std::vector<std::shared_ptr<Session>> live;
  for (auto& [i, w] : active) {
    if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->Cancel();
  MaybeFinish();
}

LoadRunner::LoadRunner(RunOptions options) : options_(std::move(options)) {}
LoadRunner::~LoadRunner() = default;

Result<std::vector<RequestResult>> LoadRunner::Run(const std::vector<PlannedRequest>& requests) {
  Impl impl(options_, requests);
  {
    beast::error_code ec;
    tcp::resolver resolver(impl.io);
    impl.endpoints = resolver.resolve(options_.endpoint.host, options_.endpoint.port, ec);
    if (ec) {
      return Unavailable("cannot resolve '" + options_.endpoint.host + ":" +
                         options_.endpoint.port + "': " + ec.message());
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = &impl;
  }
  if (!stopped_.load()) {
    impl.Start();
    try {
      impl.io.run();
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mu_);
      active_ = nullptr;
      return Internal(std::string("load generator I/O loop failed: ") + e.what());
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = nullptr;
  }
  if (impl.stopping) stopped_ = true;
  return std::move(impl.results);
}

void LoadRunner::Stop() {
  stopped_ = true;
  std::lock_guard<std::mutex> lock(mu_);
  if (active_ != nullptr) {
    Impl* impl = active_;
    net::post(impl->io, [impl] { impl->StopNow(); });
  }
}

}  // namespace prfaas::bench
