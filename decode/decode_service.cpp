#include "decode/decode_service.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <optional>

#include "common/log.h"
#include "serving/bundle_codec.h"
#include "serving/grpc_status.h"
#include "serving/prefill_runner.h"
#include "serving/service_common.h"

namespace prfaas::decode {

using serving::Finish;

// State of one Decode RPC, shared between the RPC thread, transport callbacks, StartDecode and
// the engine loop.
struct DecodeService::Call {
  std::string request_id;
  v1::DecodeRequest req;
  engine::SequenceId seq = 0;
  uint64_t ticket = 0;
  int64_t cached_tokens = 0;  // prefix reused from this worker's cache
  int64_t prefilled = 0;      // tokens the bundle or the local prefill brings (prompt + resumed)

  std::mutex mu;
  std::condition_variable cv;
  bool installed = false;              // bundle imported (or local prefill done)
  std::optional<int32_t> first_token;  // from StartDecode (remote) or local sampling
  bool started = false;                // decode job submitted
  std::deque<int32_t> tokens;          // generated, not yet written
  std::optional<std::pair<Finish, Status>> finished;
  int64_t generated = 0;  // tokens counted in usage (includes the first)
  // The sequence's token ids: prefilled tokens, then every decode input (first token, generated
  // tokens). The last entry may not be in the engine yet. Used to cache the blocks at release.
  std::vector<int32_t> seq_tokens;
};

namespace {

v1::FinishReason ToProto(Finish f) {
  switch (f) {
    case Finish::kStop: return v1::FINISH_REASON_STOP;
    case Finish::kLength: return v1::FINISH_REASON_LENGTH;
    case Finish::kCancelled: return v1::FINISH_REASON_CANCELLED;
    case Finish::kError: return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_ERROR;
}

}  // namespace

DecodeService::DecodeService(serving::EngineLoop& loop, serving::Capacity& capacity,
                             serving::PrefixCache* cache, DecodeOptions options,
                             metrics::Registry& registry)
    : loop_(loop),
      capacity_(capacity),
      cache_(cache),
      options_(std::move(options)),
      metrics_(registry, "decode"),
      tokens_(registry.Counter("prfaas_worker_decode_tokens_total", "Tokens generated.").Get()) {}

DecodeService::~DecodeService() = default;

void DecodeService::SetAccepting(bool accepting, std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = accepting;
  not_accepting_reason_ = std::move(reason);
}

int64_t DecodeService::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_;
}

void DecodeService::Fail(const std::shared_ptr<Call>& call, const Status& why) {
  std::lock_guard<std::mutex> lock(call->mu);
  if (!call->finished) call->finished = {Finish::kError, why};
  call->cv.notify_all();
}

// Starts the decode job once both the KV (bundle or local prefill) and the first token are there.
void DecodeService::MaybeStart(const std::shared_ptr<Call>& call) {
  serving::EngineLoop::DecodeJob job;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->started || call->finished || !call->installed || !call->first_token) return;
    call->started = true;
    const auto& req = call->req;
    int64_t resumed = req.resume_token_ids_size();
    job.seq = call->seq;
    job.next_input = *call->first_token;
    call->seq_tokens.push_back(job.next_input);
    job.sampling = serving::ToSampling(req.sampling());
    // max_tokens counts the tokens still to generate: after a resume, all of them are new;
    // otherwise the first token (sampled at prefill) is one of them.
    job.counter = static_cast<uint64_t>(std::max<int64_t>(resumed, 1));
    job.remaining = resumed > 0 ? req.sampling().max_tokens() : req.sampling().max_tokens() - 1;
    for (int32_t s : req.sampling().stop_token_ids()) job.stop_ids.push_back(s);
    int32_t eos = loop_.config().eos_token_id;
    if (!req.sampling().ignore_eos() && eos >= 0) job.stop_ids.push_back(eos);
    // The first token itself may already end the request.
    if (std::find(job.stop_ids.begin(), job.stop_ids.end(), job.next_input) != job.stop_ids.end()) {
      call->finished = {Finish::kStop, Status::Ok()};
      call->cv.notify_all();
      return;
    }
  }
  std::weak_ptr<Call> weak = call;
  job.on_token = [this, weak](int32_t tok) {
    auto c = weak.lock();
    if (!c) return false;
    std::lock_guard<std::mutex> lock(c->mu);
    c->tokens.push_back(tok);
    c->seq_tokens.push_back(tok);
    c->generated++;
    tokens_.Inc();
    c->cv.notify_all();
    return !c->finished.has_value();
  };
  job.on_finish = [weak](Finish f, Status st) {
    auto c = weak.lock();
    if (!c) return;
    std::lock_guard<std::mutex> lock(c->mu);
    if (!c->finished) c->finished = {f, st};
    c->cv.notify_all();
  };
  loop_.SubmitDecode(std::move(job));
}

grpc::Status DecodeService::Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                                   grpc::ServerWriter<v1::DecodeEvent>* writer) {
  log::RequestScope scope(req->request_id());
  const auto& cfg = loop_.config();
  const int64_t n = req->prompt_token_ids_size();
  const int64_t max_tokens = req->sampling().max_tokens();
  const int64_t resumed = req->resume_token_ids_size();
  if (n == 0) return serving::ToGrpc(InvalidArgument("prompt_token_ids is empty"));
  if (max_tokens <= 0) return serving::ToGrpc(InvalidArgument("sampling.max_tokens must be > 0"));
  if (resumed > 0 && !req->local_prefill()) {
    return serving::ToGrpc(InvalidArgument("resume_token_ids requires local_prefill"));
  }
  for (int32_t t : req->prompt_token_ids()) {
    if (t < 0 || t >= cfg.vocab_size) {
      return serving::ToGrpc(InvalidArgument("token id " + std::to_string(t) +
                                             " outside the vocabulary [0, " +
                                             std::to_string(cfg.vocab_size) + ")"));
    }
  }
  if (n + resumed + max_tokens > options_.max_context_tokens) {
    return serving::ToGrpc(
        OutOfRange("prompt + resumed + max_tokens = " + std::to_string(n + resumed + max_tokens) +
                   " exceeds the context limit " + std::to_string(options_.max_context_tokens)));
  }
  if (!req->local_prefill() && receiver_ == nullptr) {
    return serving::ToGrpc(FailedPrecondition("this worker has no transport receiver"));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_)
      return serving::ToGrpc(Unavailable("decode service not accepting: " + not_accepting_reason_));
    ++in_flight_;
  }
  struct InFlightGuard {
    DecodeService* s;
    ~InFlightGuard() {
      std::lock_guard<std::mutex> lock(s->mu_);
      --s->in_flight_;
    }
  } in_flight_guard{this};

  // Admission: the most this request can ever hold.
  const int64_t bs = loop_.engine_options().kv_block_size;
  serving::Need need{(n + resumed + max_tokens + bs - 1) / bs, 1};
  Status admit = capacity_.TryReserve(need);
  if (!admit.ok()) {
    metrics_.Requests("rejected").Inc();
    return serving::ToGrpc(admit);
  }
  serving::Reservation reservation(&capacity_, need);

  auto call = std::make_shared<Call>();
  call->request_id = req->request_id();
  call->req = *req;
  // Local prefill reuses a checkpointed prefix of the cache; a remote bundle completes the
  // longest cached attention prefix (it brings the state, so no checkpoint is needed).
  std::vector<int32_t> tokens(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
  for (int64_t i = 0; i + 1 < resumed; ++i) tokens.push_back(req->resume_token_ids(i));
  auto hashes = std::make_shared<const std::vector<BlockHash>>(
      ChainedBlockHashes(tokens, static_cast<int>(bs)));
  auto started = req->local_prefill() ? serving::StartSequence(loop_, cache_, hashes,
                                                               static_cast<int64_t>(tokens.size()))
                                      : serving::StartFromCachedBlocks(loop_, cache_, hashes, n);
  if (!started.ok()) return serving::ToGrpc(started.status());
  call->seq = started->seq;
  call->cached_tokens = started->cached_tokens;
  call->prefilled = static_cast<int64_t>(tokens.size());
  call->seq_tokens = tokens;
  metrics_.waiting.Add(1);
  bool counted_waiting = true;

  // Remote prefill: the ticket asks for KV [cached, n) and the state at n.
  if (!req->local_prefill()) {
    transport::TicketSpec spec;
    spec.budget_bytes = serving::BundleBytes(cfg, call->cached_tokens, n);
    spec.model_fingerprint = loop_.Call([](engine::Engine& e) { return e.ModelFingerprint(); });
    spec.skip_tokens = static_cast<uint64_t>(call->cached_tokens);
    spec.idle_timeout = options_.transfer_timeout;
    transport::Ticket t = receiver_->IssueTicket(spec);
    call->ticket = t.id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      by_ticket_[t.id] = call;
    }
    v1::DecodeEvent ev;
    auto* tk = ev.mutable_ticket();
    tk->set_ticket_id(t.id);
    tk->set_endpoint(receiver_->address());
    tk->set_backend(options_.transport_backend);
    tk->set_byte_budget(static_cast<int64_t>(t.budget_bytes));
    tk->set_cached_prefix_tokens(static_cast<int64_t>(t.skip_tokens));
    tk->set_model_fingerprint(spec.model_fingerprint);
    if (!writer->Write(ev)) {
      Fail(call, Cancelled("client went away before the ticket was delivered"));
    }
  } else {
    // Local prefill of the prompt (+ all but the last resumed token), after the cached prefix.
    tokens.erase(tokens.begin(), tokens.begin() + started->cached_tokens);
    std::weak_ptr<Call> weak = call;
    auto sampling = serving::ToSampling(req->sampling());
    loop_.SubmitPrefill(
        call->seq, std::move(tokens),
        [this, weak, sampling, resumed](Status st, std::vector<float> logits) {
          auto c = weak.lock();
          if (!c) return;
          if (!st.ok()) return Fail(c, st);
          {
            std::lock_guard<std::mutex> lock(c->mu);
            c->installed = true;
            if (resumed > 0) {
              c->first_token = c->req.resume_token_ids(resumed - 1);
            } else {
              c->first_token = kernels::cpu::SampleToken(logits, sampling, 0);
              c->tokens.push_back(*c->first_token);
              c->generated = 1;
              tokens_.Inc();
            }
            c->cv.notify_all();
          }
          MaybeStart(c);
        },
        serving::CacheFiller(cache_, call->seq, hashes));
  }

  // Stream tokens until the call finishes or the client goes away.
  const auto deadline = std::chrono::steady_clock::now() + options_.transfer_timeout;
  bool client_gone = false;
  Status final_status;
  Finish final_reason = Finish::kError;
  for (;;) {
    std::vector<int32_t> batch;
    std::optional<std::pair<Finish, Status>> fin;
    {
      std::unique_lock<std::mutex> lock(call->mu);
      call->cv.wait_for(lock, std::chrono::milliseconds(50),
                        [&] { return !call->tokens.empty() || call->finished.has_value(); });
      batch.assign(call->tokens.begin(), call->tokens.end());
      call->tokens.clear();
      if (call->started && counted_waiting) {
        metrics_.waiting.Add(-1);
        metrics_.running.Add(1);
        counted_waiting = false;
      }
      if (!call->started && !call->finished && std::chrono::steady_clock::now() > deadline) {
        call->finished = {
            Finish::kError,
            DeadlineExceeded("no KV bundle and first token within " +
                             std::to_string(options_.transfer_timeout.count()) + " ms")};
      }
      fin = call->finished;
    }
    if (!batch.empty()) {
      v1::DecodeEvent ev;
      for (int32_t t : batch) ev.mutable_tokens()->add_token_ids(t);
      if (!writer->Write(ev)) client_gone = true;
    }
    if (ctx->IsCancelled()) client_gone = true;
    if (client_gone) {
      final_reason = Finish::kCancelled;
      final_status = Cancelled("client cancelled the decode stream");
      break;
    }
    if (fin) {
      final_reason = fin->first;
      final_status = fin->second;
      break;
    }
  }

  // Teardown: stop the job / transfer, release the sequence.
  {
    std::lock_guard<std::mutex> lock(mu_);
    by_ticket_.erase(call->ticket);
  }
  if (call->ticket != 0 && receiver_ != nullptr) {
    bool installed;
    {
      std::lock_guard<std::mutex> lock(call->mu);
      installed = call->installed;
    }
    if (!installed) receiver_->Cancel(call->ticket, "decode request ended");
  }
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (!call->finished) call->finished = {final_reason, final_status};
  }
  loop_.Cancel(call->seq);
  engine::SequenceId seq = call->seq;
  // Keep what this request computed or received: the prompt's blocks of complete prefill pieces
  // (bit-identical to a cold prefill), and with cache_generated_blocks the rest too.
  std::vector<int32_t> seq_tokens;
  int64_t cacheable = 0;
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->installed && cache_) {
      seq_tokens = std::move(call->seq_tokens);
      cacheable = options_.cache_generated_blocks ? static_cast<int64_t>(seq_tokens.size())
                                                  : cache_->SettledLength(call->prefilled);
    }
  }
  Status released = loop_.Call([this, seq, &seq_tokens, cacheable](engine::Engine& e) {
    serving::CacheSequence(e, cache_, seq, seq_tokens, cacheable);
    return e.Release(seq);
  });
  if (!released.ok()) spdlog::error("releasing sequence {}: {}", seq, released.ToString());
  if (counted_waiting)
    metrics_.waiting.Add(-1);
  else
    metrics_.running.Add(-1);

  std::string status_label = final_reason == Finish::kError       ? "error"
                             : final_reason == Finish::kCancelled ? "cancelled"
                                                                  : "ok";
  metrics_.Requests(status_label).Inc();
  if (client_gone) return grpc::Status(grpc::StatusCode::CANCELLED, "client cancelled");
  if (final_reason == Finish::kError) {
    spdlog::warn("decode failed: {}", final_status.ToString());
    return serving::ToGrpc(final_status);
  }
  v1::DecodeEvent done;
  auto* f = done.mutable_finished();
  f->set_reason(ToProto(final_reason));
  f->mutable_usage()->set_prompt_tokens(n);
  f->mutable_usage()->set_cached_prompt_tokens(call->cached_tokens);
  {
    std::lock_guard<std::mutex> lock(call->mu);
    f->mutable_usage()->set_completion_tokens(call->generated);
  }
  writer->Write(done);
  return grpc::Status::OK;
}

grpc::Status DecodeService::StartDecode(grpc::ServerContext*, const v1::StartDecodeRequest* req,
                                        v1::StartDecodeReply*) {
  std::shared_ptr<Call> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_ticket_.find(req->ticket_id());
    if (it != by_ticket_.end()) call = it->second;
  }
  if (!call) {
    return serving::ToGrpc(
        NotFound("no decode request waits on ticket " + std::to_string(req->ticket_id())));
  }
  int32_t tok = req->first_token_id();
  if (tok < 0 || tok >= loop_.config().vocab_size) {
    return serving::ToGrpc(InvalidArgument("first_token_id out of the vocabulary"));
  }
  {
    std::lock_guard<std::mutex> lock(call->mu);
    if (call->first_token) return serving::ToGrpc(AlreadyExists("first token already delivered"));
    call->first_token = tok;
    call->generated = 1;
    call->cv.notify_all();
  }
  MaybeStart(call);
  return grpc::Status::OK;
}

void DecodeService::OnBundle(transport::Bundle&& bundle) {
  std::shared_ptr<Call> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_ticket_.find(bundle.header.ticket_id);
    if (it != by_ticket_.end()) call = it->second;
  }
  if (!call) return;  // the request already ended; the bundle is dropped with its buffers
  auto exp = serving::ToExport(loop_.config(), bundle);
  if (!exp.ok()) return Fail(call, exp.status().WithContext("bad KV bundle"));
  auto shared = std::make_shared<engine::SequenceExport>(std::move(exp).value());
  std::weak_ptr<Call> weak = call;
  loop_.Post([this, weak, shared](engine::Engine& e) {
    auto c = weak.lock();
    if (!c) return;
    Status st = e.Import(c->seq, *shared);
    if (!st.ok()) return Fail(c, st.WithContext("installing KV bundle"));
    {
      std::lock_guard<std::mutex> lock(c->mu);
      c->installed = true;
      c->cv.notify_all();
    }
    MaybeStart(c);
  });
}

void DecodeService::OnTransferAbort(uint64_t ticket, const Status& reason) {
  std::shared_ptr<Call> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_ticket_.find(ticket);
    if (it != by_ticket_.end()) call = it->second;
  }
  if (call) Fail(call, reason.WithContext("KV transfer aborted"));
}

}  // namespace prfaas::decode
