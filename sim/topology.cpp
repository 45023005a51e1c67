#include "sim/topology.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

namespace prfaas::sim {
namespace {

std::string Resolve(const std::string& base, const std::string& p) {
  if (p.empty() || std::filesystem::path(p).is_absolute() || base.empty()) return p;
  return (std::filesystem::path(base) / p).string();
}

template <typename T>
T Opt(const YAML::Node& n, const char* key, T fallback) {
  return n[key] ? n[key].as<T>() : fallback;
}

Status ParseCluster(const YAML::Node& n, ClusterSpec& c, const std::string& base) {
  if (!n["name"]) return InvalidArgument("cluster without 'name'");
  c.name = n["name"].as<std::string>();
  std::string kind = Opt<std::string>(n, "kind", "pd");
  if (kind == "prfaas") {
    c.kind = ClusterKind::kPrfaas;
  } else if (kind == "pd") {
    c.kind = ClusterKind::kPd;
  } else {
    return InvalidArgument("cluster '" + c.name + "': kind must be prfaas or pd, got '" + kind +
                           "'");
  }
  c.hardware = Opt<std::string>(n, "hardware", c.hardware);
  c.workers = Opt<int>(n, "workers", c.workers);
  c.gpus_per_worker = Opt<int>(n, "gpus_per_worker", c.gpus_per_worker);
  if (c.kind == ClusterKind::kPrfaas) {
    c.prefill_workers = Opt<int>(n, "prefill_workers", c.workers);
    c.decode_workers = Opt<int>(n, "decode_workers", 0);
  } else {
    c.prefill_workers = Opt<int>(n, "prefill_workers", c.workers / 2);
    c.decode_workers = Opt<int>(n, "decode_workers", c.workers - c.prefill_workers);
  }
  if (c.workers <= 0 || c.prefill_workers < 0 || c.decode_workers < 0 ||
      c.prefill_workers + c.decode_workers != c.workers) {
    return InvalidArgument("cluster '" + c.name +
                           "': prefill_workers + decode_workers must equal workers (" +
                           std::to_string(c.workers) + ")");
  }
  if (c.kind == ClusterKind::kPrfaas && c.decode_workers != 0) {
    return InvalidArgument("cluster '" + c.name + "': a prfaas cluster has no decode workers");
  }
  c.profile = Resolve(base, Opt<std::string>(n, "profile", ""));
  c.profile_scale = Opt<double>(n, "profile_scale", 1.0);
  c.max_prefill_batch_tokens =
      Opt<int64_t>(n, "max_prefill_batch_tokens", c.max_prefill_batch_tokens);
  c.max_decode_batch = Opt<int>(n, "max_decode_batch", c.max_decode_batch);
  c.decode_kv_gib = Opt<double>(n, "decode_kv_gib", 0);
  c.prefill_cache_blocks = Opt<int64_t>(n, "prefill_cache_blocks", 0);
  c.decode_cache_blocks = Opt<int64_t>(n, "decode_cache_blocks", 0);
  c.checkpoint_tokens = Opt<int64_t>(n, "checkpoint_tokens", 0);
  if (c.checkpoint_tokens < 0) {
    return InvalidArgument("cluster '" + c.name + "': checkpoint_tokens must be >= 0");
  }
  c.intra_gbps = Opt<double>(n, "intra_gbps", c.intra_gbps);
  if (c.max_decode_batch <= 0 || c.max_prefill_batch_tokens <= 0) {
    return InvalidArgument("cluster '" + c.name + "': batch limits must be > 0");
  }
  return Status::Ok();
}

}  // namespace

int Topology::ClusterIndex(const std::string& n) const {
  for (size_t i = 0; i < clusters.size(); ++i) {
    if (clusters[i].name == n) return static_cast<int>(i);
  }
  return -1;
}

Result<Topology> ParseTopology(const std::string& text, const std::string& name,
                               const std::string& base) {
  Topology t;
  t.name = std::filesystem::path(name).stem().string();
  try {
    YAML::Node root = YAML::Load(text);
    if (!root.IsMap()) return InvalidArgument(name + ": top level must be a mapping");
    if (root["name"]) t.name = root["name"].as<std::string>();

    const YAML::Node& model = root["model"];
    if (!model) return InvalidArgument(name + ": missing 'model'");
    // Element sizes: bf16 (GPU serving, the default) or fp32 (the CPU engine).
    ModelDtypes dtypes;
    std::string dtype = Opt<std::string>(model, "dtype", "bf16");
    if (dtype == "fp32") {
      dtypes = ModelDtypes{4, 4, 4, 4};
    } else if (dtype != "bf16") {
      return InvalidArgument(name + ": model.dtype must be bf16 or fp32, got '" + dtype + "'");
    }
    if (model["preset"]) {
      PRFAAS_ASSIGN_OR_RETURN(t.model, ModelPreset(model["preset"].as<std::string>(), dtypes));
    } else if (model["config"]) {
      auto m = ModelFromConfigJson(Resolve(base, model["config"].as<std::string>()), dtypes);
      if (!m.ok()) return m.status().WithContext(name + ": model.config");
      t.model = std::move(m).value();
    } else {
      return InvalidArgument(name + ": model needs 'preset' or 'config'");
    }
    // Explicit overrides, e.g. to match measured transfer sizes.
    if (model["kv_bytes_per_token"])
      t.model.kv_bytes_per_token = model["kv_bytes_per_token"].as<double>();
    if (model["state_bytes_per_seq"])
      t.model.state_bytes_per_seq = model["state_bytes_per_seq"].as<double>();
    // Parameter counts for models the engine's parser sizes as dense (e.g. an MoE variant).
    if (model["total_params"]) t.model.total_params = model["total_params"].as<double>();
    if (model["active_params"]) t.model.active_params = model["active_params"].as<double>();

    if (!root["clusters"] || !root["clusters"].IsSequence() || root["clusters"].size() == 0) {
      return InvalidArgument(name + ": 'clusters' must be a non-empty list");
    }
    std::set<std::string> names;
    for (const auto& n : root["clusters"]) {
      ClusterSpec c;
      Status s = ParseCluster(n, c, base);
      if (!s.ok()) return s.WithContext(name);
      if (!names.insert(c.name).second)
        return InvalidArgument(name + ": duplicate cluster '" + c.name + "'");
      PRFAAS_ASSIGN_OR_RETURN(HardwareSpec hw, HardwarePreset(c.hardware));
      (void)hw;
      t.clusters.push_back(std::move(c));
    }
    if (root["links"]) {
      for (const auto& n : root["links"]) {
        LinkSpec l;
        if (!n["from"] || !n["to"]) return InvalidArgument(name + ": link needs 'from' and 'to'");
        l.from = n["from"].as<std::string>();
        l.to = n["to"].as<std::string>();
        if (!names.count(l.from) || !names.count(l.to)) {
          return InvalidArgument(name + ": link " + l.from + "->" + l.to +
                                 " names an unknown cluster");
        }
        l.gbps = Opt<double>(n, "gbps", l.gbps);
        l.rtt_ms = Opt<double>(n, "rtt_ms", l.rtt_ms);
        l.per_flow_gbps = Opt<double>(n, "per_flow_gbps", 0);
        if (l.gbps <= 0 || l.rtt_ms < 0)
          return InvalidArgument(name + ": link needs gbps > 0, rtt_ms >= 0");
        if (n["schedule"]) {
          for (const auto& s : n["schedule"]) {
            BandwidthStep b{s["at_s"].as<double>(), s["gbps"].as<double>()};
            if (b.gbps < 0) return InvalidArgument(name + ": schedule gbps must be >= 0");
            l.schedule.push_back(b);
          }
          std::sort(l.schedule.begin(), l.schedule.end(),
                    [](const BandwidthStep& a, const BandwidthStep& b) { return a.at_s < b.at_s; });
        }
        t.links.push_back(std::move(l));
      }
    }
    if (root["slo"]) {
      t.slo.ttft_s = Opt<double>(root["slo"], "ttft_s", t.slo.ttft_s);
      t.slo.tpot_ms = Opt<double>(root["slo"], "tpot_ms", t.slo.tpot_ms);
    }
    if (root["policy"]) {
      const YAML::Node& p = root["policy"];
      t.policy.name = Opt<std::string>(p, "name", t.policy.name);
      t.policy.threshold = Opt<double>(p, "threshold", t.policy.threshold);
      t.policy.controller_period_s =
          Opt<double>(p, "controller_period_s", t.policy.controller_period_s);
      t.policy.adaptive = Opt<bool>(p, "adaptive", t.policy.adaptive);
      t.policy.reserve_decode_at =
          Opt<std::string>(p, "reserve_decode_at", t.policy.reserve_decode_at);
      if (t.policy.reserve_decode_at != "route" && t.policy.reserve_decode_at != "handoff") {
        return InvalidArgument(name + ": policy.reserve_decode_at must be route or handoff");
      }
      if (const YAML::Node& rb = p["rebalance"]) {
        t.policy.rebalance_period_s = Opt<double>(rb, "period_s", 0);
        t.policy.rebalance_min_gain = Opt<double>(rb, "min_gain", t.policy.rebalance_min_gain);
        t.policy.rebalance_min_samples =
            Opt<int>(rb, "min_samples", t.policy.rebalance_min_samples);
        if (t.policy.rebalance_period_s < 0 || t.policy.rebalance_min_gain < 0 ||
            t.policy.rebalance_min_samples < 1) {
          return InvalidArgument(
              name + ": policy.rebalance needs period_s >= 0, min_gain >= 0, min_samples >= 1");
        }
      }
      if (p["params"]) {
        for (const auto& kv : p["params"])
          t.policy.params[kv.first.as<std::string>()] = kv.second.as<double>();
      }
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument(name + ": YAML error: " + e.what());
  }
  int decode = 0;
  for (const auto& c : t.clusters) decode += c.decode_workers;
  if (decode == 0) return InvalidArgument(name + ": no decode workers in any cluster");
  return t;
}

Result<Topology> LoadTopology(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot open topology '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ParseTopology(ss.str(), path, std::filesystem::path(path).parent_path().string());
}

Result<std::unique_ptr<CostModel>> MakeCostModel(const Topology& topo, const ClusterSpec& c) {
  if (!c.profile.empty()) {
    PRFAAS_ASSIGN_OR_RETURN(auto p, ProfileCostModel::FromFile(c.profile));
    p->Scale(c.profile_scale);
    return std::unique_ptr<CostModel>(std::move(p));
  }
  PRFAAS_ASSIGN_OR_RETURN(HardwareSpec hw, HardwarePreset(c.hardware));
  return std::unique_ptr<CostModel>(
      std::make_unique<AnalyticCostModel>(topo.model, hw, c.gpus_per_worker));
}

}  // namespace prfaas::sim
