#!/usr/bin/env bash
# Usage: cli_corpus.sh PROGRAM BINARY
#
# The command-line corpus of one nddr program (docs/cli.md): every bad command line in PROGRAM's
# table below must exit with status 2 before doing any work, print exactly one line on stderr,
#   PROGRAM: --flag: expected WHAT, got 'VALUE'      (or "got nothing" for a missing value)
#   PROGRAM: unknown flag '--x' ...                   PROGRAM: unexpected argument 'x' ...
# at most 300 bytes long even for a 128 KiB argument, nothing on stdout, and write nothing in its
# working directory (each case runs in a fresh empty one). `-h` and `--help` exit with 0 and print
# the usage on stdout. Registered per program in examples/CMakeLists.txt (ctest -L cli).
set -uo pipefail

program=$1
binary=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Linux passes one argument of at most 128 KiB (MAX_ARG_STRLEN): the longest value a flag can get.
big=$(head -c 131000 /dev/zero | tr '\0' 7)
cases=0
failures=0
has_device=1  # 0 for a program without --device (nddr-prepare-imdb-wiki)

# Runs the binary with "$@" in a fresh empty directory: sets rc, out, err and leftover.
run() {
  local dir
  dir=$(mktemp -d "$work/case.XXXXXX")
  (cd "$dir" && exec timeout 60 "$binary" "$@" <"/dev/null" >"$work/stdout" 2>"$work/stderr")
  rc=$?
  out=$(cat "$work/stdout")
  err=$(cat "$work/stderr")
  leftover=$(ls -A "$dir")
  rm -rf "$dir"
}

# Records a failed case: what was wrong and the command line (values cut to 40 bytes).
failed() {
  local args="" a
  for a in "${@:2}"; do args+=" '${a:0:40}'"; done
  echo "FAIL [$program$args]: $1"
  echo "  exit $rc; stderr: ${err:0:400}"
  failures=$((failures + 1))
}

# bad FLAG ARGS...: a bad command line. FLAG is the flag the message must name; '?' for an
# unknown flag, '!' for an unexpected argument.
bad() {
  local flag=$1 pattern
  shift
  cases=$((cases + 1))
  run "$@"
  case $flag in
    '?') pattern="^$program: unknown flag '[^']*'.*\$" ;;
    '!') pattern="^$program: unexpected argument '.*'.*\$" ;;
    *) pattern="^$program: --$flag: expected .+, got ('.*'|nothing)\$" ;;
  esac
  local lines
  lines=$(wc -l <"$work/stderr")
  if [[ $rc -ne 2 ]]; then failed "exit status $rc, expected 2" "$@"
  elif [[ $lines -ne 1 || -z $err ]]; then failed "$lines lines on stderr, expected 1" "$@"
  elif ! grep -Eq -- "$pattern" <<<"$err"; then failed "stderr does not match $pattern" "$@"
  elif [[ ${#err} -gt 300 ]]; then failed "a ${#err}-byte message, expected <= 300" "$@"
  elif [[ -n $out ]]; then failed "wrote to stdout: ${out:0:200}" "$@"
  elif [[ -n $leftover ]]; then failed "wrote into the working directory: $leftover" "$@"
  fi
}

# help ARGS...: prints the usage and exits with 0.
help() {
  cases=$((cases + 1))
  run "$@"
  if [[ $rc -ne 0 ]]; then failed "exit status $rc, expected 0" "$@"
  elif ! grep -q "Usage: $program" <<<"$out"; then failed "no 'Usage: $program' on stdout" "$@"
  elif [[ -n $err ]]; then failed "wrote to stderr" "$@"
  elif [[ -n $leftover ]]; then failed "wrote into the working directory: $leftover" "$@"
  fi
}

# Malformed values of an integer flag.
integer_cases() {
  local f=$1
  bad "$f" "--$f"
  bad "$f" "--$f" abc
  bad "$f" "--$f" 5abc
  bad "$f" "--$f" 1e3
  bad "$f" "--$f" 1.5
  bad "$f" "--$f" 0x10
  bad "$f" "--$f" " 5"
  bad "$f" "--$f" "5 "
  bad "$f" "--$f" +5
  bad "$f" "--$f" ""
  bad "$f" "--$f="
  bad "$f" "--$f=abc"
  bad "$f" "--$f" nan
  bad "$f" "--$f" 99999999999999999999
  bad "$f" "--$f" -99999999999999999999
  bad "$f" "--$f" 18446744073709551616
  bad "$f" "--$f" "$big"
  bad "$f" "--$f=$big"
}

# Malformed and non-finite values of a real flag.
real_cases() {
  local f=$1
  bad "$f" "--$f"
  bad "$f" "--$f" nan
  bad "$f" "--$f" NaN
  bad "$f" "--$f" inf
  bad "$f" "--$f" -inf
  bad "$f" "--$f" infinity
  bad "$f" "--$f" 1e999
  bad "$f" "--$f" 0.5abc
  bad "$f" "--$f" 0x1p3
  bad "$f" "--$f" abc
  bad "$f" "--$f" ""
  bad "$f" "--$f="
  bad "$f" "--$f=nan"
  bad "$f" "--$f" "$big"
}

# Bad values of a switch.
switch_cases() {
  local f=$1
  bad "$f" "--$f=maybe"
  bad "$f" "--$f="
  bad "$f" "--$f=2"
  bad "$f" "--$f=$big"
}

# Bad values of a flag that takes a name or a path.
text_cases() {
  local f=$1
  bad "$f" "--$f"
  bad "$f" "--$f" ""
  bad "$f" "--$f="
}

# What every program refuses, and its help.
common_cases() {
  bad '?' --bogus
  bad '?' --bogus 1
  bad '?' --bogus=1
  bad '?' "--bogus=$big"
  bad '?' "--$big"
  bad '?' -x
  bad '?' ---help
  bad '!' positional
  bad '!' ""
  bad '!' -- --help
  bad '!' "$big"
  bad '!' "$(printf 'two\nlines')"
  if [[ $has_device == 1 ]]; then
    bad device --device gpu
    bad device --device cuda:
    bad device --device cuda:x
    bad device --device cuda:-1
    bad device --device CUDA
    bad device --device "cpu "
    text_cases device
  fi
  help --help
  help -h
  help --help=true
  bad help --help=maybe
  help -help
  help --bogus --help
  if [[ $has_device == 1 ]]; then help --device gpu -h; fi
}

# The flags every experiment binary shares (apps/include/nddr_apps/experiment_driver.hpp,
# add_common_flags).
experiment_cases() {
  integer_cases steps
  bad steps --steps -1
  integer_cases seed
  bad seed --seed -1
  integer_cases batch
  bad batch --batch 0
  bad batch --batch 100000000
  bad threads --threads -1
  bad threads --threads 4294967297
  bad threads --threads 100000
  bad loader-threads --loader-threads -1
  bad loader-threads --loader-threads 100000
  bad eval-limit --eval-limit -1
  bad log-every --log-every -1
  bad checkpoint-every --checkpoint-every -1
  real_cases lr
  bad lr --lr -1
  real_cases weight-decay
  bad weight-decay --weight-decay -1
  real_cases nddr-lr-mult
  bad nddr-lr-mult --nddr-lr-mult -0.5
  real_cases nddr-decay-mult
  bad nddr-decay-mult --nddr-decay-mult -1
  bad nddr-bn --nddr-bn no
  bad nddr-bn --nddr-bn ON
  bad nddr-bn --nddr-bn on,off
  text_cases nddr-bn
  integer_cases eval-every
  bad eval-every --eval-every -1
  text_cases best-metric
  bad best-metric --eval-every 5 --best-metric mIoU
  bad best-metric --eval-every 5 --best-metric /mIoU
  bad best-metric --eval-every 5 --best-metric "seg mentation/mIoU"
  bad best-metric --eval-every 5 --best-metric "$big"
  bad loss-scales --loss-scales 1,nan
  bad loss-scales --loss-scales 1,inf
  bad loss-scales --loss-scales 1,,2
  bad loss-scales --loss-scales ,1
  bad loss-scales --loss-scales 1,
  bad loss-scales --loss-scales -1,2
  bad loss-scales --loss-scales 1,2,3
  bad loss-scales --loss-scales 1:20
  bad loss-scales --loss-scales ""
  bad loss-scales "--loss-scales=$big"
  bad method --method bogus
  text_cases method
  bad backbone --backbone resnet50
  bad init --init 0.9
  bad init --init nan,0.1
  bad init --init 0.9,inf
  bad init --init "0.9;0.1"
  bad init --init 0.9,0.1,0.2
  bad init --init xavier2
  text_cases init
  bad init-format --init-format caffe
  for f in output-dir init-weights init-weights-task0 init-weights-task1; do text_cases "$f"; done
  for f in resume eval-only quiet tf32 bf16 cuda-graph cudnn-benchmark deterministic; do
    switch_cases "$f"
  done
}

# The optimiser and schedule flags (apps/include/nddr_apps/optim_flags.hpp). "$@": the flags
# the program requires, so that the checks after parsing are reached.
optimizer_cases() {
  bad optimizer --optimizer sgdm
  bad optimizer --optimizer Adam
  bad optimizer --optimizer adam,adamw
  text_cases optimizer
  bad schedule --schedule linear
  bad schedule --schedule Poly
  text_cases schedule
  integer_cases warmup
  bad warmup --warmup -1
  real_cases beta1
  bad beta1 --beta1 -0.1
  bad beta1 --beta1 1.5
  real_cases beta2
  real_cases eps
  bad eps --eps 0
  bad eps --eps -1e-8
  real_cases eta-min
  bad eta-min --eta-min -1
  switch_cases amsgrad
  bad beta1 "$@" --optimizer adam --beta1 1
  bad beta2 "$@" --optimizer adamw --beta2 1.0
  bad amsgrad "$@" --amsgrad
  bad amsgrad "$@" --optimizer sgd --amsgrad
  bad warmup "$@" --steps 10 --warmup 10
  bad warmup "$@" --steps 10 --warmup 11 --schedule cosine
  text_cases weighting
  integer_cases weighting-epoch
  bad weighting-epoch --weighting-epoch -1
  bad weighting "$@" --weighting bogus
  bad weighting "$@" --weighting PCGrad
  bad weighting "$@" --weighting :c=0.4
  bad weighting "$@" --weighting "$big"
  bad weighting "$@" --weighting cagrad:c=x
  bad weighting "$@" --weighting cagrad:c
  bad weighting "$@" --weighting cagrad:c=0.4,,rescale=1
  bad weighting "$@" --weighting mgda:bogus=1
  bad weighting "$@" --weighting "dwa:T=$big"
}

case $program in
  nddr-nyuv2)
    common_cases
    experiment_cases
    integer_cases crop
    bad crop --crop 0
    bad crop --crop 100000
    text_cases data-dir
    switch_cases shortcut
    switch_cases centered-normals
    switch_cases no-flip
    switch_cases no-scale
    text_cases save-predictions
    bad save-predictions --data-dir d --save-predictions /dev/null   # a file, not a directory
    bad best-metric --data-dir d --best-metric segmentation/mIoU     # without --eval-every
    bad data-dir                                  # --data-dir is required
    bad data-dir --method nddr --steps 10
    bad bf16 --data-dir d --device cuda --tf32 --bf16
    bad cuda-graph --data-dir d --device cuda --cuda-graph --weighting mgda
    bad tf32 --data-dir d --tf32
    bad cudnn-benchmark --data-dir d --device cpu --cudnn-benchmark
    bad deterministic --data-dir d --deterministic
    bad loss-scales --data-dir d --loss-scales 1
    bad loss-scales --data-dir d --method cross-stitch --loss-scales 20
    optimizer_cases --data-dir d
    help --steps abc --help
    # --check-data DIR: a mode of its own (docs/data-nyuv2.md), no other flag.
    text_cases check-data
    bad '?' --check-data d --steps 5
    bad '?' --data-dir d --check-data d
    help --check-data d --help
    ;;
  nddr-imdb-wiki)
    common_cases
    experiment_cases
    integer_cases image-size
    bad image-size --image-size 0
    bad image-size --image-size 100000
    text_cases train-list
    text_cases test-list
    text_cases image-root
    bad train-list                                # --train-list and --test-list are required
    bad test-list --train-list a
    bad image-size --train-list a --test-list b --image-size 24
    bad loss-scales --train-list a --test-list b --method st-age --loss-scales 1,1
    bad loss-scales --train-list a --test-list b --method mt --loss-scales 1
    bad init-format --train-list a --test-list b --init-format tf   # NYUv2 DeepLab only
    optimizer_cases --train-list a --test-list b
    ;;
  nddr-demo)
    common_cases
    integer_cases steps
    bad steps --steps 0
    bad steps --quick --steps -1
    bad batch --batch 0
    bad batch --batch 100000000
    bad train --train 0
    bad test --test 3
    bad size --size 27
    bad size --size 100000
    bad threads --threads 0
    bad threads --threads -5
    bad threads --threads 4294967297
    integer_cases seed
    bad seed --seed -1
    integer_cases seeds
    bad seeds --seeds 0
    bad seeds --seeds 101
    bad seeds --seed 18446744073709551615 --seeds 2
    real_cases lr
    bad lr --lr 0
    bad lr --lr -0.02
    real_cases normal-weight
    real_cases fusion-lr-mult
    bad fusion-lr-mult --fusion-lr-mult -1
    text_cases data
    text_cases out
    switch_cases quick
    switch_cases no-progress
    text_cases weightings
    bad weightings --weightings bogus
    bad weightings --weightings ew,PCGrad
    bad weightings --weightings ew,
    bad weightings --weightings ,ew
    bad weightings --weightings ew,,mgda
    bad weightings --weightings ew,ew
    bad weightings --weightings cagrad:c=0.4,
    bad weightings --weightings cagrad:c=x
    bad weightings --weightings "$big"
    bad weightings --weightings "ew,dwa:T=$big"
    bad train --train 100000 --size 512
    real_cases weight-decay
    bad weight-decay --weight-decay -1
    optimizer_cases
    help --quick --help
    ;;
  00_nddr_layer)
    common_cases
    integer_cases batch
    bad batch --batch 1
    bad batch --batch -2
    integer_cases channels
    bad channels --channels 0
    integer_cases size
    bad size --size -3
    bad threads --threads -5
    bad threads --threads 4294967297
    bad size --batch 1024 --channels 4096 --size 4096
    ;;
  01_custom_tasks)
    common_cases
    integer_cases steps
    bad steps --steps -1
    bad steps --steps 0
    integer_cases batch
    bad batch --batch 0
    bad threads --threads -5
    bad threads --threads 0
    bad threads --threads 100000
    real_cases lr
    bad lr --lr 0
    real_cases weight-decay
    optimizer_cases
    ;;
  nddr-bench-step)
    common_cases
    bad network --network vgg19
    text_cases network
    bad mode --mode training
    text_cases mode
    integer_cases batch
    bad batch --batch 0
    bad size --size 7
    bad iters --iters 0
    bad warmup --warmup -1
    bad threads --threads -5
    bad threads --threads 4294967297
    for f in tf32 bf16 cudnn-benchmark deterministic profile-step; do switch_cases "$f"; done
    bad bf16 --tf32 --bf16
    bad size --batch 1024 --size 4096
    ;;
  nddr-campaign)
    common_cases
    bad table                                     # --table is required
    bad table --steps 5
    text_cases table
    bad table --table t4,,t1
    bad table --table ,
    bad table --table t4,
    integer_cases steps
    bad steps --steps 0
    integer_cases seeds
    bad seeds --seeds 0
    bad seeds --seeds 101
    integer_cases seed
    bad seed --seed -1
    bad threads --threads -1
    bad threads --threads 100000
    bad device --table t4 --device cpu,,cpu
    bad device --device cuda:0,gpu
    bad device --device cpu,
    bad device --device ,cpu
    real_cases step-seconds
    bad step-seconds --step-seconds -1
    bad backbone --backbone ResNet
    bad backbone --backbone "a b"
    text_cases backbone
    for f in manifests data-dir init-weights output-dir bin-dir run-flags; do text_cases "$f"; done
    bad run-flags --table t4 --run-flags "   "
    bad run-flags --table t4 --run-flags "--steps 5"
    bad run-flags --table t4 --run-flags "--crop 33 --output-dir=x"
    bad run-flags --table t4 --run-flags "--device cuda"
    switch_cases dry-run
    help --table t4 --help
    ;;
  nddr-export)
    # common_cases without --device (the export runs on the CPU); --network and --output are
    # required, so every case that should reach a flag's check names both.
    req=(--network tiny-nddr --output out.onnx)
    bad '?' --bogus
    bad '?' "--bogus=$big"
    bad '!' positional
    bad '!' "$big"
    help --help
    help -h
    help --bogus --help
    bad network --output out.onnx
    bad network --network vgg19-nddr --output out.onnx
    bad network --network tiny --output out.onnx
    bad network --network "$big" --output out.onnx
    text_cases network
    bad output --network tiny-nddr
    bad output --network tiny-nddr --output ""
    bad output --network tiny-nddr --output=
    bad classes "${req[@]}" --classes 0,3
    bad classes "${req[@]}" --classes 40,
    bad classes "${req[@]}" --classes ,3
    bad classes "${req[@]}" --classes 40,3,2
    bad classes "${req[@]}" --classes -1
    bad classes "${req[@]}" --classes 1e3
    bad classes "${req[@]}" --classes 200000
    bad classes "${req[@]}" --classes "$big"
    bad classes "${req[@]}" --classes 40
    bad classes --network tiny-st --output out.onnx --classes 40,3
    text_cases classes
    bad outputs "${req[@]}" --outputs seg,seg
    bad outputs "${req[@]}" --outputs seg
    bad outputs "${req[@]}" --outputs image,normal
    bad outputs "${req[@]}" --outputs "seg,nor mal"
    bad outputs "${req[@]}" --outputs seg,
    bad outputs "${req[@]}" --outputs "$big"
    text_cases outputs
    text_cases weights
    bad weights "${req[@]}" --weights missing.safetensors
    bad weights "${req[@]}" --weights .
    bad output --network tiny-nddr --output missing-dir/out.onnx
    bad output --network tiny-nddr --output .
    integer_cases seed
    bad seed "${req[@]}" --seed -1
    ;;
  nddr-prepare-imdb-wiki)
    has_device=0
    common_cases
    bad mat                                       # --mat and --output-dir are required
    bad output-dir --mat imdb.mat
    bad mat --output-dir out
    text_cases mat
    text_cases output-dir
    text_cases image-root
    real_cases min-face-score
    real_cases max-second-face-score
    real_cases margin
    bad margin --margin -0.1
    bad margin --margin 2.5
    integer_cases size
    bad size --size 7
    bad size --size 4097
    switch_cases skip-corrupt
    real_cases test-fraction
    bad test-fraction --test-fraction 0
    bad test-fraction --test-fraction 0.96
    bad test-fraction --test-fraction 1
    bad test-fraction --test-fraction -0.5
    integer_cases seed
    bad seed --seed -1
    help --size abc --help
    ;;
  nddr-summary)
    has_device=0
    common_cases
    bad network                                   # --network is required
    bad network --network vgg19-nddr
    bad network --network resnet101-nddr          # not built by the tools (docs/tools.md)
    bad network --network tiny-nddr-shortcut-shortcut
    bad network --network "$big"
    text_cases network
    bad classes --network tiny-nddr --classes 0,3
    bad classes --network tiny-nddr --classes 40,
    bad classes --network tiny-nddr --classes 40,3,2
    bad classes --network tiny-nddr --classes 40
    bad classes --network tiny-st --classes 40,3
    bad classes --network tiny-nddr --classes 100001,3
    text_cases classes
    bad input --network tiny-nddr --input 1,3,321
    bad input --network tiny-nddr --input 1,4,321,321
    bad input --network tiny-nddr --input 0,3,321,321
    bad input --network tiny-nddr --input 1,3,321,321,1
    bad input --network tiny-nddr --input 1,3,-5,321
    bad input --network tiny-nddr --input 1x3x5x5
    text_cases input
    help --network bogus --help
    ;;
  nddr-forward)
    common_cases
    req=(--network tiny-nddr --weights w.safetensors --input x.safetensors --output y.safetensors)
    bad network --weights w --input x --output y   # each required flag in turn
    bad weights --network tiny-nddr --input x --output y
    bad input --network tiny-nddr --weights w --output y
    bad output --network tiny-nddr --weights w --input x
    bad network --network vgg19-nddr --weights w --input x --output y
    bad network --network resnet101-nddr --weights w --input x --output y
    text_cases network
    for f in weights input output targets; do text_cases "$f"; done
    bad classes "${req[@]}" --classes 0,3
    bad classes "${req[@]}" --classes 40
    bad classes "${req[@]}" --classes 40,3,2
    bad dtype "${req[@]}" --dtype f16
    bad dtype "${req[@]}" --dtype F64
    bad dtype "${req[@]}" --dtype f64             # not built (docs/tools.md)
    text_cases dtype
    bad device "${req[@]}" --device cuda         # CPU only (docs/tools.md)
    bad device "${req[@]}" --device cuda:0
    bad loss-weights "${req[@]}" --loss-weights 1,20
    bad loss-weights "${req[@]}" --targets t --loss-weights 1
    bad loss-weights "${req[@]}" --targets t --loss-weights 1,nan
    bad loss-weights "${req[@]}" --targets t --loss-weights -1,2
    bad loss-weights "${req[@]}" --targets t --loss-weights 1,2,3
    switch_cases train
    bad weights "${req[@]}"                       # files that do not exist
    bad weights --network tiny-nddr --weights /dev/null --input x --output y
    help --network bogus --help
    ;;
  *)
    echo "cli_corpus.sh: no table for program '$program'" >&2
    exit 2
    ;;
esac

echo "$program: $((cases - failures)) of $cases command lines handled as expected"
[[ $failures -eq 0 ]]
