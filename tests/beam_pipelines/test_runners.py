"""The job on a real distributed engine and on several processes: Beam's DaskRunner (potstill's
fixed subclass, beam_pipelines/dask_runner.py) against a dask.distributed scheduler with 2 worker
processes started here on 127.0.0.1, and the multi-process DirectRunner. Each publishes exactly
the data of the in-process DirectRunner on the same inputs, each computing its own teacher
answers (separate output roots, so separate teacher stores), and reports the same teacher usage:
it is read from the teacher store, not from Beam metrics, which the DaskRunner does not report."""
import json

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from potstill.beam_pipelines import runners
from potstill.beam_pipelines.pipeline import run
from potstill.config.core import parse_config
from potstill.transforms.write import WriteShards

pytestmark = pytest.mark.slow  # starts a scheduler and worker processes

UNLABELED = [{"text": f"review {i}: the film was {'good' if i % 3 else 'dull'}"} for i in range(60)]
UNLABELED += [{"text": "review 4: the film was good"}, {"text": ""}, {"text": 7},
              {"text": "held out review"}]  # a duplicate, two rejects, a test leak
SEED = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"},
        {"text": "fine", "label": "neutral"}]
TEST = [{"text": "held out review", "label": "negative"}]
FILES = ("data/part-0.parquet", "filtered.parquet", "rejected.parquet", "teacher_keys.parquet")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    return {"unlabeled": {"path": write_jsonl(d / "u.jsonl", UNLABELED)},
            "seed": {"path": write_jsonl(d / "s.jsonl", SEED), "label_field": "label"},
            "test": {"path": write_jsonl(d / "t.jsonl", TEST), "label_field": "label"}}


def config(root, inputs, model, **extra):
    return parse_config({"dataset": "toy", "output_root": str(root),
                         "task": {"labels": ["negative", "positive"]}, "corpus": inputs,
                         "teacher": {"model": model, "batch_size": 4, "threads": 1}, **extra})


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as c:
        yield c


BUDGET = {"budget": {"teacher_calls": 12, "rounds": 2, "strategy": "random"}}


@pytest.fixture(scope="module")
def direct(tmp_path_factory, inputs, tiny_lm):
    """The in-process DirectRunner's version of each config, run once."""
    done = {}

    def version(**extra):
        key = json.dumps(extra, sort_keys=True)
        if key not in done:
            done[key] = run(config(tmp_path_factory.mktemp("direct"), inputs, tiny_lm, **extra))
        return done[key]
    return version


USAGE = ("rows", "rows_failed", "cache_hits", "calls", "retries", "prompt_tokens", "generated_tokens")


def assert_same_usage(version, reference):
    """The same teacher usage as the in-process DirectRunner's, and real numbers: every seed row
    a store hit (the audit answered it), every other row a model call."""
    got, want = (json.loads((v / "manifest.json").read_text()) for v in (version, reference))
    usage = got["teacher_usage"]
    assert "reported" not in usage
    assert {k: usage[k] for k in USAGE} == {k: want["teacher_usage"][k] for k in USAGE}
    gold = 2  # the third seed row's label is unknown: rejected
    assert usage["cache_hits"] == gold and usage["calls"] == usage["rows"] - gold > 0
    assert usage["prompt_tokens"] > usage["calls"] and usage["rows_failed"] == 0
    assert got["throughput"]["teacher_rows"] == want["throughput"]["teacher_rows"] == usage["rows"]
    return usage


def assert_same_version(version, reference):
    for name in FILES:
        got, want = pq.read_table(version / name), pq.read_table(reference / name)
        assert got.num_rows == want.num_rows, name
        assert got.equals(want), name
    counts = json.loads((version / "manifest.json").read_text())["counts"]
    assert counts == json.loads((reference / "manifest.json").read_text())["counts"]
    # no row lost: every input row is published, filtered or rejected
    assert counts["totals"]["read"] == len(UNLABELED) + len(SEED)
    assert counts["rejected"] == {"empty_text": 1, "non_string_text": 1, "unknown_label": 1}
    return counts


@pytest.mark.parametrize("extra", [{}, BUDGET], ids=["default", "budget-2-rounds"])
def test_dask_cluster_publishes_the_direct_runners_data(tmp_path, inputs, tiny_lm, cluster, direct,
                                                         extra):
    version = run(config(tmp_path, inputs, tiny_lm, **extra),
                  ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"])
    counts = assert_same_version(version, direct(**extra))
    assert counts["published"]["corpus"] == (12 if extra else 60)
    usage = assert_same_usage(version, direct(**extra))  # from the store: no Beam metrics needed
    assert usage["rows"] == (12 if extra else 60) + 2  # a budget sends 12 pool rows; 2 gold rows
    workers = cluster.scheduler_info["workers"]
    assert len(workers) == 2 and all(a.startswith("tcp://127.0.0.1:") for a in workers)


def test_multi_process_direct_runner_publishes_the_same_data(tmp_path, inputs, tiny_lm, direct):
    version = run(config(tmp_path, inputs, tiny_lm),
                  ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert_same_version(version, direct())
    assert_same_usage(version, direct())


def _split(n):
    yield n if n % 2 else beam.pvalue.TaggedOutput("even", n)


def test_dask_runner_routes_tagged_outputs_and_keeps_finish_bundle_outputs(tmp_path, cluster):
    """Beam's own translation hands every output of a multi-output ParDo to each consumer and
    drops what finish_bundle emits (BatchElements' last batch): ours must do neither."""
    import pyarrow as pa

    p = beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(
        [f"--runner={runners.DASK}", f"--dask_client_address={cluster.scheduler_address}"]))
    parts = p | beam.Create(list(range(301))) | beam.FlatMap(_split).with_outputs("even", main="odd")
    schema = pa.schema([("n", pa.int64())])
    written = []
    for tag in ("odd", "even"):
        rows = (parts[tag] | f"Batch{tag}" >> beam.BatchElements(min_batch_size=7, max_batch_size=7)
                | f"Unbatch{tag}" >> beam.FlatMap(lambda b: [{"n": n} for n in b]))
        written.append(rows | f"Write{tag}" >> WriteShards(str(tmp_path), tag, schema))
    written | beam.Flatten() | "Done" >> beam.Map(lambda n: n)
    p.run().wait_until_finish()
    for tag, want in (("odd", range(1, 301, 2)), ("even", range(0, 301, 2))):
        got = pq.read_table([str(f) for f in tmp_path.glob(f"{tag}-*.parquet")])["n"].to_pylist()
        assert sorted(got) == list(want)


def test_dask_runner_flags_become_potstills_runner():
    for flags in (["--runner", "DaskRunner"], ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner"]):
        assert runners.resolve(flags + ["--x=1"]) == ["--x=1", f"--runner={runners.DASK}"]
    assert runners.resolve(["--runner=DirectRunner"]) == ["--runner=DirectRunner"]
    # only generation through a remote endpoint is counted by Beam metrics alone
    assert runners.not_counted(["--runner=DaskRunner"], True) == runners.NOT_COUNTED
    assert runners.not_counted(["--runner=DaskRunner"], False) is None
    assert runners.not_counted([], True) is None
