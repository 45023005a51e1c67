// Metrics registry with Prometheus text exposition (format 0.0.4).
//
// A Registry owns metric families. A family has a name, help text, a type and a fixed list of
// label names; each distinct tuple of label values is one child series. Children are created on
// first use and live as long as the registry, so hot paths keep the reference:
//
//   auto& reqs = registry.Counter("prfaas_router_requests_total", "Requests by path.", {"path"});
//   Counter& local = reqs.WithLabels({"local"});   // cache this
//   local.Inc();
//
// All updates are lock-free atomics; Render() takes a snapshot under the registry lock.
// Names follow Prometheus conventions: prefix prfaas_, base units, counters end in _total.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"

namespace prfaas::metrics {

using LabelValues = std::vector<std::string>;

class Counter {
 public:
  void Inc(double v = 1.0);  // v must be >= 0
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<double> upper_bounds;  // without +Inf
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf last
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Take() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // per-bucket (non-cumulative), +Inf last
  std::atomic<double> sum_{0.0};
  std::atomic<uint64_t> count_{0};
};

// Bucket helpers.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
std::vector<double> LinearBuckets(double start, double width, int count);
// Default latency buckets in seconds: 1 ms .. ~100 s.
const std::vector<double>& LatencyBuckets();

template <typename M>
class Family {
 public:
  // Returns the child for these label values (created on first use). The number of values must
  // match the family's label names; a mismatch is a programming error and aborts.
  M& WithLabels(const LabelValues& values);
  // Convenience for label-less families.
  M& Get() { return WithLabels({}); }
  // Drops one child (e.g. a worker that left); no-op when absent.
  void Remove(const LabelValues& values);

  const std::string& name() const { return name_; }

 private:
  friend class Registry;
  Family(std::string name, std::string help, std::vector<std::string> labels,
         std::function<std::unique_ptr<M>()> make)
      : name_(std::move(name)),
        help_(std::move(help)),
        labels_(std::move(labels)),
        make_(std::move(make)) {}

  std::string name_, help_;
  std::vector<std::string> labels_;
  std::function<std::unique_ptr<M>()> make_;
  mutable std::mutex mu_;
  std::map<LabelValues, std::unique_ptr<M>> children_;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registering the same name twice with the same type and labels returns the existing family;
  // a conflicting re-registration aborts (it is a programming error, caught by unit tests).
  Family<metrics::Counter>& Counter(const std::string& name, const std::string& help,
                                    std::vector<std::string> labels = {});
  Family<metrics::Gauge>& Gauge(const std::string& name, const std::string& help,
                                std::vector<std::string> labels = {});
  Family<metrics::Histogram>& Histogram(const std::string& name, const std::string& help,
                                        std::vector<std::string> labels,
                                        std::vector<double> upper_bounds);

  // Hooks run at the start of every Render(), to refresh gauges computed from live state.
  void AddCollectHook(std::function<void()> hook);

  // Prometheus text format 0.0.4, families in registration order, children sorted by labels.
  std::string Render() const;

 private:
  struct Entry {
    std::string type;  // "counter" | "gauge" | "histogram"
    std::vector<std::string> labels;
    std::shared_ptr<void> family;
    std::function<void(std::string&)> render;
  };
  template <typename M>
  Family<M>& Register(const std::string& name, const std::string& help, const char* type,
                      std::vector<std::string> labels, std::function<std::unique_ptr<M>()> make);

  mutable std::mutex mu_;
  std::vector<std::string> order_;
  std::map<std::string, Entry> entries_;
  std::vector<std::function<void()>> hooks_;
};

// The process-wide registry used by services; tests may build their own.
Registry& DefaultRegistry();

// Validates a metric or label name against Prometheus' grammar.
bool IsValidMetricName(const std::string& name);
bool IsValidLabelName(const std::string& name);

}  // namespace prfaas::metrics
