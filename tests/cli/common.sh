# Sourced by the tests/cli scripts: shared helpers.

# A Python with h5py and numpy: $PYTHON if set, else the first python3 on PATH that has them, else Debian's.
find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3 /usr/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import h5py, numpy' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    echo "FAIL: no python3 with h5py and numpy found (set PYTHON=...; Debian: apt-get install python3-h5py)" >&2
    return 1
}
