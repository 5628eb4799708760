#!/usr/bin/env bash
# Builds the cgroup v2 samples from the real v2 files in fixtures/realdata (this machine's
# memory controller is on v1, so its scenarios cannot produce v2 bundles). Each sample is an
# unpacked bundle directory: the kernel files verbatim at their host paths, plus a manifest
# that says where they come from. Run from the repository root: bash samples/derive-v2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
src=fixtures/realdata/elastic_elastic-agent-system-metrics/metric/system/cgroup/testdata

make_sample() { # name, source tree, cgroup path, hostname, kernel
  local name=$1 tree=$2 cg=$3 host=$4 kernel=$5
  local out=samples/$name
  rm -rf "$out"
  mkdir -p "$out/sys/fs/cgroup/$cg"
  cp "$tree/sys/fs/cgroup/$cg"/* "$out/sys/fs/cgroup/$cg/"
  printf 'cpuset cpu io memory hugetlb pids rdma misc\n' > "$out/sys/fs/cgroup/cgroup.controllers"
  cat > "$out/manifest.json" <<JSON
{
  "format_version": 1,
  "collector_version": "derived from fixtures/realdata by samples/derive-v2.sh",
  "hostname": "$host",
  "kernel_release": "$kernel",
  "started_at": "2024-01-01T00:00:00Z",
  "finished_at": "2024-01-01T00:00:00Z",
  "duration_ms": 0,
  "cgroup_mode": "v2",
  "cgroup_mounts": [{"path": "/sys/fs/cgroup", "version": 2, "memory": true}],
  "root": "/",
  "options": {"jobs": 1, "samples": 1, "interval_ms": 0, "read_timeout_ms": 0,
              "max_file_bytes": 0, "max_total_bytes": 0, "kmem_slabinfo": false},
  "redacted": false,
  "samples": [{"index": 0, "prefix": "", "started_at": "2024-01-01T00:00:00Z",
               "finished_at": "2024-01-01T00:00:00Z",
               "counts": {"node_files": 0, "cgroups": 1, "processes": 0, "files": 0, "bytes": 0,
                          "vanished_processes": 0, "vanished_cgroups": 0, "missed": 0}}],
  "counts": {"node_files": 0, "cgroups": 1, "processes": 0, "files": 0, "bytes": 0,
             "vanished_processes": 0, "vanished_cgroups": 0, "missed": 0},
  "missed": [],
  "missed_not_listed": 0
}
JSON
}

# A desktop session scope on kernel ~6.5 (real; the LRU identity holds to 0.008 %).
make_sample v2-session-page-cache "$src/docker2.zip/docker2" \
  user.slice/user-1000.slice/session-520.scope docker2-realdata 6.5.0
# A Docker container scope (real capture with hand-edited counters: oom_kill 1).
make_sample v2-docker-oom "$src/docker.zip/docker" \
  system.slice/docker-1c8fa019edd4b9d4b2856f4932c55929c5c118c808ed5faee9a135ca6e84b039.scope \
  docker-realdata 5.15.0
