// Float64 whole-model forward of a hybrid model built only from kernels/cpu/ref.h kernels, for
// checking the Engine. Runs all tokens at once from an empty cache.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/config.h"
#include "engine/weights.h"

namespace prfaas::engine::testing {

// Logits [tokens.size(), vocab] for every position.
std::vector<double> ReferenceForward(const ModelConfig& config, const ModelWeights& weights,
                                     const std::vector<int32_t>& tokens);

}  // namespace prfaas::engine::testing
