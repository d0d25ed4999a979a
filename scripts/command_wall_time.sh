#!/bin/bash
# Wall time of the commands, alternating: a fresh compile cache (an empty folder) and a warm one,
# and, with BASE=<checkout of an older commit>, that commit's CLI (`python -m ppo_jax.cli`).
# Usage: bash scripts/command_wall_time.sh [REPEATS]   (prints one line per command and repeat)
# Commands as typed: progress line on. Against PureJaxRL, with medians: scripts/command_wall_time.py.
set -u
R=${1:-3}
export JAX_PLATFORMS=cpu
T=$(mktemp -d); W=$T/warm; mkdir -p $W
t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1; local rc=$?; local e=$(date +%s.%N); printf "%.2f s (rc %s)" "$(echo "$e - $s" | bc)" $rc; }
base() { (cd "$BASE" && PYTHONPATH="$BASE" python -m ppo_jax.cli "$@"); }
SW="--grid lr=1e-3,3e-4 --seeds 2 --total-timesteps 100000 --bootstrap-reps 1000"
CO="--seeds 2 --total-timesteps 50000"
XDG_CACHE_HOME=$W ppo-jax train --out $T/run >/dev/null 2>&1
XDG_CACHE_HOME=$W ppo-jax sweep $SW --out $T/prime-sweep >/dev/null 2>&1
XDG_CACHE_HOME=$W ppo-jax compare $CO --out $T/prime-compare >/dev/null 2>&1
XDG_CACHE_HOME=$W ppo-jax eval $T/run >/dev/null 2>&1
[ -n "${BASE:-}" ] && base train --out $T/base-run >/dev/null 2>&1
for i in $(seq $R); do
  for cmd in train eval sweep compare; do
    case $cmd in
      train) A=(train --out $T/b$i-t); N=(train --out);;
      eval) A=(eval $T/base-run); N=(eval $T/run);;
      sweep) A=(sweep $SW --out $T/b$i-s); N=(sweep $SW --out);;
      compare) A=(compare $CO --out $T/b$i-c); N=(compare $CO --out);;
    esac
    [ "$cmd" = eval ] && F=() || F=($T/f$i-$cmd); [ "$cmd" = eval ] && G=() || G=($T/w$i-$cmd)
    line="$cmd repeat $i"
    [ -n "${BASE:-}" ] && line="$line | base $(t base "${A[@]}")"
    line="$line | fresh cache $(XDG_CACHE_HOME=$T/fresh$i-$cmd t ppo-jax "${N[@]}" "${F[@]}")"
    line="$line | warm cache $(XDG_CACHE_HOME=$W t ppo-jax "${N[@]}" "${G[@]}")"
    echo "$line"
  done
done
rm -rf "$T"
