#include "prefill/prefill_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>

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
                         .WithLabels({"prefill"})),
      segments_overlapped_(registry
                               .Counter("prfaas_worker_kv_export_segments_total",
                                        "KV bundle segments handed to the transport while the "
                                        "prompt was still computing, and after it finished.",
                                        {"phase"})
                               .WithLabels({"during_prefill"})),
      segments_final_(registry
                          .Counter("prfaas_worker_kv_export_segments_total",
                                   "KV bundle segments handed to the transport while the "
                                   "prompt was still computing, and after it finished.",
                                   {"phase"})
                          .WithLabels({"after_prefill"})),
      fingerprint_(loop.Call([](engine::Engine& e) { return e.ModelFingerprint(); })) {}

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
  std::string address = endpoint;
  if (endpoint.find("://") == std::string::npos && !backend.empty() && backend != "tcp") {
    address = backend + "://" + endpoint;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = senders_.find(address);
  if (it != senders_.end() && it->second->Stats().healthy) return it->second.get();
  if (it != senders_.end()) {
    it->second->Close();
    senders_.erase(it);
  }
  PRFAAS_ASSIGN_OR_RETURN(std::unique_ptr<transport::Sender> sender,
                          transport::Connect(address, options_.transport));
  auto* raw = sender.get();
  senders_[address] = std::move(sender);
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

  if (ticket.model_fingerprint() != 0 && ticket.model_fingerprint() != fingerprint_) {
    metrics_.Requests("error").Inc();
    return serving::ToGrpc(FailedPrecondition("decode worker runs a different model (fingerprint " +
                                              std::to_string(ticket.model_fingerprint()) +
                                              " vs ours " + std::to_string(fingerprint_) + ")"));
  }
  // Open the bundle before computing: KV pieces leave while later chunks still compute.
  auto opened = [&]() -> Result<std::unique_ptr<transport::OutboundBundle>> {
    PRFAAS_ASSIGN_OR_RETURN(transport::Sender * sender,
                            SenderFor(ticket.backend(), ticket.endpoint()));
    transport::Ticket t{ticket.ticket_id(), static_cast<uint64_t>(ticket.byte_budget()),
                        static_cast<uint64_t>(skip)};
    return sender->Begin(
        serving::MakeBundleHeader(cfg, fingerprint_, ticket.ticket_id(), req->request_id(), skip, n,
                                  static_cast<uint32_t>(bs)),
        t);
  }();
  if (!opened.ok()) {
    metrics_.Requests("error").Inc();
    spdlog::warn("KV transfer to {} failed: {}", ticket.endpoint(), opened.status().ToString());
    return serving::ToGrpc(opened.status().WithContext("KV transfer to " + ticket.endpoint()));
  }

  // The loop thread exports each newly completed run of blocks in [skip, n) as prefill advances
  // (those rows never change again) and, once the prompt is done, the rest plus the GDN state;
  // this thread appends the pieces to the bundle as they come.
  struct Stream {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<engine::SequenceExport>> pieces;
    int64_t exported = 0;   // KV rows [skip, exported) handed out so far (loop thread only)
    bool computed = false;  // the prefill finished (first token sampled)
    bool final = false;     // the last piece (with the state) is queued, or failed
    Status status;
    int32_t first = 0;
    std::chrono::steady_clock::time_point computed_at;
  };
  auto stream = std::make_shared<Stream>();
  stream->exported = skip;
  // Stream only whole blocks short of the last token: the final export always has KV to carry.
  const int64_t stream_limit = ((n - 1) / bs) * bs;
  auto cache_filler = serving::CacheFiller(cache_, seq, hashes);
  auto progress = [stream, cache_filler, seq, bs, stream_limit](engine::Engine& e, int64_t len) {
    if (cache_filler) cache_filler(e, len);
    const int64_t upto = std::min((len / bs) * bs, stream_limit);
    if (upto <= stream->exported) return;
    auto piece = e.Export(seq, stream->exported, upto, /*include_state=*/false);
    if (!piece.ok()) return;  // the final export reports the error
    stream->exported = upto;
    std::lock_guard<std::mutex> lock(stream->mu);
    stream->pieces.push_back(std::make_shared<engine::SequenceExport>(std::move(piece).value()));
    stream->cv.notify_all();
  };
  tokens.erase(tokens.begin(), tokens.begin() + cached);
  auto sampling = serving::ToSampling(req->sampling());
  serving::EngineLoop* loop = &loop_;
  loop_.SubmitPrefill(
      seq, std::move(tokens),
      [stream, loop, seq, sampling, n](Status st, std::vector<float> logits) {
        if (!st.ok()) {
          std::lock_guard<std::mutex> lock(stream->mu);
          stream->status = st;
          stream->computed = stream->final = true;
          stream->cv.notify_all();
          return;
        }
        {
          std::lock_guard<std::mutex> lock(stream->mu);
          stream->first = kernels::cpu::SampleToken(logits, sampling, 0);
          stream->computed = true;
          stream->computed_at = std::chrono::steady_clock::now();
        }
        // After the job's last progress call, so `exported` is final.
        loop->Post([stream, seq, n](engine::Engine& e) {
          auto last = e.Export(seq, stream->exported, n, /*include_state=*/true);
          std::lock_guard<std::mutex> lock(stream->mu);
          if (!last.ok()) {
            stream->status = last.status();
          } else {
            stream->pieces.push_back(
                std::make_shared<engine::SequenceExport>(std::move(last).value()));
          }
          stream->final = true;
          stream->cv.notify_all();
        });
      },
      progress);

  // Append pieces as they arrive. The bundle sends straight from the pieces' memory, so `keep`
  // holds them until Commit/Abort (declared before `bundle`, destroyed after it).
  std::vector<std::shared_ptr<engine::SequenceExport>> keep;
  std::unique_ptr<transport::OutboundBundle> bundle = std::move(opened).value();
  uint64_t bytes = 0;
  Status sent = [&]() -> Status {
    for (;;) {
      std::shared_ptr<engine::SequenceExport> piece;
      bool last = false, computed = false;
      {
        std::unique_lock<std::mutex> lock(stream->mu);
        stream->cv.wait_for(lock, std::chrono::milliseconds(50),
                            [&] { return !stream->pieces.empty() || stream->final; });
        if (!stream->status.ok()) return stream->status;
        if (!stream->pieces.empty()) {
          piece = std::move(stream->pieces.front());
          stream->pieces.pop_front();
          last = stream->final && stream->pieces.empty();
        }
        computed = stream->computed;
      }
      if (ctx->IsCancelled()) return Cancelled("prefill RPC cancelled");
      if (!piece) continue;
      keep.push_back(piece);
      for (const auto& seg : piece->segments) {
        if (seg.bytes.empty()) continue;
        PRFAAS_RETURN_IF_ERROR(
            bundle->Append(serving::DescribeSegment(seg, static_cast<uint32_t>(bs), last),
                           {seg.bytes.data(), seg.bytes.size()}));
        bytes += seg.bytes.size();
        (computed ? segments_final_ : segments_overlapped_).Inc();
      }
      if (last) return bundle->Commit();
    }
  }();
  if (!sent.ok()) {
    bundle->Abort(sent.message());
    loop_.Cancel(seq);
    metrics_.Requests(sent.code() == StatusCode::kCancelled ? "cancelled" : "error").Inc();
    spdlog::warn("prefill / KV transfer to {} failed: {}", ticket.endpoint(), sent.ToString());
    return serving::ToGrpc(sent.WithContext("KV transfer to " + ticket.endpoint()));
  }
  const auto t_computed = stream->computed_at;
  prefill_seconds_.Observe(Seconds(t_computed - t_admit));
  prefill_tokens_.Inc(static_cast<double>(n - cached));
  reply->set_first_token_id(stream->first);
  reply->set_cached_prefix_tokens(cached);
  reply->set_transferred_bytes(static_cast<int64_t>(bytes));
  reply->set_queue_seconds(Seconds(t_admit - t0));
  reply->set_compute_seconds(Seconds(t_computed - t_admit));
  metrics_.Requests("ok").Inc();
  return grpc::Status::OK;
}

}  // namespace prfaas::prefill
