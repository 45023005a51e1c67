#include <fmt/format.h>

#include "router/policy/policies.h"

namespace prfaas::router {
namespace {

struct Entry {
  std::string_view name;
  std::unique_ptr<Policy> (*make)(const PolicyConfig&);
};

constexpr Entry kPolicies[] = {
    {"prfaas", MakePrfaasPolicy},
    {"round-robin", MakeRoundRobinPolicy},
    {"least-loaded", MakeLeastLoadedPolicy},
    {"cache-aware", MakeCacheAwarePolicy},
    {"kv-cost", MakeKvCostPolicy},
    {"naive-hetero", MakeNaiveHeteroPolicy},
    {"homogeneous-pd", MakeHomogeneousPdPolicy},
};

}  // namespace

std::vector<std::string_view> PolicyNames() {
  std::vector<std::string_view> out;
  for (const Entry& e : kPolicies) out.push_back(e.name);
  return out;
}

Result<std::unique_ptr<Policy>> MakePolicy(std::string_view name, const PolicyConfig& config) {
  for (const Entry& e : kPolicies) {
    if (e.name == name) return e.make(config);
  }
  return InvalidArgument(
      fmt::format("unknown routing policy '{}' (known: {})", name, fmt::join(PolicyNames(), ", ")));
}

}  // namespace prfaas::router
