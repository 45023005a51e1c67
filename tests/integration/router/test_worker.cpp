#include "tests/integration/router/test_worker.h"

#include <chrono>
#include <condition_variable>
#include <map>
#include <set>
#include <thread>

namespace prfaas::testing {

int32_t TokenAt(std::span<const int32_t> prompt, int k) {
  uint32_t h = 2166136261u;
  for (int32_t t : prompt) h = (h ^ static_cast<uint32_t>(t)) * 16777619u;
  return 'a' + static_cast<int32_t>((h + static_cast<uint32_t>(k) * 7u) % 26u);
}

std::string ExpectedText(std::span<const int32_t> prompt, int n) {
  std::string s;
  for (int k = 0; k < n; ++k) s.push_back(static_cast<char>(TokenAt(prompt, k)));
  return s;
}

namespace {

// Stands in for the KV transport: Prefill fills a ticket, the Decode holding it waits.
struct TicketBoard {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, int32_t> filled;  // ticket -> first token
  std::set<uint64_t> started;          // StartDecode received (the first token delivered)
  std::atomic<uint64_t> next{1};
};
TicketBoard& Board() {
  static TicketBoard board;
  return board;
}

}  // namespace

class TestWorker::DecodeSvc final : public v1::DecodeService::Service {
 public:
  explicit DecodeSvc(TestWorker& w) : w_(w) {}
  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::DecodeEvent>* writer) override {
    w_.decode_calls++;
    {
      std::lock_guard lock(w_.mu_);
      w_.last_decode_ = *req;
    }
    std::vector<int32_t> prompt(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
    int k = 0;
    if (!req->local_prefill()) {
      v1::DecodeEvent ev;
      const uint64_t id = Board().next.fetch_add(1);
      ev.mutable_ticket()->set_ticket_id(id);
      ev.mutable_ticket()->set_endpoint("inproc");
      ev.mutable_ticket()->set_backend("inproc");
      if (!writer->Write(ev)) return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
      std::unique_lock lock(Board().mu);
      // Like the real worker: decode starts once the bundle arrived and the router delivered
      // the first token with StartDecode.
      while (!Board().filled.count(id) || !Board().started.count(id)) {
        if (ctx->IsCancelled()) {
          w_.cancelled++;
          return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
        }
        Board().cv.wait_for(lock, std::chrono::milliseconds(5));
      }
      k = 1;  // the router has token 0 from the prefill reply
    } else {
      k = req->resume_token_ids_size();
    }
    const int end = k + req->sampling().max_tokens() - (req->local_prefill() ? 0 : 1);
    int sent = 0;
    for (; k < end; ++k) {
      if (w_.knobs_.token_delay_ms > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(w_.knobs_.token_delay_ms.load()));
      }
      if (ctx->IsCancelled()) {
        w_.cancelled++;
        return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      }
      if (w_.knobs_.die_after_tokens >= 0 && sent >= w_.knobs_.die_after_tokens) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker died");
      }
      v1::DecodeEvent ev;
      ev.mutable_tokens()->add_token_ids(TokenAt(prompt, k));
      if (!writer->Write(ev)) {
        w_.cancelled++;
        return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
      }
      ++sent;
    }
    v1::DecodeEvent ev;
    ev.mutable_finished()->set_reason(v1::FINISH_REASON_LENGTH);
    writer->Write(ev);
    return grpc::Status::OK;
  }

  grpc::Status StartDecode(grpc::ServerContext*, const v1::StartDecodeRequest* req,
                           v1::StartDecodeReply*) override {
    std::lock_guard lock(Board().mu);
    auto it = Board().filled.find(req->ticket_id());
    if (it == Board().filled.end()) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no bundle for this ticket");
    }
    if (it->second != req->first_token_id()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "first token differs from prefill's");
    }
    Board().started.insert(req->ticket_id());
    Board().cv.notify_all();
    return grpc::Status::OK;
  }

 private:
  TestWorker& w_;
};

class TestWorker::PrefillSvc final : public v1::PrefillService::Service {
 public:
  explicit PrefillSvc(TestWorker& w) : w_(w) {}
  grpc::Status Prefill(grpc::ServerContext*, const v1::PrefillRequest* req,
                       v1::PrefillReply* reply) override {
    w_.prefill_calls++;
    if (w_.knobs_.fail_prefill) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "prefill broke");
    std::vector<int32_t> prompt(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
    reply->set_first_token_id(TokenAt(prompt, 0));
    {
      std::lock_guard lock(Board().mu);
      Board().filled[req->ticket().ticket_id()] = reply->first_token_id();
    }
    Board().cv.notify_all();
    return grpc::Status::OK;
  }

 private:
  TestWorker& w_;
};

class TestWorker::AdminSvc final : public v1::WorkerAdmin::Service {
 public:
  explicit AdminSvc(TestWorker& w) : w_(w) {}
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest*, v1::DrainReply*) override {
    w_.drains++;
    return grpc::Status::OK;
  }
  grpc::Status Undrain(grpc::ServerContext*, const v1::DrainRequest*, v1::DrainReply*) override {
    return grpc::Status::OK;
  }
  grpc::Status SetRole(grpc::ServerContext*, const v1::SetRoleRequest* req,
                       v1::SetRoleReply* rep) override {
    w_.role_sets++;
    w_.last_role = req->role();
    rep->set_role(req->role());
    return grpc::Status::OK;
  }

 private:
  TestWorker& w_;
};

TestWorker::TestWorker()
    : decode_(std::make_unique<DecodeSvc>(*this)),
      prefill_(std::make_unique<PrefillSvc>(*this)),
      admin_(std::make_unique<AdminSvc>(*this)) {
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  b.RegisterService(decode_.get());
  b.RegisterService(prefill_.get());
  b.RegisterService(admin_.get());
  server_ = b.BuildAndStart();
}

TestWorker::~TestWorker() {
  server_->Shutdown(std::chrono::system_clock::now());
}

v1::DecodeRequest TestWorker::last_decode() {
  std::lock_guard lock(mu_);
  return last_decode_;
}

}  // namespace prfaas::testing
