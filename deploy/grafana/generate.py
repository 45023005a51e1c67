#!/usr/bin/env python3
"""Generates the prfaas Grafana dashboards (deploy/grafana/dashboards/*.json).

  generate.py [--out DIR]       write the dashboards (default: dashboards/ beside this file)
  generate.py --check DIR       exit 1 if the JSON in DIR differs from what this script writes

The committed JSON is what Grafana provisioning loads; edit this file, not the JSON, and rerun.
Every expression uses metrics from docs/metrics.md or recording rules from
deploy/prometheus/rules/; `make test` checks both, parses every expression with promtool and
validates each dashboard against the Grafana dashboard JSON schema.
"""
import argparse
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
C = 'cluster=~"$cluster"'  # target-label filter for worker and transport series


class Dashboard:
    """Lays panels out on Grafana's 24-column grid, left to right, top to bottom."""

    def __init__(self, uid, title, description):
        self.uid, self.title, self.description = uid, title, description
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"type": "row", "id": len(self.panels) + 1, "title": title,
                            "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def _targets(self, queries):
        return [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                 "legendFormat": legend, "range": True}
                for i, (expr, legend) in enumerate(queries)]

    def timeseries(self, title, description, queries, unit, w=12, h=8, stack=False):
        self.panels.append({
            "type": "timeseries", "id": len(self.panels) + 1, "title": title,
            "description": description, "datasource": DS, "gridPos": self._place(w, h),
            "targets": self._targets(queries),
            "fieldConfig": {"defaults": {"unit": unit, "custom": {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if stack else 0,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"}}},
                "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True, "calcs": []},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
        })

    def stat(self, title, description, expr, unit, w=6, h=4):
        self.panels.append({
            "type": "stat", "id": len(self.panels) + 1, "title": title,
            "description": description, "datasource": DS, "gridPos": self._place(w, h),
            "targets": self._targets([(expr, "")]),
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"graphMode": "area", "colorMode": "value", "justifyMode": "auto",
                        "textMode": "auto", "wideLayout": True, "showPercentChange": False,
                        "percentChangeColorMode": "standard", "orientation": "auto",
                        "reduceOptions": {"calcs": ["lastNotNull"], "values": False}},
        })

    def to_json(self):
        variables = [
            {"type": "datasource", "name": "datasource", "label": "Prometheus",
             "query": "prometheus", "refresh": 1, "hide": 0},
            {"type": "query", "name": "cluster", "label": "Cluster", "datasource": DS,
             "query": 'label_values(up{job=~"prfaas.*"}, cluster)', "definition":
             'label_values(up{job=~"prfaas.*"}, cluster)', "refresh": 2, "multi": True,
             "includeAll": True, "allValue": ".*", "sort": 1, "hide": 0},
        ]
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["prfaas"], "timezone": "utc", "editable": True, "graphTooltip": 1,
            "refresh": "30s", "schemaVersion": 39, "version": 1,
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables},
            "annotations": {"list": [{
                "name": "Role flips", "enable": True, "iconColor": "orange", "datasource": DS,
                "expr": "changes(prfaas_router_role_flips_total[1m]) > 0",
                "titleFormat": "role flip in {{target_cluster}} to {{role}}"}]},
            "links": [{"title": "prfaas", "type": "dashboards", "tags": ["prfaas"],
                       "asDropdown": True, "icon": "external link", "includeVars": True,
                       "keepTime": True, "targetBlank": False, "tooltip": "", "url": ""}],
            "panels": self.panels,
        }


def overview():
    d = Dashboard("prfaas-overview", "prfaas / Overview",
                  "Throughput, latency by prefill path, errors and the SLOs.")
    d.stat("Requests/s", "Finished API requests per second.",
           f"sum(rate(prfaas_router_requests_total[{RATE}]))", "reqps")
    d.stat("Offload ratio", "Share of requests whose prefill ran in the PrfaaS cluster.",
           "prfaas_router:offload_ratio:rate5m", "percentunit")
    d.stat("Error ratio", "Server errors and timeouts over all requests (SLO: 0.5%).",
           "prfaas_router:request_errors:ratio_rate5m", "percentunit")
    d.stat("TTFT SLO misses", "Requests slower than 2 s to the first token (SLO: 1%).",
           "prfaas_router:ttft_slo_errors:ratio_rate5m", "percentunit")
    d.row("Throughput")
    d.timeseries("Requests by path", "Finished requests per second by prefill path.",
                 [(f"sum by (path) (rate(prfaas_router_requests_total[{RATE}]))", "{{path}}")],
                 "reqps", stack=True)
    d.timeseries("Tokens/s", "Prompt tokens in and generated tokens out.",
                 [(f"sum by (path) (rate(prfaas_router_prompt_tokens_total[{RATE}]))", "prompt {{path}}"),
                  (f"sum by (path) (rate(prfaas_router_generated_tokens_total[{RATE}]))", "generated {{path}}")],
                 "short")
    d.row("Latency")
    d.timeseries("TTFT by path", "Time to first token percentiles (5 m windows).",
                 [("path:prfaas_router_ttft_seconds:p50_5m", "p50 {{path}}"),
                  ("path:prfaas_router_ttft_seconds:p90_5m", "p90 {{path}}"),
                  ("path:prfaas_router_ttft_seconds:p99_5m", "p99 {{path}}")], "s")
    d.timeseries("TPOT by path", "Time per output token percentiles (5 m windows).",
                 [("path:prfaas_router_tpot_seconds:p50_5m", "p50 {{path}}"),
                  ("path:prfaas_router_tpot_seconds:p90_5m", "p90 {{path}}"),
                  ("path:prfaas_router_tpot_seconds:p99_5m", "p99 {{path}}")], "s")
    d.timeseries("End-to-end latency by path", "Request received to last token.",
                 [("path:prfaas_router_e2e_seconds:p50_5m", "p50 {{path}}"),
                  ("path:prfaas_router_e2e_seconds:p99_5m", "p99 {{path}}")], "s")
    d.timeseries("In flight", "Requests admitted and not finished.",
                 [("sum by (path) (prfaas_router_in_flight_requests)", "{{path}}")], "short")
    d.row("Errors")
    d.timeseries("Errors by status", "Non-ok requests per second by status and path.",
                 [(f'sum by (status, path) (rate(prfaas_router_requests_total{{status!="ok"}}[{RATE}]))',
                   "{{status}} {{path}}")], "reqps", stack=True)
    d.timeseries("SLO error ratios", "Fraction of requests missing each SLO, against its budget.",
                 [("prfaas_router:ttft_slo_errors:ratio_rate1h", "TTFT > 2 s (1 h)"),
                  ("prfaas_router:request_errors:ratio_rate1h", "errors (1 h)"),
                  ("vector(0.01)", "TTFT budget"), ("vector(0.005)", "error budget")],
                 "percentunit")
    return d


def routing():
    d = Dashboard("prfaas-routing", "prfaas / Routing",
                  "Selective offload: threshold t, offload ratio and why the policy decided.")
    d.timeseries("Offload threshold t", "Current threshold (uncached tokens) and the planner's recommendation.",
                 [("max(prfaas_router_offload_threshold_tokens)", "t (live)"),
                  ("max(prfaas_router_planner_threshold_tokens)", "t (planner)")], "short")
    d.timeseries("Offload ratio", "Share of requests, and of uncached prefill tokens, sent to PrfaaS.",
                 [("prfaas_router:offload_ratio:rate5m", "requests"),
                  ("prfaas_router:offload_token_ratio:rate5m", "uncached tokens")], "percentunit")
    d.timeseries("Decisions by reason", "Routing decisions per second by path and recorded reason.",
                 [(f"sum by (path, reason) (rate(prfaas_router_routing_decisions_total[{RATE}]))",
                   "{{path}}: {{reason}}")], "ops", stack=True)
    d.timeseries("Decisions by policy", "Which policy decided (baselines in comparisons).",
                 [(f"sum by (policy) (rate(prfaas_router_routing_decisions_total[{RATE}]))",
                   "{{policy}}")], "ops")
    d.row("Inputs to the policy")
    d.timeseries("Link utilisation vs offload", "Egress utilisation of each link next to the offload ratio.",
                 [("link:prfaas_transport_egress_utilisation:ratio_rate1m", "{{src_cluster}} -> {{dst_cluster}}"),
                  ("prfaas_router:offload_ratio:rate5m", "offload ratio")], "percentunit")
    d.timeseries("PrfaaS prefill queue", "Uncached prompt tokens waiting in the prefill queues, by cluster.",
                 [(f'sum by (cluster) (prfaas_worker_queued_tokens{{service="prefill", {C}}})', "{{cluster}}")],
                 "short")
    d.row("Failures and rebalancing")
    d.timeseries("Re-routes by reason", "Requests re-routed after a failure.",
                 [(f"sum by (reason) (rate(prfaas_router_reroutes_total[{RATE}]))", "{{reason}}")], "ops")
    d.timeseries("Workers by state", "Workers the router knows, by cluster, role and state.",
                 [("max by (target_cluster, role, state) (prfaas_router_workers)",
                   "{{target_cluster}} {{role}} {{state}}")], "short")
    d.timeseries("Planner: prefill workers", "N_p the planner recommends, and role flips applied.",
                 [("max by (target_cluster) (prfaas_router_planner_prefill_workers)", "N_p {{target_cluster}}"),
                  ("sum by (target_cluster, role) (increase(prfaas_router_role_flips_total[1h]))",
                   "flips to {{role}} / h")], "short")
    return d


def links():
    d = Dashboard("prfaas-links", "prfaas / Links",
                  "KV-bundle traffic: egress against capacity, RTT, retransmits, backlog, failures.")
    d.timeseries("Egress vs capacity", "Bundle payload egress per link and the configured capacity.",
                 [("link:prfaas_transport_egress_bits_per_second:rate1m", "{{src_cluster}} -> {{dst_cluster}}"),
                  ("8 * max by (src_cluster, dst_cluster) (prfaas_router_link_capacity_bytes_per_second)",
                   "capacity {{src_cluster}} -> {{dst_cluster}}")], "bps")
    d.timeseries("Utilisation", "Egress over capacity (alert at 90% for 10 m).",
                 [("link:prfaas_transport_egress_utilisation:ratio_rate1m", "{{src_cluster}} -> {{dst_cluster}}")],
                 "percentunit")
    d.timeseries("RTT", "Worst smoothed RTT per link (TCP_INFO).",
                 [("link:prfaas_transport_rtt_seconds:max", "{{src_cluster}} -> {{dst_cluster}}")], "s")
    d.timeseries("Retransmits", "Retransmitted TCP segments per second per link.",
                 [("link:prfaas_transport_retransmits:rate5m", "{{src_cluster}} -> {{dst_cluster}}")], "short")
    d.timeseries("Backlog", "Bytes queued or in flight per link, and the policy's view.",
                 [("link:prfaas_transport_backlog_bytes:sum", "{{src_cluster}} -> {{dst_cluster}}"),
                  ("max by (src_cluster, dst_cluster) (prfaas_router_link_backlog_bytes)",
                   "policy view {{src_cluster}} -> {{dst_cluster}}")], "bytes")
    d.timeseries("Goodput per peer", "EWMA of committed bytes per second, by sending worker and peer.",
                 [(f"prfaas_transport_link_goodput_bytes_per_second{{{C}}}", "{{instance}} -> {{peer}}")], "Bps")
    d.row("Bundles")
    d.timeseries("Bundles by result", "Bundle sessions per second by cluster, role and result.",
                 [(f"sum by (cluster, role, result) (rate(prfaas_transport_bundles_total{{{C}}}[{RATE}]))",
                   "{{cluster}} {{role}} {{result}}")], "ops")
    d.timeseries("Send failure ratio", "Share of sent bundles aborted, per sending cluster (alert at 5%).",
                 [(f"cluster:prfaas_transport_send_failures:ratio_rate5m{{{C}}}", "{{cluster}}")], "percentunit")
    d.timeseries("Aborts by reason", "Aborted bundle sessions per second.",
                 [(f"sum by (cluster, reason) (rate(prfaas_transport_aborts_total{{{C}}}[{RATE}]))", "{{cluster}} {{reason}}")], "ops")
    d.timeseries("Bundle duration p99", "First segment to commit, by peer cluster.",
                 [(f"histogram_quantile(0.99, sum by (peer_cluster, le) "
                   f"(rate(prfaas_transport_bundle_duration_seconds_bucket{{{C}}}[{RATE}])))",
                   "{{peer_cluster}}")], "s")
    d.timeseries("Connections", "Open data connections (stripes) by peer cluster.",
                 [(f"sum by (cluster, peer_cluster) (prfaas_transport_link_connections{{{C}}})",
                   "{{cluster}} -> {{peer_cluster}}")], "short")
    return d


def caches():
    d = Dashboard("prfaas-caches", "prfaas / Caches",
                  "Hybrid prefix cache: attention-KV hits against usable (state-checkpoint) hits.")
    d.timeseries("Worker hit rate: attention vs checkpoint",
                 "Token hit rate of the local prefix caches. The gap is prefix the attention KV covers "
                 "but no recurrent-state checkpoint does.",
                 [(f"cluster:prfaas_worker_prefix_cache_hit_ratio:rate5m{{{C}}}", "{{cluster}} {{service}} {{kind}}")],
                 "percentunit")
    d.timeseries("Router index hit rate", "Best-worker hit rate the global index predicts, per cluster.",
                 [("target_cluster:prfaas_router_cache_hit_ratio:rate5m", "{{target_cluster}} {{kind}}")],
                 "percentunit")
    d.timeseries("Evictions", "LRU evictions per second: attention blocks and state checkpoints.",
                 [(f"cluster:prfaas_worker_prefix_cache_evictions:rate5m{{{C}}}", "{{cluster}} {{kind}}")], "ops")
    d.timeseries("Lookups: hits vs misses", "Prefix-cache lookups per second with and without a hit.",
                 [(f"sum by (kind) (rate(prfaas_worker_prefix_cache_hits_total{{{C}}}[{RATE}]))", "hit {{kind}}"),
                  (f"sum by (kind) (rate(prfaas_worker_prefix_cache_misses_total{{{C}}}[{RATE}]))", "miss {{kind}}")],
                 "ops")
    d.row("Sizes")
    d.timeseries("Resident entries", "Blocks and checkpoints held by the workers.",
                 [(f"sum by (cluster, kind) (prfaas_worker_prefix_cache_entries{{{C}}})", "{{cluster}} {{kind}}")],
                 "short")
    d.timeseries("Router index size", "Entries in the global cache index, and event rate.",
                 [("max by (target_cluster, kind) (prfaas_router_cache_index_blocks)", "{{target_cluster}} {{kind}}"),
                  (f"sum by (target_cluster, event) (rate(prfaas_router_cache_events_total[{RATE}]))",
                   "{{event}}/s {{target_cluster}}")], "short")
    return d


def workers():
    d = Dashboard("prfaas-workers", "prfaas / Workers",
                  "Per-worker queues, batches, KV/state capacity and step latency.")
    d.timeseries("Waiting requests", "Queue depth per worker and service.",
                 [(f"prfaas_worker_waiting_requests{{{C}}}", "{{instance}} {{service}}")], "short")
    d.timeseries("Running requests", "Sequences in the running batch.",
                 [(f"prfaas_worker_running_requests{{{C}}}", "{{instance}} {{service}}")], "short")
    d.timeseries("Queued prefill tokens", "Uncached prompt tokens waiting, per worker.",
                 [(f'prfaas_worker_queued_tokens{{service="prefill", {C}}}', "{{instance}}")], "short")
    d.timeseries("Batch size", "Sequences per step, p50 and p99 per cluster and service.",
                 [(f"histogram_quantile(0.5, sum by (cluster, service, le) (rate(prfaas_worker_batch_size_bucket{{{C}}}[{RATE}])))",
                   "p50 {{cluster}} {{service}}"),
                  (f"histogram_quantile(0.99, sum by (cluster, service, le) (rate(prfaas_worker_batch_size_bucket{{{C}}}[{RATE}])))",
                   "p99 {{cluster}} {{service}}")], "short")
    d.row("Capacity")
    d.timeseries("KV/state pool use", "Used over capacity per cluster and pool (alert at 95% per worker).",
                 [(f"cluster:prfaas_worker_kv_used:ratio{{{C}}}", "{{cluster}} {{pool}}")], "percentunit")
    d.timeseries("KV/state bytes per worker", "Used, reserved and total bytes per pool.",
                 [(f"prfaas_worker_kv_used_bytes{{{C}}}", "used {{instance}} {{pool}}"),
                  (f"prfaas_worker_kv_reserved_bytes{{{C}}}", "reserved {{instance}} {{pool}}"),
                  (f"prfaas_worker_kv_capacity_bytes{{{C}}}", "total {{instance}} {{pool}}")], "bytes")
    d.row("Latency")
    d.timeseries("Prefill duration p99", "Compute time of one prefill, per cluster.",
                 [(f"histogram_quantile(0.99, sum by (cluster, le) (rate(prfaas_worker_prefill_duration_seconds_bucket{{{C}}}[{RATE}])))",
                   "{{cluster}}")], "s")
    d.timeseries("Decode step p99", "One continuous-batch decode step, per cluster.",
                 [(f"histogram_quantile(0.99, sum by (cluster, le) (rate(prfaas_worker_decode_step_seconds_bucket{{{C}}}[{RATE}])))",
                   "{{cluster}}")], "s")
    d.timeseries("Engine forward p99", "One forward pass of the layer stack, by phase.",
                 [(f"histogram_quantile(0.99, sum by (cluster, phase, le) (rate(prfaas_engine_forward_seconds_bucket{{{C}}}[{RATE}])))",
                   "{{cluster}} {{phase}}")], "s")
    d.timeseries("Queue wait p99", "Admission to first scheduled step.",
                 [(f"histogram_quantile(0.99, sum by (cluster, service, le) (rate(prfaas_worker_queue_wait_seconds_bucket{{{C}}}[{RATE}])))",
                   "{{cluster}} {{service}}")], "s")
    d.row("Lifecycle")
    d.timeseries("Up and draining", "Scrape health and draining workers, by role.",
                 [(f'sum by (cluster, component) (up{{job=~"prfaas.*", {C}}})', "up {{cluster}} {{component}}"),
                  (f"sum by (cluster) (prfaas_worker_draining{{{C}}})", "draining {{cluster}}")], "short")
    d.timeseries("Current roles", "Workers by current role (changes on a rebalancer flip).",
                 [(f"count by (cluster, role) (prfaas_worker_info{{{C}}})", "{{cluster}} {{role}}")], "short")
    return d


DASHBOARDS = {"overview": overview, "routing": routing, "links": links, "caches": caches,
              "workers": workers}


def render_all():
    return {f"{name}.json": json.dumps(make().to_json(), indent=2, sort_keys=False) + "\n"
            for name, make in DASHBOARDS.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards"))
    ap.add_argument("--check", metavar="DIR", help="compare instead of writing")
    args = ap.parse_args()
    files = render_all()
    if args.check:
        stale = []
        for name, text in files.items():
            path = os.path.join(args.check, name)
            if not os.path.exists(path) or open(path).read() != text:
                stale.append(path)
        extra = set(f for f in os.listdir(args.check) if f.endswith(".json")) - set(files)
        stale += [os.path.join(args.check, f) + " (not generated)" for f in sorted(extra)]
        for path in stale:
            print(f"stale dashboard: {path}: rerun deploy/grafana/generate.py")
        return 1 if stale else 0
    os.makedirs(args.out, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(args.out, name), "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
