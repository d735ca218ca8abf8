"""The generation stage: its plain steps on hand-written outputs, the Beam stage and the whole job
with a tiny random generator, and one real-model run with the packaged SmolLM2."""
import json

import pyarrow.parquet as pq
import pytest
from apache_beam.ml.inference.base import PredictionResult
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import apache_beam as beam
from potstill.beam_pipelines.pipeline import generator_handler, run
from potstill.models.generation.generate import Generation, PromptSpec, Sampling
from potstill.models.generation.text_filters import Reference, TextRules, minhash
from potstill.config.core import ConfigError, Generation as GenerationConfig, parse_config
from potstill.publish.contract import filtered_schema, scored_schema
from potstill.rows.records import Record, stable_id
from potstill.transforms.generate import (REJECTED, Candidate, GenerateExamples, GenerationBatch,
                                 drop_duplicates, failed_batches, make_batches, parse_and_check)

LABELS = ["negative", "positive"]
SEED = [Record(stable_id(t), t, "seed", l, f"s:{i}") for i, (t, l) in enumerate(
    [("a dull and lifeless film", "negative"), ("awful pacing and bad dialogue", "negative"),
     ("a warm and funny film", "positive")])]
CORPUS = [Record(stable_id(t), t, "corpus", None, f"u:{i}") for i, t in enumerate(
    ["the movie was good", "a bad film with terrible pacing", "the acting was great"])]
LEAK = "A warm, funny film about two brothers who run a bakery in Lisbon, with a great cast."


def split(outputs):
    main = [o for o in outputs if not isinstance(o, beam.pvalue.TaggedOutput)]
    rejected = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert all(o.tag == REJECTED for o in outputs if isinstance(o, beam.pvalue.TaggedOutput))
    return main, rejected


# --- plain steps --------------------------------------------------------------------------------

def test_make_batches_formats_every_prompt_in_fixed_seeded_batches():
    gen = GenerationConfig(enabled=True, per_label=5, examples_per_prompt=2, example_source="seed",
                           batch_size=4, seed=1)
    batches = list(make_batches(None, SEED, CORPUS, gen, LABELS, "Sentiment?"))
    assert [len(b.specs) for b in batches] == [4, 4, 2]
    assert len({b.seed for b in batches}) == 3
    assert batches == list(make_batches(None, list(reversed(SEED)), CORPUS, gen, LABELS, "Sentiment?"))
    for b in batches:
        assert b.scripts == {"LATIN"}
        for spec, conv in zip(b.specs, b.conversations):
            assert {t for s in SEED if s.gold_label == spec.label for t in [s.text]} >= set(spec.labelled)
            assert f'"{spec.label}"' in conv[0]["content"] and "Sentiment?" in conv[0]["content"]


def batch_of(outputs: dict[str, list[str]], truncated=False) -> PredictionResult:
    specs = tuple(PromptSpec(label, 0) for label in outputs)
    b = GenerationBatch(0, 0, specs, tuple(((),) for _ in specs), frozenset({"LATIN"}))
    return PredictionResult(b, [[Generation(t, truncated) for t in outs] for outs in outputs.values()])


def test_parse_and_check_sends_each_output_to_a_candidate_or_rejected_with_its_raw_text():
    outs = {"positive": ['Review: "A warm and funny film."', "positive", "ok", "fun " * 10],
            "negative": ["\u8fd9\u90e8\u7535\u5f71\u5f88\u65e0\u804a\u3002\u592a\u65e0\u804a\u4e86\u3002",
                         "Here is one:"]}
    main, rejected = split(list(parse_and_check(batch_of(outs), LABELS, TextRules(), 64)))
    (cand,) = main
    assert isinstance(cand, Candidate) and cand.record.text == "A warm and funny film."
    assert cand.record.source == "generated" and cand.record.intended_label == "positive"
    assert cand.record.id == stable_id("A warm and funny film.") and cand.raw == outs["positive"][0]
    assert cand.record.input_ref == "generated:positive:0:0" and cand.signature.shape == (64,)
    assert {(r["input_ref"], r["reason"]) for r in rejected} == {
        ("generated:positive:0:1", "label_only"), ("generated:positive:0:2", "too_short"),
        ("generated:positive:0:3", "repetitive"), ("generated:negative:0:0", "script_mismatch"),
        ("generated:negative:0:1", "preamble_only")}
    assert all(r["source"] == "generated" and r["raw"] and r["detail"] for r in rejected
               if r["reason"] != "label_only")


def test_truncated_outputs_are_rejected_unless_configured_otherwise():
    result = batch_of({"positive": ["A warm and funny film that"]}, truncated=True)
    _, rejected = split(list(parse_and_check(result, LABELS, TextRules(), 64)))
    assert rejected[0]["reason"] == "truncated"
    main, _ = split(list(parse_and_check(result, LABELS, TextRules(), 64, drop_truncated=False)))
    assert main[0].record.text == "A warm and funny film that"


def test_copies_of_a_prompt_example_and_label_mentions_are_rejected():
    example = "It's a fine, focused piece of work that reopens an interesting controversy."
    specs = (PromptSpec("positive", 0, (example,), ("the movie was good",)),)
    outs = ["It's a fine, focused piece of work.", "A new film about a dog who paints.",
            "This movie review is positive."]
    b = GenerationBatch(0, 0, specs, (((),),), frozenset({"LATIN"}))
    result = PredictionResult(b, [[Generation(t, False) for t in outs]])
    rules = TextRules(avoid_words=tuple(LABELS))
    main, rejected = split(list(parse_and_check(result, LABELS, rules, 64, max_example_overlap=0.5)))
    assert [c.record.text for c in main] == ["A new film about a dog who paints."]
    assert [r["reason"] for r in rejected] == ["copied_example", "label_mention"]
    main, _ = split(list(parse_and_check(result, LABELS, TextRules(), 64)))
    assert len(main) == 3  # both filters are off by default in the plain function


def candidate(order, text, label="positive"):
    rec = Record(stable_id(text), text, "generated", None, f"generated:{label}:{order}:0", intended_label=label)
    return Candidate((0, order, 0), rec, minhash(text, 128), f"raw {text}")


def test_drop_duplicates_guards_the_test_split_and_keeps_the_first_of_each_pair():
    refs = [Reference("test", stable_id(LEAK), minhash(LEAK, 128)),
            Reference("corpus", CORPUS[0].id, minhash(CORPUS[0].text, 128))]
    cands = [candidate(3, "Something else entirely, about a cat who sails to Lisbon."),
             candidate(0, LEAK.replace("A warm, funny", "A warm and funny")),       # near test row
             candidate(1, "A brand new story about a dog who learns to paint portraits."),
             candidate(2, "A brand new story about a dog who learns to paint portraits!"),  # near cand 1
             candidate(4, CORPUS[0].text)]                                             # exact corpus
    main, rejected = split(list(drop_duplicates((None, cands), refs, 0.7, 128)))
    assert [r.input_ref for r in main] == ["generated:positive:1:0", "generated:positive:3:0"]
    got = {r["input_ref"]: r["reason"] for r in rejected}
    assert got == {"generated:positive:0:0": "test_leak", "generated:positive:2:0": "near_duplicate",
                   "generated:positive:4:0": "exact_duplicate"}
    assert all(r["raw"].startswith("raw ") for r in rejected)


def test_a_failed_batch_rejects_every_output_it_owed():
    b = GenerationBatch(0, 0, (PromptSpec("positive", 0), PromptSpec("negative", 2)), ((), ()), frozenset())
    rows = failed_batches(([b], RuntimeError("out of memory")), n=2)
    assert [r["input_ref"] for r in rows] == ["generated:positive:0:0", "generated:positive:0:1",
                                              "generated:negative:2:0", "generated:negative:2:1"]
    assert {r["reason"] for r in rows} == {"generation_error"} and "out of memory" in rows[0]["detail"]


def test_generation_config_is_validated():
    with pytest.raises(ValueError, match="multiple"):
        GenerationConfig(per_label=5, outputs_per_prompt=2)
    raw = {"dataset": "x", "task": {"labels": LABELS}, "corpus": {"unlabeled": {"path": "u.jsonl"}},
           "generation": {"enabled": True}}
    with pytest.raises(ConfigError, match="needs corpus.seed"):
        parse_config(raw)
    assert parse_config({**raw, "generation": {"enabled": True, "example_source": "unlabeled"}})
    assert "intended_label" in scored_schema(["intended_label"]).names
    assert filtered_schema(["intended_label"]).field("intended_label").nullable


# --- Beam: the stage alone, then the whole job -------------------------------------------------

LOOSE = {"drop_truncated": False, "min_chars": 1, "min_letter_share": 0.0,
         "max_repeated_ngram_ratio": 1.0, "max_example_overlap": 1.0, "max_new_tokens": 8}


def stage_config(tmp_path, model, **generation):
    return parse_config({
        "dataset": "gen", "output_root": str(tmp_path / "out"), "task": {"labels": LABELS},
        "corpus": {"unlabeled": {"path": "u.jsonl"}, "seed": {"path": "s.jsonl"}},
        "teacher": {"model": model, "threads": 1},
        "generation": {"enabled": True, "per_label": 4, "outputs_per_prompt": 2, "batch_size": 3,
                       "examples_per_prompt": 2, **generation}})


def test_stage_accounts_for_every_requested_output(tmp_path, tiny_lm):
    # two new tokens: a random byte-level model's longer outputs are mostly invalid UTF-8, and the
    # check on the kept records needs some
    cfg = stage_config(tmp_path, tiny_lm, **{**LOOSE, "max_new_tokens": 2})
    with BeamTestPipeline() as p:
        out = {"seed": p | "Seed" >> beam.Create(SEED), "corpus": p | "Corpus" >> beam.Create(CORPUS),
               "test": p | "Test" >> beam.Create([])} | GenerateExamples(
            cfg.generation, LABELS, None, generator_handler(cfg, tiny_lm))
        refs = ([out["records"] | "RecRefs" >> beam.Map(lambda r: r.input_ref),
                 out["rejected"] | "RejRefs" >> beam.Map(lambda r: r["input_ref"])]
                | beam.Flatten())
        assert_that(refs, equal_to([f"generated:{l}:{i}:{j}" for l in LABELS for i in range(2)
                                    for j in range(2)]))

        def all_generated(rows):  # a matcher must raise: assert_that ignores what it returns
            assert rows and all(r == ("generated", True) for r in rows), rows
        assert_that(out["records"] | beam.Map(lambda r: (r.source, r.intended_label in LABELS)),
                    all_generated, label="Generated")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_job_with_generation_reconciles_and_carries_intended_label(tmp_path, tiny_lm):
    cfg = parse_config({
        "dataset": "toy", "output_root": str(tmp_path / "out"), "task": {"labels": LABELS},
        "corpus": {
            "unlabeled": {"path": write_jsonl(tmp_path / "u.jsonl", [{"text": r.text} for r in CORPUS])},
            "seed": {"path": write_jsonl(tmp_path / "s.jsonl", [{"text": r.text, "label": r.gold_label}
                                                                for r in SEED]), "label_field": "label"},
            "test": {"path": write_jsonl(tmp_path / "t.jsonl", [{"text": LEAK, "label": "positive"}]),
                     "label_field": "label"}},
        "teacher": {"model": tiny_lm, "batch_size": 2, "threads": 1},
        # a random byte-level model writes invalid UTF-8 (bad_chars) more often than not: short outputs
        "generation": {"enabled": True, "per_label": 6, "batch_size": 4, **LOOSE, "max_new_tokens": 2}})
    version = run(cfg, test_pipeline=BeamTestPipeline())
    manifest = json.loads((version / "manifest.json").read_text())
    published = pq.read_table(version / "data")
    rejected = pq.read_table(version / "rejected.parquet")
    filtered = pq.read_table(version / "filtered.parquet")

    counts = manifest["counts"]
    assert counts["read"] == {"corpus": 3, "generated": 12, "seed": 3}
    assert counts["totals"]["read"] == published.num_rows + rejected.num_rows + filtered.num_rows
    assert published.schema.equals(scored_schema(["intended_label"]), check_metadata=False)
    assert filtered.schema.equals(filtered_schema(["intended_label"]), check_metadata=False)
    assert manifest["models"]["generator"]["sha256"] == manifest["models"]["teacher"]["sha256"]

    rows = published.to_pylist()
    generated = [r for r in rows if r["source"] == "generated"]
    assert generated, "the loose filters should let some random outputs through"
    assert all(r["intended_label"] in LABELS and r["gold_label"] is None and r["label"] == r["teacher_label"]
               for r in generated)
    assert all(r["intended_label"] is None for r in rows if r["source"] != "generated")
    gen_rejected = [r for r in rejected.to_pylist() if r["source"] == "generated"]
    assert gen_rejected and all(r["input_ref"].startswith("generated:") for r in gen_rejected)
    assert {r["reason"] for r in gen_rejected} <= {"bad_chars", "empty_output", "no_text", "label_only"}


@pytest.mark.slow
def test_smollm2_writes_a_handful_of_examples(tmp_path):
    from potstill.models.registry import resolve_model

    path = resolve_model("smollm2-135m-instruct").path
    cfg = stage_config(tmp_path, path, per_label=2, outputs_per_prompt=1, batch_size=4,
                       max_new_tokens=48, drop_truncated=False, example_source="both",
                       prompt="Write one new short movie review whose sentiment is {label}. "
                              "Reply with the review only.")
    with BeamTestPipeline() as p:
        out = {"seed": p | "Seed" >> beam.Create(SEED), "corpus": p | "Corpus" >> beam.Create(CORPUS)} \
            | GenerateExamples(cfg.generation, LABELS, "Is this review negative or positive?",
                               generator_handler(cfg, path))
        texts = out["records"] | "Texts" >> beam.Map(lambda r: r.text)
        everything = ((out["records"] | "N1" >> beam.Map(lambda _: 1),
                       out["rejected"] | "N2" >> beam.Map(lambda _: 1)) | beam.Flatten()
                      | "CountAll" >> beam.combiners.Count.Globally())
        assert_that(everything, equal_to([4]), label="AllAccounted")

        def real_text(ts):  # a real instruct model writes words: some of four survive the filters
            assert len(ts) >= 1, "no generated row survived the filters"
            assert all(len(t) >= 10 and sum(c.isalpha() for c in t) > len(t) / 2 for t in ts), ts

        assert_that(texts, real_text, label="RealText")
