// Typed configuration: YAML files overridden by command-line flags, validated with errors that
// name the bad key and value.
//
// A Schema binds dotted keys ("http.port") to variables that already hold their defaults:
//
//   ServerConfig cfg;                       // defaults live in the struct
//   config::Schema schema;
//   schema.Add("http.port", &cfg.http_port, "HTTP port").Range(0, 65535);
//   schema.Add("policy", &cfg.policy, "routing policy").OneOf({"prfaas", "round-robin"});
//   schema.AddFlags(app);                   // --http.port, --policy (CLI11)
//   CLI11_PARSE(app, argc, argv);
//   PRFAAS_RETURN_IF_ERROR(schema.Finish(config_path));  // file, then flags, then checks
//
// Precedence: defaults < YAML file < flags. Nested YAML maps flatten to dotted keys. Unknown
// keys, wrong types and failed checks are InvalidArgument errors naming the key, the value and
// where it came from (file:line or --flag).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace CLI {
class App;
}

namespace prfaas::config {

class Schema;

// Builder returned by Schema::Add to attach checks to one key.
class FieldRef {
 public:
  // Numeric keys: value must lie in [lo, hi].
  FieldRef& Range(double lo, double hi);
  // String keys: value must be one of `choices`.
  FieldRef& OneOf(std::vector<std::string> choices);
  // String keys: must not be empty.
  FieldRef& NonEmpty();
  // Any check; `pred` returns an empty string when fine, else what is wrong.
  FieldRef& Check(std::function<std::string()> pred);

 private:
  friend class Schema;
  FieldRef(Schema* s, std::string key) : schema_(s), key_(std::move(key)) {}
  Schema* schema_;
  std::string key_;
};

class Schema {
 public:
  Schema();
  ~Schema();
  Schema(const Schema&) = delete;
  Schema& operator=(const Schema&) = delete;

  // Supported types: bool, int, int64_t, double, std::string, std::vector<std::string>.
  template <typename T>
  FieldRef Add(std::string key, T* target, std::string help);

  Status LoadYamlFile(const std::string& path);
  Status LoadYamlString(std::string_view yaml, const std::string& source = "<string>");

  // Registers one CLI11 option per key, "--<key>". Values are captured as text and applied by
  // ApplyFlags() so that flags win over the file whatever the call order.
  void AddFlags(CLI::App& app);
  Status ApplyFlags();

  // Runs every check; the first failure names key and value.
  Status Validate() const;

  // LoadYamlFile(path) when path is non-empty, then ApplyFlags(), then Validate().
  Status Finish(const std::string& yaml_path);

  // The effective configuration as YAML (for --print-config and logs).
  std::string ToYaml() const;

  std::vector<std::string> Keys() const;

 private:
  friend class FieldRef;
  struct Field;
  Status Set(const std::string& key, const std::string& value, const std::string& where);
  Status SetList(const std::string& key, const std::vector<std::string>& values,
                 const std::string& where);
  Field* Find(const std::string& key);
  FieldRef AddField(std::string key, std::unique_ptr<Field> field);

  std::map<std::string, std::unique_ptr<Field>> fields_;
  std::vector<std::string> order_;
  std::map<std::string, std::vector<std::string>> flag_values_;
};

}  // namespace prfaas::config
