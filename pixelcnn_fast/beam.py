"""Python front end: the dataset generation job (pixelcnn_fast/generate.py's shard contract) as an Apache
Beam pipeline. Needs the optional extra: pip install "pixelcnn-fast[beam]".

    shard indices --Create--> Reshuffle --ParDo(WriteShardFn)--> entries --ToList--> manifest.json

WriteShardFn builds the Sampler once per worker (DoFn.setup: loading the model and lowering it costs seconds;
a shard then costs one sample() call), skips a shard that is complete under its final name and otherwise
draws and writes it (atomically, generate.write_shard); one last step writes the manifest. Reshuffle lets
the runner spread the shards over its workers. The pipeline is plain Beam: DirectRunner locally
(--direct_num_workers N --direct_running_mode multi_processing), and DataflowRunner / FlinkRunner /
SparkRunner with their usual options (--runner, --project/--region/--temp_location for Dataflow,
--flink_master, --spark_master_url) and an output directory every worker can write (a shared file
system; the writer uses os.replace, so object stores such as gs:// need a FUSE mount).
"""

try:
    import apache_beam as beam
except ImportError as exc:  # the optional extra is missing: say how to get it
    raise ImportError('pixelcnn_fast.beam needs Apache Beam: pip install "pixelcnn-fast[beam]" (or pip install '
                      f'apache-beam); {exc}') from exc

from pixelcnn_fast import generate

__all__ = ["WriteShardFn", "build", "run"]


class WriteShardFn(beam.DoFn):
    """Shard index -> its manifest entry; the sampler is built once per worker in setup()."""

    def __init__(self, job):
        super().__init__()
        self.job = job
        self.sampler = None

    def setup(self):
        self.sampler = generate.load_sampler(self.job)

    def process(self, k):
        entry = generate.write_shard(self.job, self.sampler, k)
        entry["image_shape"] = list(self.sampler.program.image_shape)
        entry["levels"] = int(self.sampler.levels)
        yield entry


def _manifest(entries, job):
    first = entries[0]
    return generate.write_manifest(job, entries, first["image_shape"], first["levels"])


def build(pipeline, job):
    """Adds the job's steps to `pipeline`; returns the PCollection holding the manifest."""
    return (pipeline
            | "ShardIndices" >> beam.Create(list(range(job.num_shards)))
            | "Spread" >> beam.Reshuffle()
            | "WriteShards" >> beam.ParDo(WriteShardFn(job))
            | "Collect" >> beam.combiners.ToList()
            | "WriteManifest" >> beam.Map(_manifest, job))


def run(job, beam_args=()):
    """Runs the job with Beam's options from `beam_args` (e.g. ["--direct_num_workers", "2",
    "--direct_running_mode", "multi_processing"]); returns the manifest read back."""
    import json
    import os

    from apache_beam.options.pipeline_options import PipelineOptions

    job.prepare()
    with beam.Pipeline(options=PipelineOptions(list(beam_args))) as p:
        build(p, job)
    with open(os.path.join(job.out_dir, generate.MANIFEST_FILE)) as f:
        return json.load(f)
