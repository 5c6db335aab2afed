#!/usr/bin/env bash
# `make fuzz`: every fuzz target for FUZZ_SECONDS (60 by default) each, one after the other,
# then per target its executions and libFuzzer's final coverage (`cov`: edges, `ft`:
# features). Seeds come from fuzz/corpus/<target> (kept small, in git); what the fuzzer
# adds goes to fuzz/target/corpus/<target>, kept between runs. A crash, a timeout or an
# out-of-memory stops that target, leaves the input in fuzz/artifacts/<target>/ and makes
# the run fail. FUZZ_TARGETS="sse chunked" picks some; extra libFuzzer flags in FUZZ_FLAGS.
set -uo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
targets="${FUZZ_TARGETS:-request_framing gate chunked response_head sse load_scan path_template clean config_text config_json plugin_config}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz build || exit 1

failed=()
summary=()
for target in $targets; do
    work="target/corpus/$target"
    seeds="corpus/$target"
    mkdir -p "$work" "$seeds" "artifacts/$target"
    log="target/$target.log"
    echo "fuzzing $target for ${seconds}s" >&2
    # -timeout: an input that takes 5 s (the machine may be busy) is a hang worth keeping.
    cargo +nightly fuzz run "$target" "$work" "$seeds" -- \
        -max_total_time="$seconds" -timeout=5 -print_final_stats=1 ${FUZZ_FLAGS:-} \
        >"$log" 2>&1
    status=$?
    execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | tail -1 | grep -o '[0-9]*$')
    rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$log" | tail -1 | grep -o '[0-9]*$')
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    verdict=ok
    if [ "$status" -ne 0 ]; then
        verdict="FAILED (see fuzz/$log and fuzz/artifacts/$target/)"
        failed+=("$target")
    fi
    summary+=("$(printf '%-16s %12s %8s %7s %7s %6s  %s' "$target" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict")")
done

printf '\n%-16s %12s %8s %7s %7s %6s\n' target executions exec/s cov ft corpus
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: ${failed[*]} failed" >&2
    exit 1
fi
