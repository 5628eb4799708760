#!/usr/bin/env bash
# Builds memgap and memgap-collect (and the benchmarks) with profile-guided optimization:
# an instrumented build runs a training batch, then the release build uses its profile. The
# analyzer's parsers and rule checks are branchy code, and knowing which branches a real batch
# takes makes a bundle's analysis ~6% cheaper (docs/performance.md, "Batch").
#
#   deploy/build-pgo.sh            # binaries in target/pgo/release/
#
# Needs llvm-profdata of the compiler's LLVM version: `rustup component add llvm-tools`, or
# Debian's llvm-N package where N is the major version `rustc -vV` prints.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=""
for p in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" \
  "$(command -v "llvm-profdata-$llvm" || true)" "/usr/lib/llvm-$llvm/bin/llvm-profdata"; do
  if [ -n "$p" ] && [ -x "$p" ]; then
    profdata=$p
    break
  fi
done
if [ -z "$profdata" ]; then
  echo "build-pgo: no llvm-profdata for LLVM $llvm; run 'rustup component add llvm-tools'" \
    "or install Debian's llvm-$llvm" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build() {
  RUSTFLAGS="${RUSTFLAGS:-} $1" cargo build --release --locked \
    -p memgap-analyzer -p memgap-collector --bins --examples
}

echo "build-pgo: instrumented build (target/pgo-generate)" >&2
# A fixed place for the raw profiles keeps the flags, hence the built dependencies, from one
# run to the next; the optimized build's flags name each run's profile, so it is rebuilt whole.
raw="$PWD/target/pgo-generate/profiles"
CARGO_TARGET_DIR=target/pgo-generate build "-Cprofile-generate=$raw"
rm -rf "$raw" # the build scripts' own profiles, and an earlier run's

# Training: the samples, and a synthetic v1 and v2 node of 1,500 cgroups collected as bundles
# (not the benchmark's 5,000-cgroup bundle), through every output of the analyzer.
gen=target/pgo-generate/release
mkdir -p "$work/bundles"
cp samples/*.tar.gz "$work/bundles/"
for v in no yes; do
  "$gen/examples/bench_collect" --cgroups 1500 --processes 600 --runs 1 --v2 "$v" \
    --dir "$work/nodes" >/dev/null
done
for node in "$work"/nodes/v*-1500-600; do
  "$gen/memgap-collect" --root "$node" --no-kmsg -o "$work/bundles/$(basename "$node").tar.gz" \
    2>/dev/null
done
rm -rf "$work/nodes"
v1="$work/bundles/v1-1500-600.tar.gz"
"$gen/memgap" report "$work/bundles" -o "$work/pages" >/dev/null
"$gen/memgap" report "$work/bundles" -o "$work/lines" --no-pages >/dev/null
"$gen/memgap" report "$v1" --format json -o "$work/one.json" >/dev/null
"$gen/memgap" report "$v1" >/dev/null
"$gen/memgap" diff samples/v1-page-cache.tar.gz samples/v1-dirty.tar.gz >/dev/null
# The batch benchmark on the training bundle: flate2's inflater, the benchmark's floor, is
# trained too, so the floor is not measured against a build that takes it for cold code.
"$gen/examples/bench_batch" "$v1" 6 1 >/dev/null
"$profdata" merge -o "$work/memgap.profdata" "$raw"/*.profraw

echo "build-pgo: optimized build (target/pgo)" >&2
CARGO_TARGET_DIR=target/pgo build "-Cprofile-use=$work/memgap.profdata"
echo "build-pgo: target/pgo/release/memgap, target/pgo/release/memgap-collect" >&2
