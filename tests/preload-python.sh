#!/bin/sh
# python3 under LD_PRELOAD=libemma.so.0 gives the same output as without.
# SPDX-License-Identifier: MIT OR Apache-2.0
# shellcheck source=tests/preload-lib.sh
. "${srcdir:-.}/preload-lib.sh"
need python3

cat >"$tmp/work.py" <<'PY'
import hashlib, json, re, sys, threading

def build(seed, n):
    d = {}
    x = seed
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        key = "k%x" % x
        d[key] = [i, str(x) * (1 + x % 7), {"v": x % 1000}]
    return d

d = build(1, 120000)
keys = sorted(d)
h = hashlib.sha256()
for k in keys[::7]:
    h.update(json.dumps(d[k], sort_keys=True).encode())
print(len(d), h.hexdigest())

# big buffers: these go to malloc even with pymalloc
blobs = [bytes([i % 251]) * (600 + (i * 7919) % 300000) for i in range(600)]
print(sum(len(b) for b in blobs), sum(b[-1] for b in blobs))
del blobs[::2]
grown = bytearray()
for i in range(2000):
    grown += b"%d," % i * 20
print(len(grown), hashlib.md5(grown).hexdigest())

text = " ".join(keys[:50000])
print(len(re.findall(r"k[0-9a-f]{3}7", text)))

# several threads allocating at once (and freeing each other's objects)
results = {}
def work(t):
    local = build(t + 100, 30000)
    results[t] = sum(len(v[1]) for v in local.values())
ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print(sorted(results.items()))
PY

export PYTHONHASHSEED=0
unset PYTHONMALLOC
compare python-pymalloc python3 "$tmp/work.py"
# every object through malloc: far more work for emma
export PYTHONMALLOC=malloc
compare python-malloc python3 "$tmp/work.py"
finish
