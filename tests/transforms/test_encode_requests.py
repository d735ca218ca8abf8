"""The teacher stage's encoding (transforms/teacher.py EncodeRequests): rows encoded in chunks,
their demonstrations chosen for the whole chunk at once, get the very requests (prompt ids,
demonstrations, store key) that encoding each row alone gives, keyed by that store key."""
import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from potstill.config.core import FewShot
from potstill.models.teacher.requests import encode_request
from potstill.models.teacher.teacher_setup import TeacherSetup
from potstill.rows.records import Record, stable_id

WORDS = "good bad dull fine great awful plot acting score pacing dialogue cast story ending".split()


def texts(n: int) -> list[str]:
    k = len(WORDS)
    return [f"review {i}: the {WORDS[i % k]} was {WORDS[(i // k) % k]}" + " and more" * (i % 5)
            for i in range(n)]


@pytest.fixture(scope="module")
def setup(tiny_lm, tiny_bert) -> TeacherSetup:
    pool = tuple((f"gold {i} {WORDS[i]} {WORDS[-i]}", ("negative", "positive")[i % 2]) for i in range(12))
    return TeacherSetup(tiny_lm, ("negative", "positive"), few_shot=FewShot(k=4, selection="similar"),
                        embedder_path=tiny_bert, demo_pool=pool)


@pytest.mark.parametrize("rows", [1, 7, 256])
def test_chunked_encoding_gives_each_row_the_request_it_gets_alone(setup, rows):
    from potstill.transforms.teacher import EncodeRequests

    records = [Record(stable_id(t), t, "corpus", None, f"u:{i}") for i, t in enumerate(texts(60))]
    lt = setup.prompter()
    alone = [encode_request(lt, r.model_input) for r in records]
    assert len({q.key for q in alone}) == len(records)
    assert len({q.ids[:20] for q in alone}) > 1  # the demonstrations differ from row to row
    expected = [(q.key, (r.id, q)) for r, q in zip(records, alone)]
    with BeamTestPipeline() as p:
        got = (p | beam.Create(records) | beam.ParDo(EncodeRequests(setup, rows))
               | beam.Map(lambda kv: (kv[0], (kv[1].id, kv[1].value("request")))))
        assert_that(got, equal_to(expected))


def test_encoding_many_rows_gives_the_ids_of_each_row_tokenised_alone(tiny_lm):
    from potstill.models.teacher.hf import TeacherBase
    from potstill.models.teacher.prompts import Demo

    teacher = TeacherBase(tiny_lm, ["negative", "positive"], max_input_tokens=12, demo_max_tokens=8)
    rows = texts(20) + ["a long review " * 40]
    demos = [[Demo(f"gold row {j} " * (1 + j * 5), "positive") for j in range(i % 3)] for i in range(len(rows))]

    def alone(text, row_demos):  # truncate the text and the demonstrations, render, tokenise
        cut = [Demo(teacher.truncate(d.text, 8), d.answer) for d in row_demos]
        return teacher._encoded(teacher._ids(teacher.prompt.render(teacher.truncate(text), cut)), bool(cut))

    many = teacher.encode_many(rows, demos)
    assert many == [alone(t, d) for t, d in zip(rows, demos)]
    assert sum(len(teacher._ids(t)) > 12 for t in rows) > 10  # most rows were cut
    assert {e.shared for e in many} >= {"head", "prefix"}
