#!/usr/bin/env bash
# usage: tests/cli/check_clash.sh EXPAR LAUNCH NRANKS CASE TOPOLOGY_DIR
# An output naming an input (or another output) must be refused before anything is written: one
# `expar: error:` line naming both options, a non-zero exit, and the file left as it was (size and
# checksum). CASE picks the clash; each prepares its files (a checkpoint, a trainer log, links, copies of
# a config, topology or matrix file) in a scratch directory, so a failure here cannot harm the sources.
set -euo pipefail
if [ $# -ne 5 ]; then
    echo "usage: $0 EXPAR LAUNCH NRANKS CASE TOPOLOGY_DIR" >&2
    exit 2
fi
expar=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
launch=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
nranks=$3
case_name=$4
topology_dir=$(cd "$5" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"  # relative names: the messages quote them as given
export OMPI_MCA_odls_base_sigkill_timeout="${OMPI_MCA_odls_base_sigkill_timeout:-0}"

tiny=(--steps 2 --d-model 16 --num-heads 2 --num-layers 2 --d-ff-dense 32 --d-ff 16 --seq-len 8 --batch-size 2
      --synthetic-vocab 32 --synthetic-eval-sequences 4 --experts 4)
layer=(--d-model 16 --d-ff 32 --tokens-per-rank 32 --steps 2 --warmup 0 --experts 4)
simulate=(--topology "$topology_dir/dgx-h100.yaml" --ranks 4 --experts 4 --steps 1)
prepare_checkpoint() { "$launch" 1 "$expar" train "${tiny[@]}" --checkpoint ck.h5 >prepare.out 2>&1 || { cat prepare.out; exit 1; }; }
prepare_train_log() { "$launch" 1 "$expar" train "${tiny[@]}" --log-routing-every 1 --log train.h5 >prepare.out 2>&1 || { cat prepare.out; exit 1; }; }

# expect FILE "message" EXPAR-ARGS...: the error, and FILE unchanged.
expect() {
    local file=$1 message=$2
    shift 2
    [ -s "$file" ] || { echo "FAIL: the prepared file '$file' is missing or empty"; exit 1; }
    local before after
    before="$(stat -c %s "$file") $(md5sum <"$file")"
    "$here/expect_error.sh" "$nranks" "$message" "$expar" "$@"
    after="$(stat -c %s "$file") $(md5sum <"$file")"
    if [ "$before" != "$after" ]; then
        echo "FAIL: '$file' changed (size and md5 before: $before; after: $after)"
        exit 1
    fi
    echo "ok:   '$file' unchanged ($before)"
}

case "$case_name" in
    train_log_is_resume)
        prepare_checkpoint
        expect ck.h5 "--log 'ck.h5' is the same file as --resume 'ck.h5': it would be overwritten" \
            train "${tiny[@]}" --resume ck.h5 --log ck.h5 ;;
    train_dump_is_resume_hard_link)
        prepare_checkpoint
        ln ck.h5 hard.h5
        expect ck.h5 "--dump 'hard.h5' is the same file as --resume 'ck.h5' (a hard link): it would be overwritten" \
            train "${tiny[@]}" --resume ck.h5 --dump hard.h5 ;;
    train_log_is_resume_symlink)
        prepare_checkpoint
        ln -s ck.h5 link.h5
        expect ck.h5 "--log 'ck.h5' is the same file as --resume 'link.h5' (through a symbolic link): it would be overwritten" \
            train "${tiny[@]}" --resume link.h5 --log ck.h5 ;;
    train_dump_is_resume_through_directory_link)
        prepare_checkpoint
        mkdir real
        mv ck.h5 real/ck.h5
        ln -s real linked
        expect real/ck.h5 "--dump 'linked/ck.h5' is the same file as --resume 'real/ck.h5' (through a symbolic link)" \
            train "${tiny[@]}" --resume real/ck.h5 --dump linked/ck.h5 ;;
    train_log_is_checkpoint_partial)
        # A previous log where the checkpoint's partial file will go.
        prepare_train_log
        expect train.h5 "--checkpoint's partial file 'train.h5.partial' are the same file" \
            train "${tiny[@]}" --checkpoint train.h5 --log train.h5.partial ;;
    layer_log_and_dump_hard_link)
        # An existing log hard-linked under the dump's name: the right reason, not a hint about the directory.
        prepare_train_log
        ln train.h5 dump.h5
        expect train.h5 "--log 'train.h5' and --dump 'dump.h5' are the same file (a hard link): one would overwrite the other" \
            layer "${layer[@]}" --log train.h5 --dump dump.h5 ;;
    layer_log_dangling_symlink_is_dump)
        # A dangling link creates its target: two outputs that would land on one new file, neither created.
        mkdir out
        ln -s out/new.h5 link.h5
        "$here/expect_error.sh" "$nranks" \
            "--log 'link.h5' and --dump 'out/new.h5' are the same file (through a symbolic link): one would overwrite the other" \
            "$expar" layer "${layer[@]}" --log link.h5 --dump out/new.h5
        [ ! -e out/new.h5 ] || { echo "FAIL: out/new.h5 was created"; exit 1; }
        echo "ok:   nothing created" ;;
    train_checkpoint_may_be_resume)
        # Not a clash: continue and save in place (loaded first, then a complete file renamed over it).
        prepare_checkpoint
        steps3=("${tiny[@]}")
        steps3[1]=3
        "$launch" "$nranks" "$expar" train "${steps3[@]}" --resume ck.h5 --checkpoint ck.h5 >run.out 2>&1 ||
            { echo "FAIL: --resume ck.h5 --checkpoint ck.h5 was refused:"; cat run.out; exit 1; }
        grep -q "resumed from ck.h5 at step 2" run.out || { echo "FAIL: no resume at step 2:"; cat run.out; exit 1; }
        echo "ok:   --checkpoint may name the --resume file" ;;
    train_log_is_text_file)
        head -c 4000 "$launch" >text.txt
        expect text.txt "--log 'text.txt' is the same file as --text-file 'text.txt': it would be overwritten" \
            train "${tiny[@]}" --data bytes --text-file text.txt --log text.txt ;;
    train_dump_is_data_dir_file)
        mkdir brown
        head -c 4000 "$launch" >brown/train.bin
        expect brown/train.bin "--dump './brown/train.bin' is the same file as --data-dir 'brown/train.bin'" \
            train "${tiny[@]}" --data brown --data-dir brown --dump ./brown/train.bin ;;
    train_log_is_config)
        printf 'grad-clip = 0.5\n' >train.ini
        expect train.ini "--log 'train.ini' is the same file as --config 'train.ini': it would be overwritten" \
            train "${tiny[@]}" --config train.ini --log train.ini ;;
    layer_log_is_topology)
        cp "$topology_dir/dgx-h100.yaml" cluster.yaml
        expect cluster.yaml "--log 'cluster.yaml' is the same file as --topology 'cluster.yaml': it would be overwritten" \
            layer "${layer[@]}" --topology cluster.yaml --log cluster.yaml ;;
    layer_dump_is_config)
        printf 'skew = 0.5\n' >layer.ini
        expect layer.ini "--dump 'layer.ini' is the same file as --config 'layer.ini': it would be overwritten" \
            layer "${layer[@]}" --config layer.ini --dump layer.ini ;;
    simulate_log_is_replay)
        prepare_train_log
        expect train.h5 "--log 'train.h5' is the same file as --replay 'train.h5': it would be overwritten" \
            simulate "${simulate[@]}" --routing replay --replay train.h5:/routing/counts --log train.h5 ;;
    simulate_log_is_config)
        printf 'capacity-factor = 1.5\n' >simulate.ini
        expect simulate.ini "--log 'simulate.ini' is the same file as --config 'simulate.ini': it would be overwritten" \
            simulate "${simulate[@]}" --config simulate.ini --log simulate.ini ;;
    simulate_sweep_log_is_topology)
        # The second sweep point's topology: every point's inputs count.
        cp "$topology_dir/dgx-a100.yaml" cluster.yaml
        expect cluster.yaml "--log 'cluster.yaml' is the same file as --topology 'cluster.yaml': it would be overwritten" \
            simulate "${simulate[@]}" --sweep "topology=$topology_dir/dgx-h100.yaml,cluster.yaml" --log cluster.yaml ;;
    alltoall_log_is_matrix_file)
        printf '0 1\n1 0\n' >matrix.txt
        expect matrix.txt "--log 'matrix.txt' is the same file as --matrix-file 'matrix.txt': it would be overwritten" \
            alltoall --pattern file --matrix-file matrix.txt --max-bytes 65536 --log matrix.txt ;;
    calibrate_out_is_config)
        printf 'repetitions = 1\n' >calibrate.ini
        cp "$topology_dir/dgx-h100.yaml" cluster.yaml
        expect calibrate.ini "--out 'calibrate.ini' is the same file as --config 'calibrate.ini': it would be overwritten" \
            calibrate --base cluster.yaml --config calibrate.ini --out calibrate.ini ;;
    calibrate_out_is_base)
        cp "$topology_dir/dgx-h100.yaml" cluster.yaml
        expect cluster.yaml "--out './cluster.yaml' is the same file as --base 'cluster.yaml': it would be overwritten" \
            calibrate --base cluster.yaml --out ./cluster.yaml ;;
    *)
        echo "usage: $0 EXPAR LAUNCH NRANKS CASE TOPOLOGY_DIR: unknown CASE '$case_name'" >&2
        exit 2 ;;
esac
