#!/usr/bin/env bash
# The seed bugs (DESIGN.md) may not come back unseen. Each mutant below reintroduces one form of one
# of them into a scratch copy of the sources; the copy is rebuilt (one build directory, rebuilt
# incrementally: Release, CPU only, libstdc++ assertions on) and cpu_test runs; every mutant must
# make at least one test fail. Every mutated line is CPU code, which the CPU tests reach: the CUDA
# kernels are held to the same contracts by the GPU tests, which compare them with this oracle.
#
#   expert0.*   local expert 0 dropped (a `> 0` where `>= 0` belongs)
#   fp8act.*    BF16 weights given FP8 activations
#   bf16acc.*   bf16 accumulation in the combine or the SiLU
#   report.*    the optional overlap report of the down GEMM used where there is none
#
# Usage: scripts/mutation-check.sh [NAME...]   (default: every mutant; NAME as listed by --list)
# Environment: MUTATION_DIR (scratch sources and build; default build/mutation in this checkout),
#   MUTATION_JOBS (build jobs, default 2), MUTATION_TIMEOUT_S (per test run, default 600),
#   MUTATION_FILTER (a --gtest_filter of cpu_test, default every test; 'Regression.*' shows that
#   the seed bugs' own tests catch every form).
# Exit status 0 when the unmutated copy passes and every mutant is caught; 1 when a mutant
# survives, no longer applies (the code it targets moved: update the mutant), or fails to build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=${MUTATION_DIR:-$repo/build/mutation}
src=$scratch/src
build=$scratch/build
jobs=${MUTATION_JOBS:-2}
test_timeout=${MUTATION_TIMEOUT_S:-600}

# mutant NAME FILE OLD NEW: in FILE, the one occurrence of the text OLD becomes NEW.
names=()
declare -A files olds news
mutant() {
  names+=("$1")
  files[$1]=$2
  olds[$1]=$3
  news[$1]=$4
}

mutant expert0.dispatch src/core/expert_map.cc \
  'local_ids[i] = id < 0 ? -1 : expert_map[static_cast<std::size_t>(id)];' \
  'local_ids[i] = id <= 0 ? -1 : expert_map[static_cast<std::size_t>(id)];'
mutant expert0.dispatch_local_id src/core/expert_map.cc \
  'local_ids[i] = id < 0 ? -1 : expert_map[static_cast<std::size_t>(id)];' \
  'local_ids[i] = id < 0 || expert_map[static_cast<std::size_t>(id)] <= 0
                      ? -1
                      : expert_map[static_cast<std::size_t>(id)];'
mutant expert0.contiguous_placement src/core/expert_map.cc \
  'for (int l = 0; l < local; ++l) map[' \
  'for (int l = 1; l < local; ++l) map['
mutant expert0.permute_count src/cpu/permute.cc \
  'if (e >= 0) position[i] = counts[e]++;' \
  'if (e > 0) position[i] = counts[e]++;'
mutant expert0.permute_rows src/cpu/permute.cc \
  'src2dst[i] = ids[i] >= 0 ?' \
  'src2dst[i] = ids[i] > 0 ?'
mutant expert0.contiguous_segments src/cpu/row_segments.cc \
  'if (e >= 0) segments.push_back({e, r, end});' \
  'if (e > 0) segments.push_back({e, r, end});'
mutant expert0.masked_segments src/cpu/row_segments.cc \
  'for (int e = 0; e < masked_m.size(0); ++e) {' \
  'for (int e = 1; e < masked_m.size(0); ++e) {'
mutant expert0.combine src/cpu/combine.cc \
  'if (row < 0) continue;' \
  'if (row <= 0) continue;'
# The expert-parallel oracle (cpu/ep_dispatch.cc, cpu/ep_combine.cc): expert 0, or rank 0 and
# its first slot, dropped on the way out or back.
mutant expert0.ep_count src/cpu/ep_dispatch.cc \
  'if (g >= 0) pos[static_cast<std::size_t>(i)]' \
  'if (g > 0) pos[static_cast<std::size_t>(i)]'
mutant expert0.ep_dest src/cpu/ep_dispatch.cc \
  'sent.dest_rank.data<int>()[i] = g < 0 ? -1 : placement.owner(g);' \
  'sent.dest_rank.data<int>()[i] = g <= 0 ? -1 : placement.owner(g);'
mutant expert0.ep_origin src/cpu/ep_dispatch.cc \
  'if (g >= 0) {' \
  'if (g > 0) {'
mutant expert0.ep_return src/cpu/ep_combine.cc \
  'if (packed < 0 || packed / dispatched.slot_stride != source_rank) continue;' \
  'if (packed <= 0 || packed / dispatched.slot_stride != source_rank) continue;'
mutant expert0.ep_rank0 src/cpu/ep_combine.cc \
  'sent.dest_rank.data<int>()[i] >= 0 ? static_cast<int>(i) : -1;' \
  'sent.dest_rank.data<int>()[i] > 0 ? static_cast<int>(i) : -1;'

mutant fp8act.layer_permute src/cpu/layer.cc \
  'config.num_experts, config.weight_dtype,' \
  'config.num_experts, DType::kFP8E4M3,'
mutant fp8act.layer_activation src/cpu/experts.cc \
  'const DType act_dtype = config.weight_dtype;' \
  'const DType act_dtype = DType::kFP8E4M3;'
mutant fp8act.permute src/cpu/permute.cc \
  'const bool fp8 = weight_dtype == DType::kFP8E4M3;' \
  'const bool fp8 = true;'
mutant fp8act.ep_dispatch src/cpu/ep_dispatch.cc \
  'const bool fp8 = weight_dtype == DType::kFP8E4M3;' \
  'const bool fp8 = true;'
# The silent form: the tensors stay bf16, their values went through FP8.
mutant fp8act.through_fp8 src/cpu/permute.cc \
  'const void* row = src + static_cast<std::size_t>(t) * in_row_bytes;' \
  'const void* row = src + static_cast<std::size_t>(t) * in_row_bytes;
      std::vector<float> f8v(static_cast<std::size_t>(hidden_size)), f8s(static_cast<std::size_t>(groups));
      std::vector<fp8e4m3> f8q(f8v.size());
      std::vector<bf16> f8b(f8v.size());
      if (!fp8) {
        for (std::int64_t c = 0; c < hidden_size; ++c)
          f8v[c] = bf16_to_float(static_cast<const bf16*>(row)[c]);
        quantize_row_fp8(f8v.data(), hidden_size, f8q.data(), f8s.data());
        for (std::int64_t c = 0; c < hidden_size; ++c)
          f8b[c] = float_to_bf16(fp8e4m3_to_float(f8q[c]) * f8s[c / kQuantGroup]);
        row = f8b.data();
      }'

mutant bf16acc.combine_sum src/cpu/combine.cc \
  'acc[c] += w * bf16_to_float(values[c]);' \
  'acc[c] = round_to_bf16(acc[c] + w * bf16_to_float(values[c]));'
mutant bf16acc.combine_product src/cpu/combine.cc \
  'acc[c] += w * bf16_to_float(values[c]);' \
  'acc[c] += round_to_bf16(w * bf16_to_float(values[c]));'
mutant bf16acc.silu src/cpu/activation.cc \
  'y[c] = detail::silu_f32(g) * bf16_to_float(up[c]);' \
  'y[c] = round_to_bf16(detail::silu_f32(g)) * bf16_to_float(up[c]);'
mutant bf16acc.silu_product src/cpu/activation.cc \
  'y[c] = detail::silu_f32(g) * bf16_to_float(up[c]);' \
  'y[c] = round_to_bf16(detail::silu_f32(g) * bf16_to_float(up[c]));'

mutant report.dereference src/cpu/experts.cc \
  '      grouped_gemm_masked({act3d, scale3d}, w2, permuted.masked_m.view(), down3d);' \
  '      const OverlapReport unpacked =
          *grouped_gemm_masked({act3d, scale3d}, w2, permuted.masked_m.view(), down3d);
      (void)unpacked;'
mutant report.value src/cpu/experts.cc \
  '      grouped_gemm_masked({act3d, scale3d}, w2, permuted.masked_m.view(), down3d);' \
  '      const auto [block_m, threshold] =
          grouped_gemm_masked({act3d, scale3d}, w2, permuted.masked_m.view(), down3d).value();
      (void)block_m;
      (void)threshold;'
mutant report.member src/cpu/experts.cc \
  '      grouped_gemm_masked({act3d, scale3d}, w2, permuted.masked_m.view(), down3d);' \
  '      const std::optional<OverlapReport> report =
          grouped_gemm_masked({act3d, scale3d}, w2, permuted.masked_m.view(), down3d);
      if (report->threshold < 0) throw Error("negative threshold");'
mutant report.without_signal src/cpu/gemm.cc \
  'return std::nullopt;' \
  'return OverlapReport{signal == nullptr ? 128 : signal->block_m, 1};'

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${names[@]}"
  exit 0
fi
selected=("$@")
[ ${#selected[@]} -eq 0 ] && selected=("${names[@]}")
for name in "${selected[@]}"; do
  [ -n "${files[$name]+set}" ] || { echo "mutation-check: no mutant '$name' (see --list)"; exit 1; }
done

bash "$repo/scripts/setup.sh"  # the build's packages, when missing (a bare machine)

# The scratch copy: this checkout's tracked and untracked files (no build outputs). Only files that
# differ are copied, with a fresh time stamp, so the build stays incremental across runs.
mkdir -p "$src"
(cd "$repo" && git ls-files -co --exclude-standard -z) | while IFS= read -r -d '' f; do
  if ! cmp -s "$repo/$f" "$src/$f"; then
    mkdir -p "$(dirname "$src/$f")"
    cp "$repo/$f" "$src/$f"
  fi
done

start=$(date +%s)
log=$scratch/build.log
build_cpu_test() {
  cmake --build "$build" --target cpu_test -j "$jobs" >"$log" 2>&1
}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOERUN_ENABLE_CUDA=OFF \
    -DMOERUN_BUILD_TOOLS=OFF -DMOERUN_STDLIB_ASSERTIONS=ON -DMOERUN_WARNINGS_AS_ERRORS=ON \
    >"$scratch/configure.log" 2>&1 || { cat "$scratch/configure.log"; exit 1; }
fi
run_tests() {  # the test output goes to $scratch/test.log; returns cpu_test's status
  # In a subshell that outlives the test (the `exit` keeps it from exec'ing it), so that its
  # "Aborted" for a test killed by an assertion goes to the log.
  (
    timeout "$test_timeout" "$build/tests/cpu_test" --gtest_fail_fast \
      --gtest_filter="${MUTATION_FILTER:-*}"
    exit $?
  ) >"$scratch/test.log" 2>&1
}
if ! build_cpu_test; then
  tail -30 "$log"
  echo "mutation-check: the unmutated copy does not build"
  exit 1
fi
if ! run_tests; then
  grep -E "FAILED|Failure" "$scratch/test.log" | head -20
  echo "mutation-check: the unmutated copy fails its tests; nothing to compare mutants with"
  exit 1
fi
echo "mutation-check: unmutated copy builds and passes ($(($(date +%s) - start)) s)"

# apply FILE OLD NEW: replaces the one occurrence of OLD in FILE; fails unless there is exactly one.
apply() {
  perl -0pi -e 'BEGIN { ($old, $new) = splice(@ARGV, 0, 2) } $n += s/\Q$old\E/$new/g;
                END { exit($n == 1 ? 0 : 1) }' "$2" "$3" "$1"
}

failed=0
for name in "${selected[@]}"; do
  file=${files[$name]}
  t0=$(date +%s)
  if ! apply "$src/$file" "${olds[$name]}" "${news[$name]}"; then
    echo "mutation-check: $name: DID NOT APPLY (the text it replaces is not once in $file)"
    failed=1
  elif ! build_cpu_test; then
    grep -E "error" "$log" | head -5
    echo "mutation-check: $name: DOES NOT BUILD (fix the mutant)"
    failed=1
  elif run_tests; then
    echo "mutation-check: $name: SURVIVED: every test passes with it ($file)"
    failed=1
  else
    rc=$?
    # The first failed test; a test that aborts (a libstdc++ assertion) prints no FAILED line: the
    # last one that started.
    caught=$(grep -m1 -oE '^\[  FAILED  \] [A-Za-z0-9_./]+' "$scratch/test.log" | cut -c14- || true)
    if [ -z "$caught" ]; then
      caught="$(grep -oE '^\[ RUN      \] [A-Za-z0-9_./]+' "$scratch/test.log" | tail -1 |
        cut -c14-) (cpu_test exit status $rc)"
    fi
    echo "mutation-check: $name: caught by $caught ($(($(date +%s) - t0)) s)"
  fi
  cp "$repo/$file" "$src/$file"  # fresh time stamp: the next build recompiles it
done
echo "mutation-check: ${#selected[@]} mutants, total $(($(date +%s) - start)) s"
exit $failed
