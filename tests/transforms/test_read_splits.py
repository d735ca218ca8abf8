"""Several splits read by one step (transforms/read.py ReadSplits): each file parsed as its own
split's ReadSplit parses it, every row a record or a rejected row, and no Flatten between them."""
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from potstill.transforms.read import ReadSplit, ReadSplits


def test_each_file_is_parsed_as_its_splits_own(tmp_path):
    for i in range(2):
        (tmp_path / f"u{i}.jsonl").write_text("".join(json.dumps({"body": f"corpus {i} row {j}"}) + "\n"
                                                      for j in range(3)) + "{not json\n")
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": "seed row", "label": "positive"}) + "\n"
                                      + json.dumps({"text": "seed with a bad label", "label": "maybe"}) + "\n")
    splits = [ReadSplit(str(tmp_path / "u*.jsonl"), "corpus", "body"),
              ReadSplit(str(tmp_path / "s.jsonl"), "seed", "text", "label", ["negative", "positive"])]
    with BeamTestPipeline() as p:
        read = p | ReadSplits(splits)
        assert_that(read.records | "Rows" >> beam.Map(lambda r: (r.source, r.text, r.gold_label)),
                    equal_to([("corpus", f"corpus {i} row {j}", None) for i in range(2) for j in range(3)]
                             + [("seed", "seed row", "positive")]), label="records")
        assert_that(read.rejected | "Why" >> beam.Map(lambda r: (r["source"], r["input_ref"].rsplit("/", 1)[1])),
                    equal_to([("corpus", "u0.jsonl:4"), ("corpus", "u1.jsonl:4"), ("seed", "s.jsonl:2")]),
                    label="rejected")


def test_a_split_whose_file_is_gone_stops_the_read_naming_it(tmp_path):
    (tmp_path / "u.jsonl").write_text(json.dumps({"text": "a row"}) + "\n")
    splits = [ReadSplit(str(tmp_path / "u.jsonl"), "corpus", "text"),
              ReadSplit(str(tmp_path / "gone.jsonl"), "seed", "text", "label", ["a", "b"])]
    with pytest.raises(Exception, match="gone.jsonl"):
        with BeamTestPipeline() as p:
            p | ReadSplits(splits)
