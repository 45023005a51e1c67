#include "router/admin/admin_service.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include "common/block_hash.h"
#include "prfaas/v1/worker.grpc.pb.h"
#include "router/registry/registry_service.h"
#include "router/server/openai.h"
#include "router/service/role_switch.h"

namespace prfaas::router {

using nlohmann::json;

namespace {

json ThresholdJson(const ThresholdController& tc) {
  const uint32_t t = tc.threshold();
  return json{{"threshold_tokens", t == kNoOffload ? json("inf") : json(t)},
              {"base_threshold_tokens", tc.config().base_threshold},
              {"multiplier", tc.multiplier()},
              {"mode", tc.manual() ? "manual" : "auto"},
              {"placement", std::string(PlacementModeName(tc.placement()))},
              {"last_reason", tc.last_reason()}};
}

Result<uint32_t> ParseTokens(const std::string& s) {
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used != s.size() || v < 0 || v > UINT32_MAX - 1LL) throw std::out_of_range("x");
    return static_cast<uint32_t>(v);
  } catch (const std::exception&) {
    return InvalidArgument(fmt::format("'{}' is not a token count", s));
  }
}

Status WantArgs(const std::vector<std::string>& args, size_t n, const char* usage) {
  if (args.size() != n) return InvalidArgument(fmt::format("usage: {}", usage));
  return Status::Ok();
}

}  // namespace

AdminService::AdminService(WorkerDirectory& directory, const Tokenizer& tokenizer,
                           std::string admin_token)
    : directory_(directory), tokenizer_(tokenizer), admin_token_(std::move(admin_token)) {}

grpc::Status AdminService::Call(grpc::ServerContext* context, const v1::AdminRequest* request,
                                v1::AdminReply* reply) {
  if (!admin_token_.empty()) {
    auto it = context->client_metadata().find("authorization");
    std::string given = it == context->client_metadata().end()
                            ? std::string()
                            : std::string(it->second.data(), it->second.size());
    if (!BearerMatches(given, admin_token_)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or invalid admin token");
    }
  }
  std::vector<std::string> args(request->args().begin(), request->args().end());
  auto result = Execute(request->command(), args);
  if (!result.ok()) return ToGrpc(result.status());
  reply->set_json(result->dump());
  return grpc::Status::OK;
}

json AdminService::WorkersJson() {
  json rows = json::array();
  directory_.Inspect([&](const ClusterState& s, const CacheIndex&, Policy&) {
    for (const auto& w : s.workers) {
      rows.push_back({{"id", w.id},
                      {"cluster", s.clusters[w.cluster].name},
                      {"kind", std::string(ClusterKindName(s.clusters[w.cluster].kind))},
                      {"role", std::string(WorkerRoleName(w.role))},
                      {"state", !w.healthy ? "down" : (w.draining ? "draining" : "up")},
                      {"queue", w.queue_depth},
                      {"backlog_tokens", w.prefill_backlog_tokens},
                      {"running", w.running},
                      {"waiting", w.waiting},
                      {"free_kv_bytes", w.free_kv_bytes}});
    }
  });
  for (auto& r : rows)
    r["grpc"] =
        directory_.GrpcEndpoint(directory_.Find(r["id"].get<std::string>()).value_or(kNoWorker));
  return rows;
}

Result<json> AdminService::Execute(const std::string& command,
                                   const std::vector<std::string>& args) {
  if (command == "status") {
    json j;
    directory_.Inspect([&](const ClusterState& s, const CacheIndex& cache, Policy& p) {
      int up = 0;
      for (const auto& w : s.workers) up += w.healthy ? 1 : 0;
      const auto st = cache.stats();
      j = {{"policy", std::string(p.name())},
           {"workers", s.workers.size()},
           {"workers_up", up},
           {"clusters", s.clusters.size()},
           {"links", s.links.size()},
           {"cache_attention_blocks", st.attention_keys},
           {"cache_checkpoints", st.checkpoint_keys},
           {"block_size", s.model.block_tokens}};
      if (auto* tc = p.threshold_controller()) j["threshold"] = ThresholdJson(*tc);
    });
    return j;
  }
  if (command == "workers") return json{{"workers", WorkersJson()}};
  if (command == "clusters") {
    json rows = json::array();
    directory_.Inspect([&](const ClusterState& s, const CacheIndex&, Policy&) {
      for (ClusterIndex c = 0; c < s.clusters.size(); ++c) {
        int n = 0, up = 0, prefill = 0, decode = 0;
        for (const auto& w : s.workers) {
          if (w.cluster != c) continue;
          ++n;
          up += w.healthy ? 1 : 0;
          prefill += w.CanPrefill() ? 1 : 0;
          decode += w.CanDecode() ? 1 : 0;
        }
        rows.push_back({{"name", s.clusters[c].name},
                        {"kind", std::string(ClusterKindName(s.clusters[c].kind))},
                        {"workers", n},
                        {"up", up},
                        {"prefill_ready", prefill},
                        {"decode_ready", decode}});
      }
    });
    return json{{"clusters", rows}};
  }
  if (command == "links") {
    json rows = json::array();
    directory_.Inspect([&](const ClusterState& s, const CacheIndex&, Policy&) {
      for (const auto& l : s.links) {
        rows.push_back({{"src", s.clusters[l.src].name},
                        {"dst", s.clusters[l.dst].name},
                        {"up", l.up},
                        {"nominal_gbps", l.nominal_bps / 1e9},
                        {"goodput_gbps", l.goodput_bps / 1e9},
                        {"utilisation", l.utilisation},
                        {"rtt_ms", l.rtt_s * 1e3},
                        {"retransmit_rate", l.retransmit_rate},
                        {"backlog_bytes", l.backlog_bytes}});
      }
    });
    return json{{"links", rows}};
  }
  if (command == "drain" || command == "undrain") {
    PRFAAS_RETURN_IF_ERROR(WantArgs(args, 1, "drain|undrain <worker-id>"));
    return ForwardDrain(args[0], command == "drain");
  }
  if (command == "set-role") {
    PRFAAS_RETURN_IF_ERROR(WantArgs(args, 2, "set-role <worker-id> prefill|decode|both"));
    return SetRole(args[0], args[1]);
  }
  if (command == "threshold") {
    if (args.empty()) return InvalidArgument("usage: threshold get | set <tokens> | auto");
    json j;
    Status status;
    directory_.Inspect([&](const ClusterState&, const CacheIndex&, Policy& p) {
      ThresholdController* tc = p.threshold_controller();
      if (tc == nullptr) {
        status = FailedPrecondition(
            fmt::format("policy '{}' has no offload threshold", std::string(p.name())));
        return;
      }
      if (args[0] == "get" && args.size() == 1) {
      } else if (args[0] == "set" && args.size() == 2) {
        auto t = ParseTokens(args[1]);
        if (!t.ok()) {
          status = t.status();
          return;
        }
        tc->SetManual(*t);
      } else if (args[0] == "auto" && args.size() == 1) {
        tc->SetAuto();
      } else {
        status = InvalidArgument("usage: threshold get | set <tokens> | auto");
        return;
      }
      j = ThresholdJson(*tc);
    });
    PRFAAS_RETURN_IF_ERROR(status);
    return j;
  }
  if (command == "policy") {
    if (args.size() == 1 && args[0] == "get") {
      json names = json::array();
      for (auto n : PolicyNames()) names.push_back(std::string(n));
      return json{{"policy", directory_.policy_name()}, {"available", names}};
    }
    if (args.size() == 2 && args[0] == "set") {
      PRFAAS_RETURN_IF_ERROR(directory_.SetPolicy(args[1]));
      return json{{"policy", directory_.policy_name()}};
    }
    return InvalidArgument("usage: policy get | set <name>");
  }
  if (command == "explain") {
    PRFAAS_RETURN_IF_ERROR(WantArgs(args, 1, "explain \"<prompt>\""));
    return Explain(args[0]);
  }
  if (command == "cache") {
    PRFAAS_RETURN_IF_ERROR(WantArgs(args, 1, "cache stats"));
    if (args[0] != "stats") return InvalidArgument("usage: cache stats");
    json j;
    directory_.Inspect([&](const ClusterState& s, const CacheIndex& cache, Policy&) {
      const auto st = cache.stats();
      j = {{"attention_keys", st.attention_keys},
           {"attention_entries", st.attention_entries},
           {"checkpoint_keys", st.checkpoint_keys},
           {"checkpoint_entries", st.checkpoint_entries},
           {"hybrid", cache.hybrid()},
           {"block_size", s.model.block_tokens}};
    });
    return j;
  }
  return InvalidArgument(fmt::format(
      "unknown command '{}' (status, workers, clusters, links, drain, undrain, set-role, "
      "threshold, policy, explain, cache)",
      command));
}

Result<json> AdminService::Explain(const std::string& prompt) {
  const std::vector<int32_t> tokens = tokenizer_.Encode(prompt, SpecialTokens::kRecognize);
  if (tokens.empty()) return InvalidArgument("the prompt encodes to zero tokens");
  const auto hashes = ChainedBlockHashes(tokens, directory_.block_size());
  RequestInfo info;
  info.prompt_tokens = static_cast<uint32_t>(tokens.size());
  info.block_hashes = hashes;
  const Decision d = directory_.Route(info, {}, Now(), /*charge=*/false);
  json j = {{"prompt_tokens", d.prompt_tokens == 0 ? tokens.size() : d.prompt_tokens},
            {"blocks", hashes.size()},
            {"ok", d.ok()},
            {"path", std::string(PrefillPathName(d.path))},
            {"reason", std::string(ReasonName(d.reason))},
            {"threshold_tokens", d.threshold == kNoOffload ? json("inf") : json(d.threshold)},
            {"placement", std::string(PlacementModeName(d.placement))},
            {"cached_tokens", d.cached_tokens},
            {"uncached_tokens", d.uncached_tokens},
            {"link_up", d.link_up},
            {"link_utilisation", d.link_utilisation},
            {"explanation", d.explanation},
            {"summary", directory_.Describe(d)}};
  j["prefill_worker"] =
      d.prefill_worker == kNoWorker ? json(nullptr) : json(directory_.WorkerId(d.prefill_worker));
  j["decode_worker"] =
      d.decode_worker == kNoWorker ? json(nullptr) : json(directory_.WorkerId(d.decode_worker));
  json hits = json::array();
  directory_.Inspect([&](const ClusterState& s, const CacheIndex&, Policy&) {
    for (const auto& h : d.cache_by_cluster) {
      hits.push_back(
          {{"cluster", h.cluster < s.clusters.size() ? s.clusters[h.cluster].name : "-"},
           {"best_worker", h.best_worker < s.workers.size() ? s.workers[h.best_worker].id : "-"},
           {"attention_tokens", h.attention_tokens},
           {"effective_tokens", h.effective_tokens}});
    }
  });
  j["cache_by_cluster"] = hits;
  return j;
}

Result<json> AdminService::ForwardDrain(const std::string& worker, bool drain) {
  PRFAAS_ASSIGN_OR_RETURN(WorkerIndex w, directory_.Find(worker));
  PRFAAS_RETURN_IF_ERROR(directory_.SetDraining(worker, drain));
  json j = {{"worker", worker}, {"draining", drain}};
  auto stub = v1::WorkerAdmin::NewStub(directory_.Channel(w));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::DrainRequest req;
  v1::DrainReply rep;
  grpc::Status s = drain ? stub->Drain(&ctx, req, &rep) : stub->Undrain(&ctx, req, &rep);
  if (s.ok()) {
    j["worker_remaining_requests"] = rep.remaining_requests();
  } else {
    // The router stops routing to it either way; the operator sees that the worker did not ack.
    j["worker_error"] = s.error_message();
  }
  return j;
}

Result<json> AdminService::SetRole(const std::string& worker, const std::string& role_name) {
  PRFAAS_ASSIGN_OR_RETURN(WorkerRole role, ParseWorkerRole(role_name));
  PRFAAS_RETURN_IF_ERROR(SwitchWorkerRole(directory_, worker, role, std::chrono::seconds(30)));
  return json{{"worker", worker}, {"role", std::string(WorkerRoleName(role))}};
}

}  // namespace prfaas::router
