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


@pytest.mark.parametrize("backend", ["hf", "openai"])
def test_scores_computed_a_chunk_at_a_time_are_each_rows_own(tiny_lm, backend):
    """`Scores` turns SCORE_ROWS rows' candidates into label values at once: every row gets the
    values it gets alone (its option count and calibration included), across chunk edges."""
    import dataclasses

    import numpy as np

    from potstill.transforms.teacher import SCORE_ROWS, Scores

    setup = dataclasses.replace(TeacherSetup(tiny_lm, ("negative", "positive", "neutral")), backend=backend)
    n_cand = len(setup.prompter().teacher.cand_ids)
    rng = np.random.default_rng(0)
    records = [Record(stable_id(f"row {i}"), f"row {i}", "corpus", None, f"u:{i}",
                      choices=("yes", "no") if i % 3 == 0 else None).with_values(
                   raw_candidates=np.log(rng.dirichlet(np.ones(n_cand)) * 0.9).tolist())
               for i in range(SCORE_ROWS + 45)]

    def values(dofn, rows):
        dofn.setup()
        dofn.start_bundle()
        out = [r for row in rows for r in dofn.process(row)]
        out += [w.value for w in dofn.finish_bundle()]
        return {r.id: dict(r.values) for r in out}

    together = values(Scores(setup, keep_raw=True), records)
    alone = {}
    for r in records:
        alone.update(values(Scores(setup, keep_raw=True), [r]))
    assert len(together) == len(records) and together.keys() == alone.keys()
    for key, got in together.items():
        want = alone[key]
        assert got.keys() == want.keys() and got["teacher_label"] == want["teacher_label"]
        for name in ("label_probs", "label_probs_raw", "teacher_confidence", "teacher_entropy"):
            assert np.allclose(got[name], want[name], rtol=1e-6, atol=1e-7), name
    assert ("teacher_outside_mass" in next(iter(together.values()))) == (backend == "openai")
    masked = [together[r.id]["label_probs"][2] for r in records if r.choices]
    assert max(masked) < 1e-6  # a row with two options gets no mass on the third label
