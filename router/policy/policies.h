// Constructors of the concrete policies, one per .cpp file. Callers normally go through
// MakePolicy() in policy.h; these exist for the factory and for tests that need a concrete type.
#pragma once

#include <memory>

#include "router/policy/policy.h"

namespace prfaas::router {

std::unique_ptr<Policy> MakePrfaasPolicy(const PolicyConfig& config);         // "prfaas"
std::unique_ptr<Policy> MakeRoundRobinPolicy(const PolicyConfig& config);     // "round-robin"
std::unique_ptr<Policy> MakeLeastLoadedPolicy(const PolicyConfig& config);    // "least-loaded"
std::unique_ptr<Policy> MakeCacheAwarePolicy(const PolicyConfig& config);     // "cache-aware"
std::unique_ptr<Policy> MakeKvCostPolicy(const PolicyConfig& config);         // "kv-cost"
std::unique_ptr<Policy> MakeNaiveHeteroPolicy(const PolicyConfig& config);    // "naive-hetero"
std::unique_ptr<Policy> MakeHomogeneousPdPolicy(const PolicyConfig& config);  // "homogeneous-pd"

}  // namespace prfaas::router
