#include "router/service/orchestrator.h"

#include <algorithm>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "common/block_hash.h"
#include "prfaas/v1/worker.grpc.pb.h"

namespace prfaas::router {

void CancelToken::Cancel() {
  std::lock_guard lock(mu_);
  cancelled_.store(true);
  for (auto* ctx : contexts_) ctx->TryCancel();
}

bool CancelToken::Attach(grpc::ClientContext* ctx) {
  std::lock_guard lock(mu_);
  if (cancelled_.load()) return false;
  contexts_.push_back(ctx);
  return true;
}

void CancelToken::Detach(grpc::ClientContext* ctx) {
  std::lock_guard lock(mu_);
  contexts_.erase(std::remove(contexts_.begin(), contexts_.end(), ctx), contexts_.end());
}

std::string_view PathLabel(PrefillPath path) {
  switch (path) {
    case PrefillPath::kRemotePrfaas: return "prfaas";
    case PrefillPath::kLocalPd:
    case PrefillPath::kColocated: return "pd";
    case PrefillPath::kNone: return "none";
  }
  return "none";
}

std::string_view ReasonLabel(Reason reason) {
  switch (reason) {
    case Reason::kShortUncached: return "below_threshold";
    case Reason::kLongUncached: return "above_threshold";
    case Reason::kRemoteUnavailable:
    case Reason::kLinkDown: return "prfaas_unavailable";
    case Reason::kLocalUnavailable: return "fallback";
    case Reason::kCacheAffinity: return "cache_hit";
    default: return "baseline";
  }
}

std::string PolicyLabel(std::string_view policy_name) {
  std::string s(policy_name);
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

void FillSampling(const Sampling& s, int32_t max_tokens, v1::SamplingParams* out) {
  out->set_temperature(s.temperature);
  out->set_top_k(s.top_k);
  out->set_top_p(s.top_p);
  out->set_seed(s.seed);
  out->set_max_tokens(max_tokens);
  for (int32_t id : s.stop_token_ids) out->add_stop_token_ids(id);
  out->set_ignore_eos(s.ignore_eos);
}

// Why a prefill call failed, as a reroute reason label.
const char* PrefillFailureReason(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "timeout";
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::DATA_LOSS: return "link_failed";  // KV transfer broke
    default: return "prefill_failed";
  }
}

}  // namespace

Orchestrator::Orchestrator(Options options, WorkerDirectory& directory, metrics::Registry& registry)
    : options_(options),
      directory_(directory),
      reroutes_(registry.Counter("prfaas_router_reroutes_total",
                                 "Requests re-routed after a failure.", {"reason"})),
      decisions_(registry.Counter("prfaas_router_routing_decisions_total",
                                  "Routing decisions, with the policy's reason.",
                                  {"policy", "path", "reason"})) {
  watchdog_ = std::thread([this] { WatchdogLoop(); });
}

Orchestrator::~Orchestrator() {
  {
    std::lock_guard lock(watch_mu_);
    stopping_ = true;
  }
  watch_cv_.notify_all();
  watchdog_.join();
}

void Orchestrator::WatchdogLoop() {
  std::unique_lock lock(watch_mu_);
  while (!stopping_) {
    watch_cv_.wait_for(lock, std::chrono::milliseconds(20));
    const int64_t now = SteadyNs();
    for (Watch* w : watches_) {
      if (!w->fired.load() && now > w->deadline_ns.load()) {
        w->fired.store(true);
        w->ctx->TryCancel();
      }
    }
  }
}

void Orchestrator::AddWatch(Watch* w) {
  std::lock_guard lock(watch_mu_);
  watches_.push_back(w);
}

void Orchestrator::RemoveWatch(Watch* w) {
  std::lock_guard lock(watch_mu_);
  watches_.erase(std::remove(watches_.begin(), watches_.end(), w), watches_.end());
}

Result<GenerateOutcome> Orchestrator::Generate(const GenerateRequest& request, CancelToken& cancel,
                                               const TokenSink& sink, const RoutedHook& routed) {
  GenerateOutcome out;
  out.prompt_tokens = static_cast<int64_t>(request.prompt.size());
  if (request.prompt.empty()) return InvalidArgument("empty prompt");
  const int32_t max_tokens = std::max(1, request.sampling.max_tokens);
  const std::vector<BlockHash> hashes = ChainedBlockHashes(request.prompt, directory_.block_size());
  RequestInfo info;
  info.prompt_tokens = static_cast<uint32_t>(request.prompt.size());
  info.expected_output_tokens = static_cast<uint32_t>(max_tokens);
  info.block_hashes = hashes;

  std::vector<int32_t> generated;
  std::vector<WorkerIndex> exclude;
  int prefill_failures = 0, decode_failures = 0;
  bool force_local = false, first = true;
  std::string last_failure;

  auto deliver = [&](std::span<const int32_t> tokens) {
    if (tokens.empty()) return;
    generated.insert(generated.end(), tokens.begin(), tokens.end());
    out.completion_tokens = static_cast<int64_t>(generated.size());
    if (!sink(tokens)) cancel.Cancel();
  };
  auto ms_from_now = [](std::chrono::milliseconds d) {
    return SteadyNs() + std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  };

  while (true) {
    if (cancel.cancelled()) return Cancelled("request cancelled");
    // After a prefill failure (retries used up, or no other prefill worker) and when resuming
    // after a decode failure, only a decode worker is needed: it prefills locally.
    const bool decode_only = force_local || !generated.empty();
    Decision d = decode_only ? directory_.RouteDecodeOnly(info, exclude, Now())
                             : directory_.Route(info, exclude, Now(), /*charge=*/true);
    if (!d.ok() && !decode_only && prefill_failures > 0) {
      d = directory_.RouteDecodeOnly(info, exclude, Now());
    }
    if (!d.ok()) {
      std::string msg =
          last_failure.empty()
              ? fmt::format("no worker can take the request: {}", d.explanation)
              : fmt::format("{}; no other worker left: {}", last_failure, d.explanation);
      return Unavailable(msg);
    }
    if (first) {
      first = false;
      out.path = std::string(PathLabel(d.path));
      decisions_
          .WithLabels(
              {PolicyLabel(directory_.policy_name()), out.path, std::string(ReasonLabel(d.reason))})
          .Inc();
      if (routed) routed(d);
    }
    const WorkerIndex dw = d.decode_worker;
    const WorkerIndex pw = d.prefill_worker;
    const bool local =
        force_local || !generated.empty() || d.path == PrefillPath::kColocated || pw == kNoWorker;
    bool prefill_charged = pw != kNoWorker && d.path != PrefillPath::kColocated;
    auto release_prefill = [&] {
      if (prefill_charged) directory_.ReleasePrefill(pw, d.uncached_tokens);
      prefill_charged = false;
    };
    if (local) release_prefill();
    out.decode_worker = directory_.WorkerId(dw);
    out.prefill_worker = local ? out.decode_worker : directory_.WorkerId(pw);
    spdlog::debug("attempt: prefill {} decode {} local {} ({})", out.prefill_worker,
                  out.decode_worker, local, d.explanation);

    // ---- open the decode stream ----
    auto decode_stub = v1::DecodeService::NewStub(directory_.Channel(dw));
    grpc::ClientContext dctx;
    Watch watch{&dctx, {ms_from_now(options_.ticket_timeout)}, {false}};
    if (!cancel.Attach(&dctx)) {
      release_prefill();
      directory_.ReleaseDecode(dw);
      return Cancelled("request cancelled");
    }
    AddWatch(&watch);
    v1::DecodeRequest dreq;
    dreq.set_request_id(request.request_id);
    dreq.mutable_prompt_token_ids()->Add(request.prompt.begin(), request.prompt.end());
    const int32_t remaining = max_tokens - static_cast<int32_t>(generated.size());
    FillSampling(request.sampling, remaining, dreq.mutable_sampling());
    dreq.mutable_resume_token_ids()->Add(generated.begin(), generated.end());
    dreq.set_local_prefill(local);
    auto reader = decode_stub->Decode(&dctx, dreq);
    v1::DecodeEvent ev;

    auto end_attempt = [&]() -> grpc::Status {
      grpc::Status s = reader->Finish();
      RemoveWatch(&watch);
      cancel.Detach(&dctx);
      release_prefill();
      directory_.ReleaseDecode(dw);
      return s;
    };
    auto decode_failed = [&](const std::string& why) -> Status {
      const char* reason = watch.fired.load() ? "timeout" : "decode_failed";
      last_failure = fmt::format("decode worker {} failed: {}", out.decode_worker, why);
      spdlog::warn("{}", last_failure);
      directory_.MarkFailed(dw, Now(), why);
      exclude.push_back(dw);
      if (++decode_failures > options_.max_decode_retries) {
        return Unavailable(fmt::format("{} (retries exhausted)", last_failure));
      }
      reroutes_.WithLabels({reason}).Inc();
      ++out.reroutes;
      return Status::Ok();
    };

    if (!local) {
      if (!reader->Read(&ev) || !ev.has_ticket()) {
        dctx.TryCancel();
        grpc::Status s = end_attempt();
        if (cancel.cancelled()) return Cancelled("request cancelled");
        PRFAAS_RETURN_IF_ERROR(
            decode_failed(s.ok() ? "decode stream sent no transfer ticket" : s.error_message()));
        continue;
      }
      // ---- prefill with the ticket ----
      grpc::ClientContext pctx;
      pctx.set_deadline(std::chrono::system_clock::now() + options_.prefill_timeout);
      watch.deadline_ns.store(ms_from_now(options_.prefill_timeout + options_.token_idle_timeout));
      v1::PrefillRequest preq;
      preq.set_request_id(request.request_id);
      preq.mutable_prompt_token_ids()->Add(request.prompt.begin(), request.prompt.end());
      FillSampling(request.sampling, max_tokens, preq.mutable_sampling());
      *preq.mutable_ticket() = ev.ticket();
      v1::PrefillReply prep;
      grpc::Status ps;
      if (cancel.Attach(&pctx)) {
        auto prefill_stub = v1::PrefillService::NewStub(directory_.Channel(pw));
        ps = prefill_stub->Prefill(&pctx, preq, &prep);
        cancel.Detach(&pctx);
      } else {
        ps = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      }
      release_prefill();
      if (!ps.ok()) {
        dctx.TryCancel();
        end_attempt();
        if (cancel.cancelled()) return Cancelled("request cancelled");
        const char* reason = PrefillFailureReason(ps);
        last_failure =
            fmt::format("prefill on {} failed: {}", out.prefill_worker, ps.error_message());
        spdlog::warn("{} ({})", last_failure, reason);
        directory_.MarkFailed(pw, Now(), ps.error_message());
        exclude.push_back(pw);
        if (++prefill_failures > options_.max_prefill_retries) force_local = true;
        reroutes_.WithLabels({reason}).Inc();
        ++out.reroutes;
        continue;
      }
      out.cached_tokens = prep.cached_prefix_tokens();
      const int32_t first_token = prep.first_token_id();
      deliver(std::span<const int32_t>(&first_token, 1));
      // The bundle carries KV and state only: the decode worker needs the first token as the
      // input of its first step.
      v1::StartDecodeRequest sreq;
      sreq.set_ticket_id(ev.ticket().ticket_id());
      sreq.set_request_id(request.request_id);
      sreq.set_first_token_id(first_token);
      v1::StartDecodeReply srep;
      grpc::ClientContext sctx;
      sctx.set_deadline(std::chrono::system_clock::now() + options_.ticket_timeout);
      grpc::Status ss = decode_stub->StartDecode(&sctx, sreq, &srep);
      if (!ss.ok()) {
        dctx.TryCancel();
        end_attempt();
        if (cancel.cancelled()) return Cancelled("request cancelled");
        PRFAAS_RETURN_IF_ERROR(decode_failed("StartDecode: " + ss.error_message()));
        continue;
      }
    }

    // ---- stream tokens ----
    watch.deadline_ns.store(ms_from_now(options_.token_idle_timeout));
    bool finished = false;
    v1::Finished fin;
    while (!cancel.cancelled() && reader->Read(&ev)) {
      watch.deadline_ns.store(ms_from_now(options_.token_idle_timeout));
      if (ev.has_tokens()) {
        const auto& ids = ev.tokens().token_ids();
        deliver(std::span<const int32_t>(ids.data(), static_cast<size_t>(ids.size())));
      } else if (ev.has_finished()) {
        fin = ev.finished();
        finished = true;
        break;
      }
    }
    if (!finished) dctx.TryCancel();
    grpc::Status s = end_attempt();
    if (cancel.cancelled()) {
      out.finish = Finish::kCancelled;
      return Cancelled("request cancelled");
    }
    if (finished && fin.reason() != v1::FINISH_REASON_ERROR) {
      out.finish = fin.reason() == v1::FINISH_REASON_LENGTH      ? Finish::kLength
                   : fin.reason() == v1::FINISH_REASON_CANCELLED ? Finish::kCancelled
                                                                 : Finish::kStop;
      if (fin.usage().cached_prompt_tokens() > out.cached_tokens && generated.size() <= 1) {
        out.cached_tokens = fin.usage().cached_prompt_tokens();
      }
      return out;
    }
    if (static_cast<int32_t>(generated.size()) >= max_tokens) {
      out.finish = Finish::kLength;  // it failed after the last token: nothing left to do
      return out;
    }
    PRFAAS_RETURN_IF_ERROR(decode_failed(finished ? fin.error() : s.error_message()));
  }
}

}  // namespace prfaas::router
