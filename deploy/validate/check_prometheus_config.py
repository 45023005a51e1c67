#!/usr/bin/env python3
"""Runs `promtool check config` on deploy/prometheus/prometheus.yml.

Debian's prometheus package is built without the Kubernetes service discovery, so its promtool
rejects `kubernetes_sd_configs`. This swaps each one for an equivalent file_sd block in a
temporary copy (relabel rules, rule files and everything else stay as written) and checks that.

  check_prometheus_config.py PROMETHEUS_YML
Exit status: promtool's (0 = valid).
"""
import os
import shutil
import subprocess
import sys
import tempfile

import yaml


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = os.path.abspath(sys.argv[1])
    with open(src) as f:
        config = yaml.safe_load(f)
    with tempfile.TemporaryDirectory() as tmp:
        for job in config.get("scrape_configs") or []:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job.setdefault("file_sd_configs", []).append({"files": ["k8s-stand-in/*.yaml"]})
        # Rule files are resolved relative to the config file: copy them beside the stand-in.
        for pattern in config.get("rule_files") or []:
            rule_src = os.path.join(os.path.dirname(src), pattern)
            dst = os.path.join(tmp, pattern)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(rule_src, dst)
        out = os.path.join(tmp, "prometheus.yml")
        with open(out, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        return subprocess.run(["promtool", "check", "config", out]).returncode


if __name__ == "__main__":
    sys.exit(main())
