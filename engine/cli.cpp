// `prfaas model info`. See cli.h.
#include "engine/cli.h"

#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace prfaas::engine {
namespace {

std::string Bytes(int64_t b) {
  if (b >= (int64_t{1} << 30))
    return fmt::format("{} B ({:.2f} GiB)", b, static_cast<double>(b) / (1 << 30));
  if (b >= (int64_t{1} << 20))
    return fmt::format("{} B ({:.2f} MiB)", b, static_cast<double>(b) / (1 << 20));
  if (b >= 1024) return fmt::format("{} B ({:.2f} KiB)", b, static_cast<double>(b) / 1024);
  return fmt::format("{} B", b);
}

}  // namespace

Result<std::string> FormatModelInfo(const ModelConfig& c, const std::string& format) {
  const int64_t kv_bf16 = c.KvBytesPerToken(2), kv_fp32 = c.KvBytesPerToken(4);
  const int64_t conv_bf16 = c.ConvStateBytes(2), conv_fp32 = c.ConvStateBytes(4);
  const int64_t ssm_fp32 = c.SsmStateBytes(4), ssm_bf16 = c.SsmStateBytes(2);
  if (format == "json") {
    nlohmann::json j = {
        {"model", c.name},
        {"layers", c.num_layers},
        {"layout", c.LayoutString()},
        {"full_attention_layers", c.num_full_attention_layers()},
        {"linear_attention_layers", c.num_linear_attention_layers()},
        {"hidden_size", c.hidden_size},
        {"parameters", c.ParameterCount()},
        {"kv_bytes_per_token_bf16", kv_bf16},
        {"kv_bytes_per_token_fp32", kv_fp32},
        {"conv_state_bytes_per_sequence_bf16", conv_bf16},
        {"conv_state_bytes_per_sequence_fp32", conv_fp32},
        {"ssm_state_bytes_per_sequence_fp32", ssm_fp32},
        {"ssm_state_bytes_per_sequence_bf16", ssm_bf16},
        // Serving convention: conv bf16 + recurrent fp32. The CPU engine keeps both in fp32.
        {"state_bytes_per_sequence", conv_bf16 + ssm_fp32},
        {"state_bytes_per_sequence_cpu_engine", conv_fp32 + ssm_fp32},
    };
    return j.dump(2) + "\n";
  }
  if (format != "table")
    return InvalidArgument("unknown output format '" + format + "' (table or json)");
  std::string out;
  auto row = [&](const std::string& k, const std::string& v) {
    out += fmt::format("{:<38} {}\n", k, v);
  };
  row("model", c.name);
  row("layers", fmt::format("{} ({} full attention, {} Gated DeltaNet)", c.num_layers,
                            c.num_full_attention_layers(), c.num_linear_attention_layers()));
  row("layout", c.LayoutString());
  row("hidden size", std::to_string(c.hidden_size));
  row("attention q/kv heads x head_dim",
      fmt::format("{}/{} x {} (rotary {})", c.num_attention_heads, c.num_kv_heads, c.head_dim,
                  c.rotary_dim()));
  row("GDN key/value heads x dims",
      fmt::format("{}/{} x {}/{} (conv {})", c.linear_num_key_heads, c.linear_num_value_heads,
                  c.linear_key_head_dim, c.linear_value_head_dim, c.linear_conv_kernel_dim));
  row("parameters (dense MLP)",
      fmt::format("{} ({:.3f} B)", c.ParameterCount(), c.ParameterCount() / 1e9));
  row("KV bytes/token bf16", Bytes(kv_bf16));
  row("KV bytes/token fp32", Bytes(kv_fp32));
  row("state/seq conv bf16 + ssm fp32", Bytes(conv_bf16 + ssm_fp32));
  row("state/seq all fp32 (CPU engine)", Bytes(conv_fp32 + ssm_fp32));
  row("state/seq all bf16", Bytes(conv_bf16 + ssm_bf16));
  return out;
}

void RegisterModelCommands(CLI::App& app) {
  auto* model = app.add_subcommand("model", "Inspect model configurations");
  model->require_subcommand(1);
  auto* info = model->add_subcommand("info", "Print layer layout, parameters, KV and state sizes");
  auto model_arg = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("table");
  info->add_option(
          "--model,-m", *model_arg,
          "preset (tiny, small, qwen3-next-80b, qwen3.5-9b) or a directory with config.json")
      ->required();
  info->add_option("-o,--output", *format, "output format: table or json");
  info->callback([model_arg, format]() {
    auto cfg = ResolveModelConfig(*model_arg);
    if (!cfg.ok()) {
      std::cerr << "error: " << cfg.status().ToString() << "\n";
      throw CLI::RuntimeError(1);
    }
    auto text = FormatModelInfo(*cfg, *format);
    if (!text.ok()) {
      std::cerr << "error: " << text.status().ToString() << "\n";
      throw CLI::RuntimeError(1);
    }
    std::cout << *text;
  });
}

}  // namespace prfaas::engine
