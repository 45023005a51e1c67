#!/usr/bin/env python3
"""Validates Grafana dashboards: JSON schema, then every PromQL expression parses.

  check_dashboards.py --schemas DIR DASHBOARD.json ...

1. Each dashboard against dashboard.jsonschema.json (Grafana Foundation SDK, draft 7; strict at
   the dashboard level), each Prometheus target against prometheus.jsonschema.json and each
   panel's `options` against the schema of its panel type where one exists (timeseries, stat, ...).
2. Every target and annotation expression, with Grafana variables substituted ($__rate_interval,
   $cluster, ...), is written as a recording rule into a temporary rules file and parsed by
   `promtool check rules` (promtool cannot parse a bare expression). The group name carries the
   dashboard file and panel title, so a parse error names both.
3. With --required, each dashboard (by uid) has the panels listed for it.
Problems are printed as `FILE: panel "title": field.path: message`; exit 1 if any, 2 on a usage or
environment error.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

# Grafana's built-in and template variables, replaced by values that keep the expression valid.
VARIABLES = [
    (r"\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}|\$__range|\$\{__range\}", "5m"),
    (r"\$__range_s|\$__interval_ms", "300"),
    (r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?", "x"),
]


def substitute(expr):
    for pattern, value in VARIABLES:
        expr = re.sub(pattern, value, expr)
    return expr


def load_schema(schemas, name):
    path = os.path.join(schemas, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def sub_schema(root, definition):
    """A validator for one definition of a schema file (keeping its #/definitions refs)."""
    schema = dict(root)
    schema["$ref"] = f"#/definitions/{definition}"
    return jsonschema.Draft7Validator(schema)


def json_path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out or "(root)"


def best_errors(validator, instance):
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        # A oneOf over panel/row reports "not valid under any"; its best sub-error is the useful one.
        err = jsonschema.exceptions.best_match([err]) if not err.context else \
            jsonschema.exceptions.best_match(err.context)
        path = list(err.absolute_path)
        named = re.match(r"'([^']+)' is a required property", err.message) or \
            re.search(r"\('([^']+)' was unexpected\)", err.message)
        if named:
            path.append(named.group(1))
        yield json_path(path), err.message


def panels_of(dashboard):
    for panel in dashboard.get("panels") or []:
        yield panel
        for inner in panel.get("panels") or []:
            yield inner


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--schemas", required=True, help="directory with dashboard.jsonschema.json etc.")
    ap.add_argument("--required", help="YAML: dashboard uid -> panel titles it must have")
    ap.add_argument("dashboards", nargs="+")
    args = ap.parse_args()
    required = {}
    if args.required:
        with open(args.required) as f:
            required = yaml.safe_load(f) or {}

    root = load_schema(args.schemas, "dashboard.jsonschema.json")
    if root is None:
        print(f"check_dashboards: dashboard.jsonschema.json not found in {args.schemas} "
              f"(expected ../shared/data/schemas/grafana-foundation-sdk beside the repository)",
              file=sys.stderr)
        return 2
    dashboard_validator = jsonschema.Draft7Validator(root)
    prom = load_schema(args.schemas, "prometheus.jsonschema.json")
    target_validator = jsonschema.Draft7Validator(prom) if prom else None
    option_validators = {}

    problems, exprs = [], []
    for path in args.dashboards:
        try:
            with open(path) as f:
                dashboard = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            problems.append(f"{path}: cannot read: {e}")
            continue
        for field, message in best_errors(dashboard_validator, dashboard):
            problems.append(f"{path}: {field}: {message}")
        name = os.path.basename(path)
        titles = {p.get("title") for p in panels_of(dashboard)}
        for title in required.get(dashboard.get("uid"), []):
            if title not in titles:
                problems.append(f'{path}: panels: missing panel "{title}" (required by {args.required})')
        for panel in panels_of(dashboard):
            title = panel.get("title", "?")
            where = f'{path}: panel "{title}"'
            kind = panel.get("type")
            if kind not in option_validators:
                schema = load_schema(args.schemas, f"{kind}.jsonschema.json")
                option_validators[kind] = (sub_schema(schema, "Options")
                                           if schema and "Options" in schema.get("definitions", {})
                                           else None)
            if option_validators[kind] is not None and "options" in panel:
                for field, message in best_errors(option_validators[kind], panel["options"]):
                    problems.append(f"{where}: options.{field}: {message}")
            for i, target in enumerate(panel.get("targets") or []):
                if target_validator is not None:
                    for field, message in best_errors(target_validator, target):
                        problems.append(f"{where}: targets[{i}].{field}: {message}")
                if "expr" in target:
                    exprs.append((f"{name} / {title} / {target.get('refId', i)}", target["expr"]))
                else:
                    problems.append(f"{where}: targets[{i}].expr: missing")
        for i, ann in enumerate((dashboard.get("annotations") or {}).get("list") or []):
            if "expr" in ann:
                exprs.append((f"{name} / annotation {ann.get('name', i)}", ann["expr"]))

    if exprs:
        groups = [{"name": label, "rules": [{"record": "prfaas_dashboard_expr",
                                             "expr": substitute(expr)}]}
                  for label, expr in exprs]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump({"groups": groups}, f, sort_keys=False)
            rules = f.name
        try:
            out = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
        except FileNotFoundError:
            print("check_dashboards: promtool not found (Debian package prometheus)", file=sys.stderr)
            return 2
        finally:
            os.unlink(rules)
        if out.returncode != 0:
            for line in (out.stdout + out.stderr).splitlines():
                m = re.search(r'group "([^"]*)", rule \d+, "[^"]*": (.*)', line)
                if m:
                    problems.append(f"{m.group(1)}: expr: {m.group(2)}")
                elif line.strip() and "FAILED" not in line and not line.startswith("Checking"):
                    problems.append(f"promtool: {line.strip()}")
            if not any("expr:" in p or "promtool:" in p for p in problems):
                problems.append(f"promtool check rules failed: {out.stdout} {out.stderr}")

    for line in problems:
        print(line)
    if problems:
        print(f"check_dashboards: {len(problems)} problem(s)")
        return 1
    print(f"check_dashboards: {len(args.dashboards)} dashboard(s), {len(exprs)} expression(s) OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
