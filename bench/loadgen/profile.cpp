#include "bench/loadgen/profile.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "prfaas/v1/worker.grpc.pb.h"

namespace prfaas::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Token arrival times of one Decode stream, seconds from when the call was sent. A chunk of k
// tokens contributes k entries at its arrival time.
struct StreamTiming {
  Status status;
  std::vector<double> token_times;
};

StreamTiming RunOne(prfaas::v1::DecodeService::Stub& stub, const ProfileOptions& o,
                    const std::string& id, std::vector<int32_t> prompt, int max_tokens,
                    Clock::time_point t0) {
  StreamTiming t;
  prfaas::v1::DecodeRequest req;
  req.set_request_id(id);
  req.set_local_prefill(true);
  for (int32_t tok : prompt) req.add_prompt_token_ids(tok);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  req.mutable_sampling()->set_top_p(1);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  auto reader = stub.Decode(&ctx, req);
  prfaas::v1::DecodeEvent ev;
  std::string finish_error;
  while (reader->Read(&ev)) {
    const double now = std::chrono::duration<double>(Clock::now() - t0).count();
    if (ev.has_tokens()) {
      for (int k = 0; k < ev.tokens().token_ids_size(); ++k) t.token_times.push_back(now);
    } else if (ev.has_finished() && ev.finished().reason() == prfaas::v1::FINISH_REASON_ERROR) {
      finish_error = ev.finished().error();
    }
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) {
    t.status = Unavailable(fmt::format("worker {}: Decode({}): {} ({})", o.worker, id,
                                       s.error_message(), static_cast<int>(s.error_code())));
  } else if (!finish_error.empty()) {
    t.status =
        Internal(fmt::format("worker {}: Decode({}) failed: {}", o.worker, id, finish_error));
  } else if (t.token_times.empty()) {
    t.status = Internal(fmt::format("worker {}: Decode({}) returned no tokens", o.worker, id));
  }
  return t;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

Result<nlohmann::json> RunProfile(const ProfileOptions& o) {
  if (o.worker.empty()) return InvalidArgument("--worker is required (host:port)");
  if (o.lengths.empty() || o.batches.empty()) {
    return InvalidArgument("--lengths and --batches must not be empty");
  }
  for (int64_t l : o.lengths) {
    if (l <= 0) return InvalidArgument(fmt::format("prompt length {} must be > 0", l));
  }
  for (int b : o.batches) {
    if (b <= 0) return InvalidArgument(fmt::format("batch size {} must be > 0", b));
  }
  if (o.decode_tokens < 3) return InvalidArgument("--decode-tokens must be >= 3");
  auto channel = grpc::CreateChannel(o.worker, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    return Unavailable("cannot connect to worker gRPC at " + o.worker);
  }
  auto stub = prfaas::v1::DecodeService::NewStub(channel);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> tok(o.token_min, o.token_max);
  auto prompt = [&](int64_t n) {
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (auto& t : p) t = tok(rng);
    return p;
  };
  int64_t seq = 0;
  auto next_id = [&] { return fmt::format("profile-{}-{}", o.seed, seq++); };

  // One warm-up call so connection setup and first-use costs do not land in the first point.
  {
    StreamTiming w = RunOne(*stub, o, next_id(), prompt(16), 2, Clock::now());
    if (!w.status.ok()) return w.status;
  }

  nlohmann::json prefill = nlohmann::json::array();
  for (int64_t len : o.lengths) {
    std::vector<double> ttfts;
    for (int r = 0; r < std::max(o.repeats, 1); ++r) {
      StreamTiming t = RunOne(*stub, o, next_id(), prompt(len), 1, Clock::now());
      if (!t.status.ok()) return t.status;
      ttfts.push_back(t.token_times.front());
    }
    const double s = Median(ttfts);
    spdlog::info("profile: prefill {} tokens: {:.4f} s", len, s);
    prefill.push_back({{"tokens", len}, {"seconds", s}});
  }

  nlohmann::json decode = nlohmann::json::array();
  for (int b : o.batches) {
    std::vector<double> steps;
    for (int r = 0; r < std::max(o.repeats, 1); ++r) {
      std::vector<StreamTiming> timings(static_cast<size_t>(b));
      std::vector<std::vector<int32_t>> prompts;
      std::vector<std::string> ids;
      for (int i = 0; i < b; ++i) {
        prompts.push_back(prompt(o.decode_context));
        ids.push_back(next_id());
      }
      const Clock::time_point t0 = Clock::now();
      std::vector<std::thread> threads;
      for (int i = 0; i < b; ++i) {
        threads.emplace_back([&, i] {
          timings[static_cast<size_t>(i)] =
              RunOne(*stub, o, ids[static_cast<size_t>(i)],
                     std::move(prompts[static_cast<size_t>(i)]), o.decode_tokens, t0);
        });
      }
      for (auto& th : threads) th.join();
      double window_start = 0, window_end = 1e300;
      for (const StreamTiming& t : timings) {
        if (!t.status.ok()) return t.status;
        window_start = std::max(window_start, t.token_times.front());
        window_end = std::min(window_end, t.token_times.back());
      }
      double tokens = 0;
      for (const StreamTiming& t : timings) {
        tokens += static_cast<double>(
            std::count_if(t.token_times.begin(), t.token_times.end(),
                          [&](double x) { return x > window_start && x <= window_end; }));
      }
      tokens /= b;
      if (window_end > window_start && tokens >= 1) {
        steps.push_back((window_end - window_start) / tokens);
      } else {
        // Streams did not overlap (the worker ran them one after another): fall back to the
        // per-stream inter-token time, which then reflects batch 1.
        std::vector<double> itl;
        for (const StreamTiming& t : timings) {
          const auto& v = t.token_times;
          if (v.size() >= 2)
            itl.push_back((v.back() - v.front()) / static_cast<double>(v.size() - 1));
        }
        if (itl.empty()) return Internal("decode measurement produced no inter-token times");
        spdlog::warn("profile: batch {}: streams never decoded together; using per-stream ITL", b);
        steps.push_back(Median(itl));
      }
    }
    const double s = Median(steps);
    spdlog::info("profile: decode batch {}: {:.5f} s/step", b, s);
    decode.push_back(
        {{"batch", b}, {"context_tokens", o.decode_context + o.decode_tokens / 2}, {"seconds", s}});
  }
  return nlohmann::json{{"format", "prfaas-profile/1"},
                        {"model", o.model},
                        {"hardware", o.hardware},
                        {"gpus", o.gpus},
                        {"source", fmt::format("prfaas bench profile --worker {}", o.worker)},
                        {"prefill", prefill},
                        {"decode", decode}};
}

}  // namespace prfaas::bench
