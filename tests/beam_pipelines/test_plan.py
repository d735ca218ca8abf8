"""`potstill plan` counts what the run that follows does: rows, teacher calls, prompt tokens."""
import json

import pyarrow.parquet as pq
import yaml
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from potstill.beam_pipelines.cli import main
from potstill.beam_pipelines.pipeline import run
from potstill.beam_pipelines.plan import make_plan
from potstill.config.core import parse_config
from test_pipeline import config  # noqa: F401 - the fixture: a tiny teacher, hostile rows


def _rows_by(table, column):
    out = {}
    for v in table[column].to_pylist():
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def test_plan_counts_equal_the_run_and_the_store_hits_after_it(config):  # noqa: F811
    p = make_plan(config, sample=2)
    assert p["existing_version"] is None and p["cost"] is None
    assert p["estimate"]["sample_rows"] == 2 and p["estimate"]["seconds"] > 0
    assert "Is" in p["prompt"] or p["prompt"]  # one rendered prompt

    version = run(config, test_pipeline=BeamTestPipeline())
    m = json.loads((version / "manifest.json").read_text())
    usage = m["teacher_usage"]
    assert p["teacher"]["calls"] == usage["calls"]
    assert p["teacher"]["store_hits"] == usage["cache_hits"]  # the audit's answers, reused
    assert p["teacher"]["prompt_tokens"] == usage["prompt_tokens"]
    assert p["audit"]["calls"] == m["teacher_audit"]["teacher_usage"]["calls"] > 0
    rejected = pq.read_table(version / "rejected.parquet")
    planned_rejected = {}
    for split in ("corpus", "seed"):  # test rows are read for the leak guard, never published
        for reason, n in p["rows"][split]["rejected"].items():
            planned_rejected[reason] = planned_rejected.get(reason, 0) + n
    assert dict(sorted(planned_rejected.items())) == _rows_by(rejected, "reason")
    filtered = pq.read_table(version / "filtered.parquet")
    assert p["rows"]["filtered"] == {k: v for k, v in _rows_by(filtered, "filter_reason").items()
                                     if k in ("duplicate", "test_overlap")}
    assert p["rows"]["unique"]["seed"] + p["rows"]["unique"]["corpus"] == usage["rows"]
    assert p["teacher"]["calls"] + p["teacher"]["store_hits"] == usage["rows"]

    # After the run every answer is stored: a plan for a changed curation needs no teacher call.
    again = make_plan(parse_config({**config.model_dump(mode="json"),
                                    "curation": {"min_confidence": 0.3}}), sample=0)
    assert again["teacher"]["calls"] == 0 and again["teacher"]["store_hits"] == usage["rows"]
    assert again["audit"]["calls"] == 0
    assert make_plan(config, sample=0)["existing_version"] == str(version)


def test_plan_cli_writes_json_and_run_refuses_over_the_cap(config, tmp_path, capsys):  # noqa: F811
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["plan", str(cfg_file), "--sample", "0", "--out", str(tmp_path / "plan.json")]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out.strip().splitlines()[-1])
    assert json.loads((tmp_path / "plan.json").read_text()) == printed
    assert "teacher" in err and "calls" in err
    need = printed["teacher"]["calls"] + printed["audit"]["calls"]
    assert main(["run", str(cfg_file), "--max-teacher-calls", str(need - 1)]) == 2
    assert "over --max-teacher-calls" in capsys.readouterr().err
    assert not (tmp_path / "out" / "toy" / "v1").exists()


def test_plan_counts_the_setup_search_s_requests(config):  # noqa: F811
    """With enough gold rows the audit searches teacher setups (models/quality/tuning.py): one prompt pass
    per (style, k) over the seed rows and content-free inputs. The plan counts every one of them."""
    given = config.model_dump(mode="json", exclude_unset=True)  # set values are never searched
    audit = {"min_seed_rows": 2, "folds": 2, "on_weak_teacher": "continue", "compare_gold": False}
    searched = parse_config({**given, "audit": {**audit, "search": {"few_shot_k": [0, 1]}}})
    configured_only = make_plan(parse_config({**given, "audit": {**audit, "search": {"enabled": False}}}),
                                sample=0)
    p = make_plan(searched, sample=0)
    version = run(searched, test_pipeline=BeamTestPipeline())
    m = json.loads((version / "manifest.json").read_text())
    assert m["teacher_audit"]["search"]["candidates"]  # the search ran
    assert p["audit"]["calls"] == m["teacher_audit"]["teacher_usage"]["calls"]
    assert p["audit"]["calls"] > configured_only["audit"]["calls"] > 0
    assert make_plan(searched, sample=0)["audit"]["calls"] == 0  # all stored now


def test_plan_warns_about_a_small_gold_set_near_miss_labels_and_nothing_to_distil(tmp_path, tiny_lm,
                                                                                  caplog):
    seed = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"},
            {"text": "meh", "label": " Positive"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seed))
    (tmp_path / "u.jsonl").write_text('{"text": "good"}\n{"text": "bad"}\n')  # copies of gold rows
    cfg = parse_config({"dataset": "toy", "output_root": str(tmp_path / "out"),
                        "task": {"labels": ["negative", "positive"]},
                        "corpus": {"unlabeled": {"path": str(tmp_path / "u.jsonl")},
                                   "seed": {"path": str(tmp_path / "s.jsonl")}},
                        "teacher": {"model": tiny_lm}})
    with caplog.at_level("WARNING"):
        warnings = make_plan(cfg, sample=0)["warnings"]
    assert any("only 2 valid gold seed rows (< audit.min_seed_rows=10)" in w for w in warnings)
    assert any("did you mean 'positive'?" in w and "s.jsonl:3" in w for w in warnings)
    assert any("no corpus rows to distil" in w for w in warnings)
    assert all(w in caplog.text for w in warnings)


def test_plan_prices_the_pool_under_every_k_the_search_may_choose(config, capsys):  # noqa: F811
    """Demonstrations ride in every pool row's prompt: the plan shows what each k the setup
    search may choose costs over the pool's calls, the configured k counted exactly."""
    from potstill.beam_pipelines.plan import format_plan

    given = config.model_dump(mode="json", exclude_unset=True)
    audit = {"min_seed_rows": 2, "folds": 2, "on_weak_teacher": "continue", "compare_gold": False}
    p = make_plan(parse_config({**given, "audit": {**audit, "search": {"few_shot_k": [0, 2]}}}), sample=0)
    by_k = {c["k"]: c for c in p["teacher"]["pool_cost_by_setup"]}
    assert set(by_k) == {0, 2}
    assert by_k[2]["tokens_per_row"] > by_k[0]["tokens_per_row"] > 0
    pool_only = make_plan(parse_config({**given, "audit": {**audit, "search": {"enabled": False}},
                                        "corpus": {**given["corpus"], "seed": None}}), sample=0)
    assert pool_only["rows"]["unique"]["corpus"] == p["rows"]["unique"]["corpus"] <= 64
    assert by_k[0]["prompt_tokens"] == pool_only["teacher"]["prompt_tokens"]
    assert "k=2" in format_plan(p) and "pool prompt tokens" in format_plan(p)
    # no search (too few gold rows for it): the configured k only
    small = make_plan(parse_config({**given, "audit": {**audit, "min_seed_rows": 1000}}), sample=0)
    assert [c["k"] for c in small["teacher"]["pool_cost_by_setup"]] == [config.teacher.few_shot.k]


def test_plan_tells_answers_in_the_store_from_gold_rows_the_audit_answers_first(config):  # noqa: F811
    """No store yet: the seed rows' answers come from the audit's own calls (too few gold rows
    for the search, so it sends the configured prompt), not from a store; after the run every
    answer is in the store."""
    from potstill.beam_pipelines.plan import format_plan

    p = make_plan(config, sample=0)
    t = p["teacher"]
    assert t["stored"] == 0 and t["from_audit"] == p["rows"]["unique"]["seed"] > 0
    assert t["store_hits"] == t["stored"] + t["from_audit"]
    text = format_plan(p)
    assert f"0 answers already in the store, {t['from_audit']} gold rows answered by the audit first" in text
    assert f"audit: {p['audit']['calls']} calls (0 already in the store)" in text

    run(config, test_pipeline=BeamTestPipeline())
    again = make_plan(parse_config({**config.model_dump(mode="json"),
                                    "curation": {"min_confidence": 0.3}}), sample=0)["teacher"]
    assert again["stored"] == again["store_hits"] == t["calls"] + t["store_hits"]
    assert again["from_audit"] == 0
