#!/usr/bin/env python3
"""Keeps deploy/container/Containerfile consistent with scripts/setup.sh (it cannot be built here).

  check_containerfile.py --setup scripts/setup.sh CONTAINERFILE

1. The build stage installs through scripts/setup.sh, so it has what developers and CI have.
2. Every library (-dev) package in setup.sh's APT_PACKAGES has its runtime package installed in
   the runtime stage, or is known to need none (header-only, tests only). A -dev package this
   script does not know fails the check, so adding a library to setup.sh forces a decision here.
3. The runtime image runs as uid 10001 (the manifests' runAsUser) and exposes the ports the
   manifests use.
Problems are printed as `FILE: message`; exit 1 if any.
"""
import argparse
import re
import sys

# -dev package -> runtime packages (any one of them suffices); () = nothing at run time.
DEV_TO_RUNTIME = {
    "libboost-dev": (),               # Asio/Beast, header-only
    "libcli11-dev": (),               # header-only
    "nlohmann-json3-dev": (),         # header-only
    "libgtest-dev": (), "libgmock-dev": (), "libbenchmark-dev": (),  # tests and benchmarks
    "libssl-dev": ("libssl3",),
    "libgrpc++-dev": ("libgrpc++1.51",),
    "libprotobuf-dev": ("libprotobuf32",),
    "libspdlog-dev": ("libspdlog1.10",),
    "libfmt-dev": ("libfmt9",),
    "libyaml-cpp-dev": ("libyaml-cpp0.7",),
    "libxxhash-dev": ("libxxhash0",),
    "libopenblas-dev": ("libopenblas0-pthread", "libopenblas0"),
    "libpcre2-dev": ("libpcre2-8-0",),
    "libutf8proc-dev": ("libutf8proc2",),
    "libucx-dev": ("libucx0",),
}
PORTS = {"8000", "8001", "9000", "9100", "9200"}
UID = "10001"


def setup_packages(path):
    text = open(path).read()
    m = re.search(r"APT_PACKAGES=\((.*?)\)", text, re.S)
    if not m:
        return None
    body = re.sub(r"#.*", "", m.group(1))
    return body.split()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--setup", required=True)
    ap.add_argument("containerfile")
    args = ap.parse_args()
    problems = []
    packages = setup_packages(args.setup)
    if packages is None:
        print(f"{args.setup}: no APT_PACKAGES=( ... ) list found")
        return 1
    text = open(args.containerfile).read()
    stages = re.split(r"(?im)^FROM\s+", text)
    build = next((s for s in stages if re.match(r"\S+\s+AS\s+build\b", s, re.I)), None)
    runtime = next((s for s in stages if re.match(r"\S+\s+AS\s+runtime\b", s, re.I)), None)
    if build is None or runtime is None:
        problems.append("needs a stage `AS build` and a stage `AS runtime`")
    else:
        if not re.search(r"^RUN\s+\S*scripts/setup\.sh", build, re.M):
            problems.append("build stage: must RUN scripts/setup.sh (the developers' install script)")
        runtime_words = set(re.findall(r"[A-Za-z0-9.+-]+", runtime))
        for pkg in packages:
            if not pkg.endswith("-dev"):
                continue
            if pkg not in DEV_TO_RUNTIME:
                problems.append(f"{args.setup} installs {pkg}: add its runtime package to the runtime "
                                f"stage and to DEV_TO_RUNTIME in {sys.argv[0]}")
                continue
            wanted = DEV_TO_RUNTIME[pkg]
            if wanted and not runtime_words.intersection(wanted):
                problems.append(f"runtime stage: missing {' or '.join(wanted)} (runtime of {pkg})")
        exposed = set(re.findall(r"\d+", " ".join(re.findall(r"(?m)^EXPOSE\s+(.*)$", runtime))))
        if not PORTS <= exposed:
            problems.append(f"runtime stage: EXPOSE lacks {' '.join(sorted(PORTS - exposed))}")
        if not re.search(rf"(?m)^USER\s+{UID}\b", runtime):
            problems.append(f"runtime stage: must run as USER {UID} (the manifests' runAsUser)")
    for p in problems:
        print(f"{args.containerfile}: {p}")
    if problems:
        return 1
    print(f"check_containerfile: {args.containerfile} agrees with {args.setup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
