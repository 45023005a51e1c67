#include "common/config.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace prfaas::config {

struct Schema::Field {
  std::string type;  // for error messages: "an integer", "a boolean", ...
  std::string help;
  bool is_list = false;
  bool is_bool = false;
  // Parses text into the target; returns what is wrong, or "" on success.
  std::function<std::string(const std::string&)> parse;
  std::function<void(const std::vector<std::string>&)> parse_list;
  std::function<std::string()> show;
  std::function<std::optional<double>()> number;
  std::vector<std::function<std::string()>> checks;
};

namespace {

std::string ParseInt(const std::string& s, int64_t* out) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return "is not an integer";
  *out = v;
  return "";
}

std::string ParseDouble(const std::string& s, double* out) {
  if (s.empty()) return "is not a number";
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE || std::isnan(v)) return "is not a number";
  *out = v;
  return "";
}

std::string ParseBool(const std::string& s, bool* out) {
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
  if (l == "true" || l == "yes" || l == "on" || l == "1") {
    *out = true;
    return "";
  }
  if (l == "false" || l == "no" || l == "off" || l == "0") {
    *out = false;
    return "";
  }
  return "is not a boolean (true/false)";
}

std::string Quote(const std::string& s) {
  return "'" + s + "'";
}

}  // namespace

Schema::Schema() = default;
Schema::~Schema() = default;

FieldRef Schema::AddField(std::string key, std::unique_ptr<Field> field) {
  if (fields_.count(key)) {
    std::fprintf(stderr, "config: key %s registered twice\n", key.c_str());
    std::abort();
  }
  order_.push_back(key);
  fields_.emplace(key, std::move(field));
  return FieldRef(this, std::move(key));
}

template <>
FieldRef Schema::Add<bool>(std::string key, bool* target, std::string help) {
  auto f = std::make_unique<Field>();
  f->type = "a boolean";
  f->help = std::move(help);
  f->is_bool = true;
  f->parse = [target](const std::string& s) { return ParseBool(s, target); };
  f->show = [target] { return std::string(*target ? "true" : "false"); };
  return AddField(std::move(key), std::move(f));
}

template <>
FieldRef Schema::Add<int64_t>(std::string key, int64_t* target, std::string help) {
  auto f = std::make_unique<Field>();
  f->type = "an integer";
  f->help = std::move(help);
  f->parse = [target](const std::string& s) { return ParseInt(s, target); };
  f->show = [target] { return std::to_string(*target); };
  f->number = [target] { return std::optional<double>(static_cast<double>(*target)); };
  return AddField(std::move(key), std::move(f));
}

template <>
FieldRef Schema::Add<int>(std::string key, int* target, std::string help) {
  auto f = std::make_unique<Field>();
  f->type = "an integer";
  f->help = std::move(help);
  f->parse = [target](const std::string& s) {
    int64_t v = 0;
    std::string err = ParseInt(s, &v);
    if (!err.empty()) return err;
    if (v < INT32_MIN || v > INT32_MAX) return std::string("is out of the 32-bit integer range");
    *target = static_cast<int>(v);
    return std::string();
  };
  f->show = [target] { return std::to_string(*target); };
  f->number = [target] { return std::optional<double>(*target); };
  return AddField(std::move(key), std::move(f));
}

template <>
FieldRef Schema::Add<double>(std::string key, double* target, std::string help) {
  auto f = std::make_unique<Field>();
  f->type = "a number";
  f->help = std::move(help);
  f->parse = [target](const std::string& s) { return ParseDouble(s, target); };
  f->show = [target] {
    std::ostringstream os;
    os << *target;
    return os.str();
  };
  f->number = [target] { return std::optional<double>(*target); };
  return AddField(std::move(key), std::move(f));
}

template <>
FieldRef Schema::Add<std::string>(std::string key, std::string* target, std::string help) {
  auto f = std::make_unique<Field>();
  f->type = "a string";
  f->help = std::move(help);
  f->parse = [target](const std::string& s) {
    *target = s;
    return std::string();
  };
  f->show = [target] { return *target; };
  return AddField(std::move(key), std::move(f));
}

template <>
FieldRef Schema::Add<std::vector<std::string>>(std::string key, std::vector<std::string>* target,
                                               std::string help) {
  auto f = std::make_unique<Field>();
  f->type = "a list of strings";
  f->help = std::move(help);
  f->is_list = true;
  // A scalar is accepted as a comma-separated list (handy on the command line).
  f->parse = [target](const std::string& s) {
    target->clear();
    std::string item;
    std::istringstream is(s);
    while (std::getline(is, item, ',')) {
      if (!item.empty()) target->push_back(item);
    }
    return std::string();
  };
  f->parse_list = [target](const std::vector<std::string>& v) { *target = v; };
  f->show = [target] {
    std::string s;
    for (size_t i = 0; i < target->size(); ++i) s += (i ? "," : "") + (*target)[i];
    return s;
  };
  return AddField(std::move(key), std::move(f));
}

Schema::Field* Schema::Find(const std::string& key) {
  auto it = fields_.find(key);
  return it == fields_.end() ? nullptr : it->second.get();
}

std::vector<std::string> Schema::Keys() const {
  return order_;
}

Status Schema::Set(const std::string& key, const std::string& value, const std::string& where) {
  Field* f = Find(key);
  if (!f) {
    return InvalidArgument(where + ": unknown configuration key " + Quote(key));
  }
  std::string err = f->parse(value);
  if (!err.empty()) {
    return InvalidArgument(where + ": key " + Quote(key) + ": value " + Quote(value) + " " + err);
  }
  return Status::Ok();
}

Status Schema::SetList(const std::string& key, const std::vector<std::string>& values,
                       const std::string& where) {
  Field* f = Find(key);
  if (!f) return InvalidArgument(where + ": unknown configuration key " + Quote(key));
  if (!f->is_list) {
    return InvalidArgument(where + ": key " + Quote(key) + " expects " + f->type + ", got a list");
  }
  f->parse_list(values);
  return Status::Ok();
}

namespace {

std::string Where(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return source;
  return source + ":" + std::to_string(m.line + 1);
}

}  // namespace

Status Schema::LoadYamlString(std::string_view yaml, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return InvalidArgument(source + ": invalid YAML: " + e.what());
  }
  if (root.IsNull()) return Status::Ok();  // empty file
  if (!root.IsMap()) return InvalidArgument(source + ": top level must be a mapping of keys");

  // Depth-first walk flattening nested maps into dotted keys.
  std::function<Status(const YAML::Node&, const std::string&)> walk =
      [&](const YAML::Node& node, const std::string& prefix) -> Status {
    for (const auto& kv : node) {
      std::string name = kv.first.as<std::string>();
      std::string key = prefix.empty() ? name : prefix + "." + name;
      const YAML::Node& v = kv.second;
      std::string where = Where(source, kv.first);
      if (v.IsMap()) {
        if (Find(key)) {
          return InvalidArgument(where + ": key " + Quote(key) + " expects " + Find(key)->type +
                                 ", got a mapping");
        }
        PRFAAS_RETURN_IF_ERROR(walk(v, key));
      } else if (v.IsSequence()) {
        std::vector<std::string> items;
        for (const auto& item : v) {
          if (!item.IsScalar()) {
            return InvalidArgument(where + ": key " + Quote(key) + ": list items must be scalars");
          }
          items.push_back(item.as<std::string>());
        }
        PRFAAS_RETURN_IF_ERROR(SetList(key, items, where));
      } else if (v.IsScalar()) {
        PRFAAS_RETURN_IF_ERROR(Set(key, v.as<std::string>(), where));
      } else if (v.IsNull()) {
        if (!Find(key)) return InvalidArgument(where + ": unknown configuration key " + Quote(key));
        // `key:` with no value keeps the default.
      }
    }
    return Status::Ok();
  };
  return walk(root, "");
}

Status Schema::LoadYamlFile(const std::string& path) {
  YAML::Node probe;
  std::string text;
  {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return NotFound("config file " + Quote(path) + " cannot be opened");
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
  }
  return LoadYamlString(text, path);
}

void Schema::AddFlags(CLI::App& app) {
  for (const auto& key : order_) {
    Field* f = fields_.at(key).get();
    auto* opt = app.add_option("--" + key, flag_values_[key], f->help);
    opt->type_name(f->is_bool ? "BOOL" : (f->number ? "NUM" : "TEXT"));
    opt->expected(1);
    opt->default_str(f->show());
  }
}

Status Schema::ApplyFlags() {
  for (const auto& key : order_) {
    const auto& vals = flag_values_[key];
    if (vals.empty()) continue;
    PRFAAS_RETURN_IF_ERROR(Set(key, vals.back(), "flag --" + key));
  }
  return Status::Ok();
}

Status Schema::Validate() const {
  for (const auto& key : order_) {
    const Field& f = *fields_.at(key);
    for (const auto& check : f.checks) {
      std::string err = check();
      if (!err.empty()) {
        return InvalidArgument("configuration key " + Quote(key) + ": value " + Quote(f.show()) +
                               " " + err);
      }
    }
  }
  return Status::Ok();
}

Status Schema::Finish(const std::string& yaml_path) {
  if (!yaml_path.empty()) PRFAAS_RETURN_IF_ERROR(LoadYamlFile(yaml_path));
  PRFAAS_RETURN_IF_ERROR(ApplyFlags());
  return Validate();
}

std::string Schema::ToYaml() const {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& key : order_) {
    const Field& f = *fields_.at(key);
    out << YAML::Key << key << YAML::Value << f.show();
  }
  out << YAML::EndMap;
  return out.c_str();
}

FieldRef& FieldRef::Range(double lo, double hi) {
  auto* f = schema_->Find(key_);
  auto number = f->number;
  f->checks.push_back([number, lo, hi]() -> std::string {
    if (!number) return "is not numeric";
    double v = *number();
    if (v < lo || v > hi) {
      std::ostringstream os;
      os << "is outside the allowed range [" << lo << ", " << hi << "]";
      return os.str();
    }
    return "";
  });
  return *this;
}

FieldRef& FieldRef::OneOf(std::vector<std::string> choices) {
  auto* f = schema_->Find(key_);
  auto show = f->show;
  f->checks.push_back([show, choices]() -> std::string {
    std::string v = show();
    if (std::find(choices.begin(), choices.end(), v) != choices.end()) return "";
    std::string list;
    for (size_t i = 0; i < choices.size(); ++i) list += (i ? ", " : "") + choices[i];
    return "is not one of: " + list;
  });
  return *this;
}

FieldRef& FieldRef::NonEmpty() {
  auto* f = schema_->Find(key_);
  auto show = f->show;
  f->checks.push_back(
      [show]() -> std::string { return show().empty() ? "must not be empty" : ""; });
  return *this;
}

FieldRef& FieldRef::Check(std::function<std::string()> pred) {
  schema_->Find(key_)->checks.push_back(std::move(pred));
  return *this;
}

}  // namespace prfaas::config
