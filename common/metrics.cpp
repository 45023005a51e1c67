#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace prfaas::metrics {
namespace {

void AtomicAdd(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

// Prometheus text format wants Go-style floats: +Inf, -Inf, NaN, and enough digits to
// round-trip.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  // Shortest text that round-trips (0.1 stays "0.1").
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, ec == std::errc() ? end : buf);
}

std::string EscapeLabelValue(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string EscapeHelp(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string LabelString(const std::vector<std::string>& names, const LabelValues& values,
                        const std::string& extra_name = {}, const std::string& extra_value = {}) {
  if (names.empty() && extra_name.empty()) return {};
  std::string s = "{";
  bool first = true;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!first) s += ',';
    first = false;
    s += names[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    if (!first) s += ',';
    s += extra_name + "=\"" + extra_value + "\"";
  }
  s += '}';
  return s;
}

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "prfaas metrics: %s\n", msg.c_str());
  std::abort();
}

}  // namespace

void Counter::Inc(double v) {
  if (v < 0) Die("counter decremented");
  AtomicAdd(value_, v);
}

void Gauge::Add(double v) {
  AtomicAdd(value_, v);
}

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end()) {
    Die("histogram bounds must be strictly increasing");
  }
  buckets_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double v) {
  // Buckets are upper-inclusive (le), as Prometheus defines them.
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Take() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    acc += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(acc);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  // The count must equal the +Inf bucket; use the bucket total so a concurrent Observe cannot
  // make the exposition inconsistent.
  s.count = acc;
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i) b.push_back(start + width * i);
  return b;
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                               0.5,   1,      2.5,   5,    10,    25,   50,  100};
  return kBuckets;
}

template <typename M>
M& Family<M>::WithLabels(const LabelValues& values) {
  if (values.size() != labels_.size()) {
    Die("metric " + name_ + " expects " + std::to_string(labels_.size()) + " label values, got " +
        std::to_string(values.size()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(values);
  if (it == children_.end()) it = children_.emplace(values, make_()).first;
  return *it->second;
}

template <typename M>
void Family<M>::Remove(const LabelValues& values) {
  std::lock_guard<std::mutex> lock(mu_);
  children_.erase(values);
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

bool IsValidMetricName(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
              (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(const std::string& name) {
  if (name.empty() || name.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' ||
              (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

template <typename M>
Family<M>& Registry::Register(const std::string& name, const std::string& help, const char* type,
                              std::vector<std::string> labels,
                              std::function<std::unique_ptr<M>()> make) {
  if (!IsValidMetricName(name)) Die("invalid metric name '" + name + "'");
  for (const auto& l : labels) {
    if (!IsValidLabelName(l) || l == "le") Die("invalid label name '" + l + "' on " + name);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  if (it != entries_.end()) {
    if (it->second.type != type || it->second.labels != labels) {
      Die("metric " + name + " re-registered with a different type or labels");
    }
    return *static_cast<Family<M>*>(it->second.family.get());
  }
  auto fam = std::shared_ptr<Family<M>>(new Family<M>(name, help, labels, std::move(make)));
  Entry e;
  e.type = type;
  e.labels = labels;
  e.family = fam;
  Family<M>* f = fam.get();
  std::string type_str = type;
  e.render = [f, type_str](std::string& out) {
    out += "# HELP " + f->name_ + " " + EscapeHelp(f->help_) + "\n";
    out += "# TYPE " + f->name_ + " " + type_str + "\n";
    std::lock_guard<std::mutex> l(f->mu_);
    for (const auto& [values, child] : f->children_) {
      if constexpr (std::is_same_v<M, metrics::Histogram>) {
        auto snap = child->Take();
        for (size_t i = 0; i < snap.upper_bounds.size(); ++i) {
          out += f->name_ + "_bucket" +
                 LabelString(f->labels_, values, "le", FormatValue(snap.upper_bounds[i])) + " " +
                 std::to_string(snap.cumulative[i]) + "\n";
        }
        out += f->name_ + "_bucket" + LabelString(f->labels_, values, "le", "+Inf") + " " +
               std::to_string(snap.cumulative.back()) + "\n";
        out += f->name_ + "_sum" + LabelString(f->labels_, values) + " " + FormatValue(snap.sum) +
               "\n";
        out += f->name_ + "_count" + LabelString(f->labels_, values) + " " +
               std::to_string(snap.count) + "\n";
      } else {
        out +=
            f->name_ + LabelString(f->labels_, values) + " " + FormatValue(child->Value()) + "\n";
      }
    }
  };
  entries_.emplace(name, std::move(e));
  order_.push_back(name);
  return *f;
}

Family<Counter>& Registry::Counter(const std::string& name, const std::string& help,
                                   std::vector<std::string> labels) {
  return Register<metrics::Counter>(name, help, "counter", std::move(labels),
                                    [] { return std::make_unique<metrics::Counter>(); });
}

Family<Gauge>& Registry::Gauge(const std::string& name, const std::string& help,
                               std::vector<std::string> labels) {
  return Register<metrics::Gauge>(name, help, "gauge", std::move(labels),
                                  [] { return std::make_unique<metrics::Gauge>(); });
}

Family<Histogram>& Registry::Histogram(const std::string& name, const std::string& help,
                                       std::vector<std::string> labels,
                                       std::vector<double> upper_bounds) {
  // Validate the bounds once, at registration, rather than at the first child.
  metrics::Histogram probe(upper_bounds);
  (void)probe;
  return Register<metrics::Histogram>(
      name, help, "histogram", std::move(labels),
      [b = std::move(upper_bounds)] { return std::make_unique<metrics::Histogram>(b); });
}

void Registry::AddCollectHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::Render() const {
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hooks = hooks_;
  }
  for (auto& h : hooks) h();
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& name : order_) entries_.at(name).render(out);
  return out;
}

Registry& DefaultRegistry() {
  static Registry* r = new Registry();  // never destroyed: metrics may be touched at exit
  return *r;
}

}  // namespace prfaas::metrics
