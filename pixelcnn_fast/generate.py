"""Python front end: dataset generation in shards (the contract `pixelcnn_fast.beam` and `pixelcnn-fast
generate` run on, and a single-process runner of the same contract).

A job draws images 0 .. n-1 of the stream `seed` defines (Sampler.sample's global image index) from a
model file, in shards of `shard_size` images: shard k holds images [k * shard_size, min((k+1) * shard_size,
n)), drawn by one `sample(count, seed, temperature, image_offset=k * shard_size)` call, so which worker or
process draws a shard, and how many there are, never changes its bytes. Each shard is a TFRecord file
`images-KKKKK-of-NNNNN.tfrecord` of tf.train.Example records, one per image, in index order:

    index   int64      the image's global index
    shape   int64 x 3  (H, W, C)
    levels  int64 x H*W*C   the drawn levels, row-major (H, W, C)
    png     bytes      the image as an 8-bit PNG (grey or RGB; level k -> round(255 k / (levels - 1)))

A shard is written to a temporary name in the output directory and renamed into place only once it is
complete (os.replace is atomic on one file system), so a file under a final name is always a whole shard,
and a re-run (after a crash, a deleted shard) skips those and redraws the rest. `job.json`, written first,
pins the job's parameters: a re-run with other parameters into the same directory is refused. The manifest
(`manifest.json`, written last, also atomically) records the model file's SHA-256, seed, temperature, n,
shard size and, per shard, its file, first index, count and SHA-256.
"""

import hashlib
import json
import os
import tempfile

import numpy as np

__all__ = ["Job", "shard_name", "write_shard", "run_local", "write_manifest", "read_shard"]

JOB_FILE, MANIFEST_FILE = "job.json", "manifest.json"
FORMAT = "pixelcnn_fast.generate 1"


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Job:
    """One generation job's parameters (picklable: Beam ships it to every worker)."""

    def __init__(self, model, out_dir, n, seed=0, temperature=1.0, shard_size=1000, model_sha256=None):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"generate: n must be an int >= 1, got {n!r}")
        if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
            raise ValueError(f"generate: shard_size must be an int >= 1, got {shard_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
            raise ValueError(f"generate: seed must be an int in [0, 2**64), got {seed!r}")
        t = float(temperature)
        if not np.isfinite(t) or t <= 0:
            raise ValueError(f"generate: temperature must be a positive finite number, got {temperature!r}")
        if int(n) > 2 ** 32:
            raise ValueError(f"generate: n must be <= 2**32 (image indices are 32-bit), got {n}")
        if not os.path.isfile(model):
            raise ValueError(f"generate: model file '{model}' does not exist")
        self.model, self.out_dir = os.path.abspath(model), os.path.abspath(out_dir)
        self.n, self.seed, self.temperature, self.shard_size = int(n), int(seed), t, int(shard_size)
        self.model_sha256 = model_sha256 or file_sha256(self.model)

    @property
    def num_shards(self):
        return -(-self.n // self.shard_size)

    def shard_range(self, k):
        """(first global index, count) of shard k."""
        first = k * self.shard_size
        return first, min(self.shard_size, self.n - first)

    def params(self):
        return {"format": FORMAT, "model_sha256": self.model_sha256, "n": self.n, "seed": self.seed,
                "temperature": self.temperature, "shard_size": self.shard_size}

    def prepare(self):
        """Creates the directory and job.json, or checks that an existing job.json is this job."""
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, JOB_FILE)
        mine = self.params()
        if os.path.exists(path):
            with open(path) as f:
                theirs = json.load(f)
            diff = [k for k in mine if theirs.get(k) != mine[k]]
            if diff:
                raise ValueError(
                    f"generate: {self.out_dir} holds another job ({', '.join(f'{k}={theirs.get(k)!r}' for k in diff)}"
                    f", this one has {', '.join(f'{k}={mine[k]!r}' for k in diff)}): use another directory, or "
                    f"delete it to start over")
        else:
            _write_atomic(path, (json.dumps(mine, indent=1) + "\n").encode())


def shard_name(k, num_shards):
    return f"images-{k:05d}-of-{num_shards:05d}.tfrecord"


def _temporary(directory, name):
    """A new temporary file next to `name` (same file system, so os.replace is atomic), with the mode a
    plain open() would give (mkstemp's is 0600)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def _write_atomic(path, data):
    fd, tmp = _temporary(os.path.dirname(path), os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _examples(levels, first, levels_count):
    import tensorflow as tf

    from pixelcnn_fast.png import encode_png

    n, h, w, c = levels.shape
    scale = 255.0 / (levels_count - 1)
    for k in range(n):
        pixels = np.rint(levels[k].astype(np.float64) * scale).astype(np.uint8)
        feature = {
            "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[first + k])),
            "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=[h, w, c])),
            "levels": tf.train.Feature(int64_list=tf.train.Int64List(value=levels[k].ravel().tolist())),
            "png": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encode_png(pixels)])),
        }
        # deterministic=True: a map field (the features) serialised in key order, not in an order that may
        # differ between processes, so the same images give the same bytes on every worker.
        yield tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def write_shard(job, sampler, k):
    """Draws shard k with `sampler` and writes it, unless it is complete already. Returns its manifest
    entry {"file", "first_index", "count", "sha256", "written"}."""
    import tensorflow as tf

    name = shard_name(k, job.num_shards)
    path = os.path.join(job.out_dir, name)
    first, count = job.shard_range(k)
    written = False
    if not os.path.exists(path):
        levels = sampler.sample(count, job.seed, job.temperature, image_offset=first)
        fd, tmp = _temporary(job.out_dir, name)
        os.close(fd)
        try:
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in _examples(levels, first, sampler.levels):
                    writer.write(record)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)  # only a whole shard ever has its final name
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        written = True
    return {"file": name, "first_index": first, "count": count, "sha256": file_sha256(path), "written": written}


def write_manifest(job, entries, image_shape, levels_count):
    """Writes manifest.json from every shard's entry (any order); returns the manifest."""
    entries = sorted(entries, key=lambda e: e["first_index"])
    if [e["file"] for e in entries] != [shard_name(k, job.num_shards) for k in range(job.num_shards)]:
        raise ValueError(f"generate: {len(entries)} shard entries for a job of {job.num_shards} shards")
    from pixelcnn_fast._version import __version__

    manifest = dict(job.params(), model_file=os.path.basename(job.model), image_shape=list(image_shape),
                    levels=int(levels_count), pixelcnn_fast=__version__,
                    shards=[{k: e[k] for k in ("file", "first_index", "count", "sha256")} for e in entries],
                    counts={"images": sum(e["count"] for e in entries), "shards": len(entries),
                            "written_this_run": sum(bool(e["written"]) for e in entries)})
    _write_atomic(os.path.join(job.out_dir, MANIFEST_FILE), (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def load_sampler(job):
    """The Sampler a worker builds once (Beam: DoFn.setup) for the job's model file."""
    from pixelcnn_fast.models import load_model
    from pixelcnn_fast.sampler import Sampler

    model = load_model(job.model)
    return Sampler(model)


def run_local(job, sampler=None):
    """The whole job in this process, shard after shard (the contract without a Beam runner)."""
    job.prepare()
    sampler = sampler or load_sampler(job)
    entries = [write_shard(job, sampler, k) for k in range(job.num_shards)]
    return write_manifest(job, entries, sampler.program.image_shape, sampler.levels)


def read_shard(path):
    """[(index, levels (H, W, C) int64, png bytes)] of one shard, in file order (for checks and users)."""
    import tensorflow as tf

    spec = {"index": tf.io.FixedLenFeature([], tf.int64), "shape": tf.io.FixedLenFeature([3], tf.int64),
            "levels": tf.io.VarLenFeature(tf.int64), "png": tf.io.FixedLenFeature([], tf.string)}
    out = []
    for record in tf.data.TFRecordDataset(path):
        ex = tf.io.parse_single_example(record, spec)
        shape = ex["shape"].numpy()
        out.append((int(ex["index"]), tf.sparse.to_dense(ex["levels"]).numpy().reshape(shape),
                    ex["png"].numpy()))
    return out
