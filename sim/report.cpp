#include "sim/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

#include <fmt/format.h>

#include "router/policy/policy.h"

namespace prfaas::sim {

double Percentile(const std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  double pos = q * static_cast<double>(v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, v.size() - 1);
  double f = pos - static_cast<double>(lo);
  return v[lo] + (v[hi] - v[lo]) * f;
}

Dist Summarise(std::vector<double> v) {
  Dist d;
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  double s = 0;
  for (double x : v) s += x;
  d.mean = s / static_cast<double>(v.size());
  d.p50 = Percentile(v, 0.5);
  d.p90 = Percentile(v, 0.9);
  d.p99 = Percentile(v, 0.99);
  d.max = v.back();
  return d;
}

std::vector<double> TtftValues(const SimResult& r) {
  std::vector<double> v;
  for (const auto& x : r.records) {
    if (x.first_token_s >= 0) v.push_back(x.ttft());
  }
  return v;
}

Summary Summarise(const SimResult& r, const SloSpec& slo) {
  Summary s;
  s.name = r.name;
  s.policy = r.policy;
  s.policy_library = r.policy_library;
  s.requests = r.records.size();
  s.events = r.events;
  std::vector<double> ttft, tpot, wait, xfer;
  double first_arrival = std::numeric_limits<double>::infinity(), last_arrival = 0, last_finish = 0;
  size_t routed = 0, offloaded = 0, good = 0;
  double out_tokens = 0;
  for (const auto& x : r.records) {
    first_arrival = std::min(first_arrival, x.arrival_s);
    last_arrival = std::max(last_arrival, x.arrival_s);
    if (x.prefill_worker < 0) {
      ++s.dropped;
      continue;
    }
    ++routed;
    if (x.path == static_cast<uint8_t>(router::PrefillPath::kRemotePrfaas)) ++offloaded;
    if (!x.done()) continue;
    ++s.completed;
    last_finish = std::max(last_finish, x.finish_s);
    out_tokens += static_cast<double>(x.output_tokens);
    ttft.push_back(x.ttft());
    tpot.push_back(x.tpot());
    double ready = std::max(x.prefill_end_s, x.transfer_end_s);
    wait.push_back((x.routed_s - x.arrival_s) + (x.prefill_start_s - x.prefill_enqueue_s) +
                   (x.decode_start_s - ready));
    xfer.push_back(std::max(0.0, x.transfer_end_s - x.prefill_end_s));
    if (x.ttft() <= slo.ttft_s && x.tpot() * 1e3 <= slo.tpot_ms) ++good;
  }
  if (r.records.empty()) first_arrival = 0;
  s.span_s = std::max(last_finish - first_arrival, 1e-9);
  s.offered_rps = r.records.size() > 1 && last_arrival > first_arrival
                      ? static_cast<double>(r.records.size() - 1) / (last_arrival - first_arrival)
                      : 0;
  s.throughput_rps = static_cast<double>(s.completed) / s.span_s;
  s.output_tokens_per_s = out_tokens / s.span_s;
  s.ttft = Summarise(std::move(ttft));
  s.tpot = Summarise(std::move(tpot));
  s.wait = Summarise(std::move(wait));
  s.transfer = Summarise(std::move(xfer));
  s.slo_attainment = s.requests ? static_cast<double>(good) / static_cast<double>(s.requests) : 0;
  s.offload_ratio = routed ? static_cast<double>(offloaded) / static_cast<double>(routed) : 0;
  s.prefill_cache_hit = r.prefill_lookup_tokens ? static_cast<double>(r.prefill_hit_tokens) /
                                                      static_cast<double>(r.prefill_lookup_tokens)
                                                : 0;
  s.decode_cache_hit = r.prefill_lookup_tokens ? static_cast<double>(r.decode_hit_tokens) /
                                                     static_cast<double>(r.prefill_lookup_tokens)
                                               : 0;
  double span = std::max(r.end_time_s, 1e-9);
  for (const auto& l : r.links) {
    LinkSummary ls;
    ls.name = l.name;
    ls.gbytes = l.bytes / 1e9;
    ls.mean_gbps = l.bytes * 8 / span / 1e9;
    for (double b : l.bucket_bytes) ls.peak_gbps = std::max(ls.peak_gbps, b * 8 / r.bucket_s / 1e9);
    ls.utilisation = l.nominal_bps > 0 ? ls.mean_gbps * 1e9 / l.nominal_bps : 0;
    s.links.push_back(ls);
  }
  if (!r.threshold_series.empty()) s.final_threshold = r.threshold_series.back().second;
  s.rebalances = r.rebalances;
  s.role_flips = r.role_flips;
  return s;
}

nlohmann::json SummaryToJson(const Summary& s) {
  auto dist = [](const Dist& d) {
    return nlohmann::json{
        {"mean", d.mean}, {"p50", d.p50}, {"p90", d.p90}, {"p99", d.p99}, {"max", d.max}};
  };
  nlohmann::json links = nlohmann::json::array();
  for (const auto& l : s.links) {
    links.push_back({{"name", l.name},
                     {"mean_gbps", l.mean_gbps},
                     {"peak_gbps", l.peak_gbps},
                     {"utilisation", l.utilisation},
                     {"gbytes", l.gbytes}});
  }
  nlohmann::json flips = nlohmann::json::array();
  for (const auto& f : s.role_flips) {
    flips.push_back({{"advised_s", f.advised_s},
                     {"done_s", f.done_s},
                     {"worker", f.worker},
                     {"role", f.to_prefill ? "prefill" : "decode"}});
  }
  nlohmann::json advice = nlohmann::json::array();
  for (const auto& a : s.rebalances) {
    if (!a.flip) continue;  // the flips are the decisions worth listing
    advice.push_back({{"at_s", a.at_s},
                      {"n_p", a.current_n_p},
                      {"target_n_p", a.target_n_p},
                      {"target_threshold", a.target_threshold},
                      {"lambda", a.current_lambda},
                      {"target_lambda", a.target_lambda},
                      {"summary", a.summary}});
  }
  return nlohmann::json{
      {"name", s.name},
      {"policy", s.policy},
      {"policy_library", s.policy_library},
      {"requests", s.requests},
      {"completed", s.completed},
      {"dropped", s.dropped},
      {"span_s", s.span_s},
      {"offered_rps", s.offered_rps},
      {"throughput_rps", s.throughput_rps},
      {"output_tokens_per_s", s.output_tokens_per_s},
      {"ttft_s", dist(s.ttft)},
      {"tpot_s", dist(s.tpot)},
      {"wait_s", dist(s.wait)},
      {"transfer_s", dist(s.transfer)},
      {"slo_attainment", s.slo_attainment},
      {"offload_ratio", s.offload_ratio},
      {"prefill_cache_hit_rate", s.prefill_cache_hit},
      {"decode_cache_hit_rate", s.decode_cache_hit},
      {"links", links},
      {"final_threshold", s.final_threshold},
      {"rebalance_decisions", s.rebalances.size()},
      {"rebalance_flips", advice},
      {"role_flips", flips},
      {"events", s.events},
  };
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  if (!out) return Unavailable("cannot write '" + path + "'");
  out << text;
  if (!out) return Unavailable("write failed for '" + path + "'");
  return Status::Ok();
}

Status WriteRequestsJsonl(const SimResult& r, const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return Unavailable("cannot write '" + path + "'");
  std::string line;
  for (const auto& x : r.records) {
    auto worker = [&](int32_t w) {
      return w >= 0 ? "\"" + r.worker_names[static_cast<size_t>(w)] + "\"" : std::string("null");
    };
    auto t = [](double v) { return v >= 0 ? fmt::format("{:.6f}", v) : std::string("null"); };
    double ready = std::max(x.prefill_end_s, x.transfer_end_s);
    line = fmt::format(
        "{{\"id\":{},\"arrival_s\":{:.6f},\"input_tokens\":{},\"output_tokens\":{},"
        "\"cached_tokens\":{},\"decode_cached_tokens\":{},\"path\":\"{}\",\"reason\":\"{}\","
        "\"threshold\":{},\"prefill_worker\":{},\"decode_worker\":{},\"transfer_bytes\":{:.0f},"
        "\"router_wait_s\":{},\"queue_s\":{},\"prefill_s\":{},\"transfer_s\":{},\"decode_wait_s\":{"
        "},\"decode_s\":{},"
        "\"ttft_s\":{},\"tpot_s\":{},\"e2e_s\":{}}}\n",
        x.id, x.arrival_s, x.input_tokens, x.output_tokens, x.cached_tokens, x.decode_cached_tokens,
        router::PrefillPathName(static_cast<router::PrefillPath>(x.path)),
        router::ReasonName(static_cast<router::Reason>(x.reason)), x.threshold,
        worker(x.prefill_worker), worker(x.decode_worker), x.transfer_bytes,
        t(x.routed_s >= 0 ? x.routed_s - x.arrival_s : -1),
        t(x.prefill_start_s >= 0 ? x.prefill_start_s - x.arrival_s : -1),
        t(x.prefill_end_s >= 0 ? x.prefill_end_s - x.prefill_start_s : -1),
        t(x.transfer_end_s >= 0 ? std::max(0.0, x.transfer_end_s - x.prefill_end_s) : -1),
        t(x.decode_start_s >= 0 ? x.decode_start_s - ready : -1),
        t(x.done() ? x.finish_s - x.decode_start_s : -1), t(x.first_token_s >= 0 ? x.ttft() : -1),
        t(x.done() ? x.tpot() : -1), t(x.done() ? x.finish_s - x.arrival_s : -1));
    std::fwrite(line.data(), 1, line.size(), f);
  }
  if (std::fclose(f) != 0) return Unavailable("write failed for '" + path + "'");
  return Status::Ok();
}

std::vector<std::pair<double, double>> ThroughputSeries(const SimResult& r) {
  std::vector<double> counts;
  for (const auto& x : r.records) {
    if (!x.done()) continue;
    size_t b = static_cast<size_t>(x.finish_s / r.bucket_s);
    if (counts.size() <= b) counts.resize(b + 1, 0);
    counts[b] += 1;
  }
  std::vector<std::pair<double, double>> out;
  for (size_t b = 0; b < counts.size(); ++b) {
    out.emplace_back((static_cast<double>(b) + 0.5) * r.bucket_s, counts[b] / r.bucket_s);
  }
  return out;
}

namespace {

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

// "Nice" tick step for a range: 1, 2 or 5 times a power of ten.
double TickStep(double range) {
  if (range <= 0) return 1;
  double raw = range / 5;
  double p = std::pow(10, std::floor(std::log10(raw)));
  double m = raw / p;
  return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

}  // namespace

std::string LineChartSvg(const std::string& title, const std::string& xlabel,
                         const std::string& ylabel, const std::vector<Series>& series) {
  const double W = 720, H = 420, L = 70, R = 180, T = 40, B = 55;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = 0, y1 = -x0;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      y0 = std::min(y0, y);
      y1 = std::max(y1, y);
    }
  }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y1 = 1;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  y1 *= 1.05;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" "
      "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
      W, H, (W - R + L) / 2, Escape(title));
  o += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", L, T,
      W - L - R, H - T - B);
  double xs = TickStep(x1 - x0), ys = TickStep(y1 - y0);
  for (double x = std::ceil(x0 / xs) * xs; x <= x1 + 1e-9 * xs; x += xs) {
    o += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4:g}</text>\n",
        px(x), T, H - B, H - B + 16, x);
  }
  for (double y = std::ceil(y0 / ys) * ys; y <= y1 + 1e-9 * ys; y += ys) {
    o += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5:g}</text>\n",
        L, py(y), W - R, L - 6, py(y) + 4, y);
  }
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (W - R + L) / 2,
                   H - 15, Escape(xlabel));
  o += fmt::format(
      "<text x=\"18\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
      "{0})\">{1}</text>\n",
      (H - B + T) / 2, Escape(ylabel));
  for (size_t k = 0; k < series.size(); ++k) {
    const char* c = kColours[k % std::size(kColours)];
    std::string pts;
    // Thin very long series so files stay small: keep at most ~2000 points.
    size_t stride = std::max<size_t>(1, series[k].points.size() / 2000);
    for (size_t i = 0; i < series[k].points.size(); i += stride) {
      const auto& [x, y] = series[k].points[i];
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      pts += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    }
    o += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>\n",
                     c, pts);
    double ly = T + 14 + 18 * static_cast<double>(k);
    o += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"3\"/>"
        "<text x=\"{4}\" y=\"{5}\">{6}</text>\n",
        W - R + 10, ly, W - R + 30, c, W - R + 35, ly + 4, Escape(series[k].label));
  }
  o += "</svg>\n";
  return o;
}

std::string CdfSvg(const std::string& title, const std::string& xlabel,
                   const std::vector<std::pair<std::string, std::vector<double>>>& samples) {
  std::vector<Series> series;
  for (const auto& [label, values] : samples) {
    std::vector<double> v = values;
    std::sort(v.begin(), v.end());
    Series s{label, {}};
    size_t n = v.size();
    size_t stride = std::max<size_t>(1, n / 1000);
    for (size_t i = 0; i < n; i += stride) {
      s.points.emplace_back(v[i], static_cast<double>(i + 1) / static_cast<double>(n));
    }
    if (n) s.points.emplace_back(v.back(), 1.0);
    series.push_back(std::move(s));
  }
  return LineChartSvg(title, xlabel, "fraction of requests", series);
}

}  // namespace prfaas::sim
