#!/usr/bin/env python3
"""Cross-checks metric names: docs/metrics.md <-> Prometheus rules <-> Grafana dashboards <-> a scrape.

  check_metrics.py --doc docs/metrics.md --rules R.yaml ... --dashboards D.json ... [--scrape F ...]
  check_metrics.py --doc docs/metrics.md --sample-scrape      (print an exposition of every metric)

Checks:
1. The tables of docs/metrics.md are well formed: names match Prometheus' grammar and start with
   prfaas_, counters (and only counters) end in _total, types are counter|gauge|histogram, no
   duplicates.
2. Every metric name in a rule or panel expression is documented (histograms may be used as
   <name>_bucket/_sum/_count), a recording rule defined in the rules files, or `up`.
3. With --scrape (Prometheus text files from /metrics of a running topology; several may be given
   and are merged): every documented metric that a rule or panel uses is exported, with the
   documented type, and every exported prfaas_ metric is documented.
Problems are printed as `FILE: where: message`; exit 1 if any, 2 on a usage error.
"""
import argparse
import json
import re
import sys

import yaml

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|")
EXTERNAL = {"up"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
            "bool", "offset", "inf", "nan", "atan2"}


def parse_doc(path, problems):
    """{name: (type, [labels])} from the markdown tables whose first column is a `prfaas_` name."""
    metrics = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            m = ROW.match(line)
            if not m or not m.group(1).startswith("prfaas_"):
                continue
            name, kind = m.group(1), m.group(2)
            labels = re.findall(r"`([^`]+)`", m.group(3))
            where = f"{path}:{lineno}: {name}"
            if not NAME.match(name) or ":" in name:
                problems.append(f"{where}: not a valid metric name")
            if kind not in ("counter", "gauge", "histogram"):
                problems.append(f"{where}: type {kind!r} is not counter, gauge or histogram")
            if (kind == "counter") != name.endswith("_total"):
                problems.append(f"{where}: counters, and only counters, end in _total")
            if kind == "histogram" and name.endswith(HIST_SUFFIXES):
                problems.append(f"{where}: a histogram name must not end in _bucket/_sum/_count")
            if name in metrics:
                problems.append(f"{where}: documented twice")
            metrics[name] = (kind, labels)
    if not metrics:
        problems.append(f"{path}: no metric table rows found")
    return metrics


def metric_names(expr):
    """Metric names in a PromQL expression (strings, matchers, ranges and grouping removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", expr):
        token, call = m.group(1), m.group(2)
        if call or token.lower() in KEYWORDS:
            continue
        names.add(token)
    return names


def rule_exprs(paths, problems):
    recorded, exprs = set(), []
    for path in paths:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                label = rule.get("record") or rule.get("alert")
                if "record" in rule:
                    recorded.add(rule["record"])
                exprs.append((f"{path}: rule {label}", rule.get("expr", "")))
    return recorded, exprs


def dashboard_exprs(paths):
    exprs = []
    for path in paths:
        with open(path) as f:
            dashboard = json.load(f)
        panels = []
        for p in dashboard.get("panels") or []:
            panels.append(p)
            panels.extend(p.get("panels") or [])
        for p in panels:
            for t in p.get("targets") or []:
                exprs.append((f'{path}: panel "{p.get("title")}"', t.get("expr", "")))
        for a in (dashboard.get("annotations") or {}).get("list") or []:
            if "expr" in a:
                exprs.append((f'{path}: annotation "{a.get("name")}"', a["expr"]))
    return exprs


def resolve(name, documented):
    """The documented family a series name belongs to, or None."""
    if name in documented:
        return name
    for suffix in HIST_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and documented.get(base, ("",))[0] == "histogram":
            return base
    return None


def parse_scrape(paths, problems):
    """{family: type} from Prometheus text exposition files."""
    families, samples = {}, set()
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                m = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
                if m:
                    families[m.group(1)] = m.group(2)
                elif line and not line.startswith("#"):
                    samples.add(re.match(r"[^\s{]+", line).group(0))
    for s in samples:
        if s not in families and not any(s.endswith(x) and s[: -len(x)] in families
                                         for x in HIST_SUFFIXES):
            families.setdefault(s, "untyped")
    return families


def sample_scrape(documented):
    out = []
    for name, (kind, labels) in documented.items():
        out.append(f"# HELP {name} sample\n# TYPE {name} {kind}")
        lbl = ",".join(f'{l}="x"' for l in labels)
        if kind == "histogram":
            sep = "," if lbl else ""
            out += [f'{name}_bucket{{{lbl}{sep}le="1"}} 1', f'{name}_bucket{{{lbl}{sep}le="+Inf"}} 1',
                    f"{name}_sum{{{lbl}}} 0.5", f"{name}_count{{{lbl}}} 1"]
        else:
            out.append(f"{name}{{{lbl}}} 1")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--rules", nargs="*", default=[])
    ap.add_argument("--dashboards", nargs="*", default=[])
    ap.add_argument("--scrape", nargs="*", default=[])
    ap.add_argument("--sample-scrape", action="store_true")
    args = ap.parse_args()

    problems = []
    documented = parse_doc(args.doc, problems)
    if args.sample_scrape:
        sys.stdout.write(sample_scrape(documented))
        return 0
    recorded, exprs = rule_exprs(args.rules, problems)
    exprs += dashboard_exprs(args.dashboards)

    used = {}
    for where, expr in exprs:
        for name in sorted(metric_names(expr)):
            family = resolve(name, documented)
            if family:
                used.setdefault(family, where)
            elif name not in recorded and name not in EXTERNAL:
                problems.append(f"{where}: {name}: not in {args.doc} and not a recording rule")

    if args.scrape:
        exported = parse_scrape(args.scrape, problems)
        scrapes = ", ".join(args.scrape)
        for family, where in sorted(used.items()):
            if family not in exported:
                problems.append(f"{where}: {family}: used but not exported by the scrape ({scrapes})")
            elif exported[family] != documented[family][0]:
                problems.append(f"{scrapes}: {family}: exported as {exported[family]}, "
                                f"documented as {documented[family][0]}")
        for family in sorted(exported):
            if family.startswith("prfaas_") and family not in documented:
                problems.append(f"{scrapes}: {family}: exported but not documented in {args.doc}")

    for line in problems:
        print(line)
    if problems:
        print(f"check_metrics: {len(problems)} problem(s)")
        return 1
    print(f"check_metrics: {len(documented)} documented metrics, {len(used)} used by "
          f"{len(exprs)} expressions" + (f", scrape of {len(args.scrape)} file(s) agrees" if args.scrape else "") + ": OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
