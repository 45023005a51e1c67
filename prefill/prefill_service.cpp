#include "prefill/prefill_service.h"

#include <spdlog/spdlog.h>

#include <future>

#include "common/log.h"
#include "serving/bundle_codec.h"
#include "serving/grpc_status.h"
#include "serving/prefill_runner.h"
#include "serving/service_common.h"

namespace prfaas::prefill {

namespace {

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

PrefillService::PrefillService(serving::EngineLoop& loop, serving::Capacity& capacity,
                               serving::PrefixCache* cache, PrefillOptions options,
                               metrics::Registry& registry)
    : loop_(loop),
      capacity_(capacity),
      cache_(cache),
      options_(std::move(options)),
      metrics_(registry, "prefill"),
      prefill_tokens_(
          registry.Counter("prfaas_worker_prefill_tokens_total", "Prompt tokens computed.").Get()),
      prefill_seconds_(registry
                           .Histogram("prfaas_worker_prefill_duration_seconds",
                                      "Prefill compute of one request.", {},
                                      metrics::LatencyBuckets())
                           .Get()),
      queue_seconds_(registry
                         .Histogram("prfaas_worker_queue_wait_seconds",
                                    "Admission to first scheduled step.", {"service"},
                                    metrics::LatencyBuckets())
                         .WithLabels({"prefill"})) {}

PrefillService::~PrefillService() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [ep, s] : senders_) s->Close();
}

void PrefillService::SetAccepting(bool accepting, std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = accepting;
  not_accepting_reason_ = std::move(reason);
}

int64_t PrefillService::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_;
}

std::vector<transport::LinkStats> PrefillService::Links() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<transport::LinkStats> out;
  for (const auto& [ep, s] : senders_) out.push_back(s->Stats());
  return out;
}

Result<transport::Sender*> PrefillService::SenderFor(const std::string& backend,
                                                     const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = backend + "://" + endpoint;
  auto it = senders_.find(key);
  if (it != senders_.end() && it->second->Stats().healthy) return it->second.get();
  if (it != senders_.end()) {
    it->second->Close();
    senders_.erase(it);
  }
  std::unique_ptr<transport::Sender> sender;
  if (backend == "tcp" || backend.empty()) {
    auto colon = endpoint.rfind(':');
    if (colon == std::string::npos) {
      return InvalidArgument("transport endpoint '" + endpoint + "' is not host:port");
    }
    int port = std::atoi(endpoint.c_str() + colon + 1);
    if (port <= 0 || port > 65535)
      return InvalidArgument("bad port in endpoint '" + endpoint + "'");
    PRFAAS_ASSIGN_OR_RETURN(
        sender, transport::ConnectTcp(endpoint.substr(0, colon), static_cast<uint16_t>(port),
                                      options_.tcp));
  } else if (backend == "inproc") {
    PRFAAS_ASSIGN_OR_RETURN(sender, transport::ConnectInproc(endpoint, options_.tcp.common));
  } else {
    return Unimplemented("transport backend '" + backend + "' is not available in this worker");
  }
  auto* raw = sender.get();
  senders_[key] = std::move(sender);
  return raw;
}

grpc::Status PrefillService::Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                                     v1::PrefillReply* reply) {
  log::RequestScope scope(req->request_id());
  const auto t0 = std::chrono::steady_clock::now();
  const auto& cfg = loop_.config();
  const int64_t n = req->prompt_token_ids_size();
  const auto& ticket = req->ticket();
  const int64_t skip = ticket.cached_prefix_tokens();
  if (n == 0) return serving::ToGrpc(InvalidArgument("prompt_token_ids is empty"));
  if (skip < 0 || skip >= n) {
    return serving::ToGrpc(InvalidArgument("ticket.cached_prefix_tokens " + std::to_string(skip) +
                                           " must lie in [0, prompt length)"));
  }
  if (ticket.endpoint().empty()) return serving::ToGrpc(InvalidArgument("ticket has no endpoint"));
  for (int32_t t : req->prompt_token_ids()) {
    if (t < 0 || t >= cfg.vocab_size) {
      return serving::ToGrpc(
          InvalidArgument("token id " + std::to_string(t) + " outside the vocabulary"));
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_)
      return serving::ToGrpc(
          Unavailable("prefill service not accepting: " + not_accepting_reason_));
    ++in_flight_;
  }
  struct InFlightGuard {
    PrefillService* s;
    ~InFlightGuard() {
      std::lock_guard<std::mutex> lock(s->mu_);
      --s->in_flight_;
    }
  } guard{this};

  // FCFS admission on KV capacity.
  const int64_t bs = loop_.engine_options().kv_block_size;
  serving::Need need{(n + bs - 1) / bs, 1};
  metrics_.waiting.Add(1);
  Status admit = capacity_.ReserveWait(need, t0 + options_.queue_timeout,
                                       [ctx] { return ctx->IsCancelled(); });
  metrics_.waiting.Add(-1);
  if (!admit.ok()) {
    metrics_.Requests("rejected").Inc();
    return serving::ToGrpc(admit);
  }
  serving::Reservation reservation(&capacity_, need);
  const auto t_admit = std::chrono::steady_clock::now();
  queue_seconds_.Observe(Seconds(t_admit - t0));
  metrics_.running.Add(1);
  struct RunningGuard {
    metrics::Gauge& g;
    ~RunningGuard() { g.Add(-1); }
  } running_guard{metrics_.running};

  std::vector<int32_t> tokens(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
  auto hashes = std::make_shared<const std::vector<BlockHash>>(ChainedBlockHashes(tokens, bs));
  auto started = serving::StartSequence(loop_, cache_, hashes, n);
  if (!started.ok()) return serving::ToGrpc(started.status());
  const engine::SequenceId seq = started->seq;
  const int64_t cached = started->cached_tokens;
  struct SeqGuard {
    serving::EngineLoop& loop;
    engine::SequenceId seq;
    ~SeqGuard() {
      loop.Cancel(seq);
      Status st = loop.Call([s = seq](engine::Engine& e) { return e.Release(s); });
      if (!st.ok()) spdlog::error("releasing sequence {}: {}", seq, st.ToString());
    }
  } seq_guard{loop_, seq};

  // Prefill on the loop; the completion samples the first token and exports on the loop thread.
  struct Out {
    Status status;
    int32_t first = 0;
    engine::SequenceExport exp;
  };
  auto promise = std::make_shared<std::promise<Out>>();
  auto future = promise->get_future();
  tokens.erase(tokens.begin(), tokens.begin() + cached);
  auto sampling = serving::ToSampling(req->sampling());
  serving::EngineLoop* loop = &loop_;
  loop_.SubmitPrefill(
      seq, std::move(tokens),
      [promise, loop, seq, sampling, skip, n](Status st, std::vector<float> logits) {
        Out out;
        out.status = st;
        if (st.ok()) {
          out.first = kernels::cpu::SampleToken(logits, sampling, 0);
          // Runs on the loop thread already: export directly.
          loop->Post([promise, out, seq, skip, n](engine::Engine& e) mutable {
            auto exp = e.Export(seq, skip, n, /*include_state=*/true);
            if (!exp.ok())
              out.status = exp.status();
            else
              out.exp = std::move(exp).value();
            promise->set_value(std::move(out));
          });
          return;
        }
        promise->set_value(std::move(out));
      },
      serving::CacheFiller(cache_, seq, hashes));
  while (future.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
    if (ctx->IsCancelled()) {
      loop_.Cancel(seq);
      // The loop answers the promise (cancelled) shortly; wait for it so nothing dangles.
    }
  }
  Out out = future.get();
  if (!out.status.ok()) {
    metrics_.Requests("error").Inc();
    return serving::ToGrpc(out.status);
  }
  const auto t_computed = std::chrono::steady_clock::now();
  prefill_seconds_.Observe(Seconds(t_computed - t_admit));
  prefill_tokens_.Inc(static_cast<double>(n - cached));

  // Ship [skip, n) + state to the decode worker.
  auto desc = serving::DescribeExport(cfg, out.exp, ticket.ticket_id(), req->request_id(), skip,
                                      static_cast<uint32_t>(bs));
  if (ticket.model_fingerprint() != 0 && ticket.model_fingerprint() != out.exp.model_fingerprint) {
    metrics_.Requests("error").Inc();
    return serving::ToGrpc(FailedPrecondition("decode worker runs a different model (fingerprint " +
                                              std::to_string(ticket.model_fingerprint()) +
                                              " vs ours " +
                                              std::to_string(out.exp.model_fingerprint) + ")"));
  }
  Status sent = [&]() -> Status {
    PRFAAS_ASSIGN_OR_RETURN(transport::Sender * sender,
                            SenderFor(ticket.backend(), ticket.endpoint()));
    transport::Ticket t{ticket.ticket_id(), static_cast<uint64_t>(ticket.byte_budget()),
                        static_cast<uint64_t>(skip)};
    PRFAAS_ASSIGN_OR_RETURN(auto bundle, sender->Begin(desc.header, t));
    for (size_t i = 0; i < out.exp.segments.size(); ++i) {
      if (ctx->IsCancelled()) {
        bundle->Abort("prefill RPC cancelled");
        return Cancelled("prefill RPC cancelled");
      }
      const auto& bytes = out.exp.segments[i].bytes;
      PRFAAS_RETURN_IF_ERROR(bundle->Append(desc.infos[i], {bytes.data(), bytes.size()}));
    }
    return bundle->Commit();
  }();
  if (!sent.ok()) {
    metrics_.Requests("error").Inc();
    spdlog::warn("KV transfer to {} failed: {}", ticket.endpoint(), sent.ToString());
    return serving::ToGrpc(sent.WithContext("KV transfer to " + ticket.endpoint()));
  }
  uint64_t bytes = 0;
  for (const auto& s : out.exp.segments) bytes += s.bytes.size();
  reply->set_first_token_id(out.first);
  reply->set_cached_prefix_tokens(cached);
  reply->set_transferred_bytes(static_cast<int64_t>(bytes));
  reply->set_queue_seconds(Seconds(t_admit - t0));
  reply->set_compute_seconds(Seconds(t_computed - t_admit));
  metrics_.Requests("ok").Inc();
  return grpc::Status::OK;
}

}  // namespace prfaas::prefill
