import pytest

from potstill.config.core import ConfigError, apply_overrides, load_config, parse_config

BASE = {"dataset": "d", "task": {"labels": ["a", "b"]},
        "corpus": {"unlabeled": {"path": "u.jsonl"}}}


def test_minimal_config_gets_defaults():
    cfg = parse_config(BASE)
    assert cfg.teacher.model == "qwen2.5-0.5b-instruct" and cfg.curation.min_confidence == 0.0


def test_unknown_key_is_named_with_its_path():
    raw = {**BASE, "teacher": {"modle": "x"}}
    with pytest.raises(ConfigError, match=r"teacher\.modle: unknown key"):
        parse_config(raw)


def test_missing_key_is_named_with_its_path():
    raw = {**BASE, "corpus": {"unlabeled": {"path": "u"}, "seed": {"text_field": "t"}}}
    with pytest.raises(ConfigError, match=r"corpus\.seed\.path"):
        parse_config(raw)


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "with space"])
def test_dataset_names_are_validated(name):
    with pytest.raises(ConfigError, match="dataset"):
        parse_config({**BASE, "dataset": name})


def test_vllm_backend_settings_are_validated():
    cfg = parse_config({**BASE, "teacher": {"backend": "vllm", "vllm": {"dtype": "bfloat16",
                                                                        "tensor_parallel_size": 2}}})
    assert cfg.teacher.vllm.dtype == "bfloat16" and cfg.teacher.vllm.in_process
    assert cfg.digest() != parse_config(BASE).digest()
    with pytest.raises(ConfigError, match=r"teacher\.vllm\.kv_cach: unknown key"):
        parse_config({**BASE, "teacher": {"vllm": {"kv_cach": 1}}})
    with pytest.raises(ConfigError, match=r"teacher\.backend"):
        parse_config({**BASE, "teacher": {"backend": "onnx"}})


def test_labels_must_be_distinct():
    with pytest.raises(ConfigError, match="task.labels"):
        parse_config({**BASE, "task": {"labels": ["a", "a"]}})


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\ntask: {labels: [a, b]}\ncorpus: {unlabeled: {path: data/u.jsonl}}\n")
    cfg = load_config(path, ["curation.min_confidence=0.7", "curation.max_per_label=null"])
    assert cfg.curation.min_confidence == 0.7 and cfg.curation.max_per_label is None
    assert cfg.corpus.unlabeled.path == str(tmp_path / "data" / "u.jsonl")
    with pytest.raises(ConfigError, match="curation.min_confidence"):
        load_config(path, ["curation.min_confidence=2"])
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["novalue"])


def test_digest_ignores_output_root_only():
    a = parse_config({**BASE, "output_root": "/x"})
    b = parse_config({**BASE, "output_root": "/y"})
    c = parse_config({**BASE, "curation": {"min_confidence": 0.5}})
    assert a.digest() == b.digest() != c.digest()


def test_generation_is_refused_for_multiple_choice():
    raw = {**BASE, "task": {"kind": "multiple_choice", "labels": ["A", "B"]},
           "corpus": {"unlabeled": {"path": "u.jsonl", "choices_field": "choices"}},
           "generation": {"enabled": True, "example_source": "unlabeled"}}
    with pytest.raises(ConfigError, match="not supported with task.kind multiple_choice"):
        parse_config(raw)


def test_default_output_root_shadows_no_importable_package(monkeypatch):
    # `./datasets` made `import datasets` (Hugging Face) pick up the output folder as a
    # namespace package; a name with a hyphen can never be imported.
    from pathlib import Path

    from potstill.reports.analysis import ROOT_ENV, default_root

    monkeypatch.delenv(ROOT_ENV, raising=False)
    for root in (parse_config(BASE).output_root, default_root()):
        assert not Path(root).name.isidentifier(), root
    for cfg in Path(__file__).resolve().parents[2].glob("configs/*.yaml"):
        import yaml

        assert not Path(yaml.safe_load(cfg.read_text())["output_root"]).name.isidentifier(), cfg


def test_digest_with_signals_holds_only_the_student_settings_the_warm_up_student_reads():
    signals = {**BASE, "signals": {"enabled": True},
               "corpus": {"unlabeled": {"path": "u.jsonl"}, "seed": {"path": "s.jsonl", "label_field": "label"}}}
    base = parse_config(signals).digest()
    for training_only in ({"recipe": "kd"}, {"encoder": "frozen"}, {"trust_pooling": "ratio"},
                          {"seed": 7}, {"threads": 1}):
        assert parse_config({**signals, "student": training_only}).digest() == base, training_only
    for warm_up in ({"epochs": 9}, {"model": "other"}, {"learning_rate": 1e-3}):
        assert parse_config({**signals, "student": warm_up}).digest() != base, warm_up
    assert parse_config({**BASE, "student": {"epochs": 9}}).digest() == parse_config(BASE).digest()


# -- YAML aliases: bounded expansion ---------------------------------------------------------

BOMB = """dataset: d
output_root: out
task: {labels: [a, b]}
corpus: {unlabeled: {path: u.jsonl}}
teacher:
  vllm:
    engine_args:
      a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


def test_a_yaml_alias_bomb_is_refused_naming_the_file(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert time.monotonic() - started < 5 and len(BOMB) < 700
    message = str(err.value)
    assert str(path) in message and "alias" in message and "expand" in message


@pytest.mark.parametrize("text, what", [
    ("dataset: d\nteacher: {vllm: {engine_args: {x: &x [1, *x]}}}\n", "contains itself"),
    ("dataset: d\nx: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
])
def test_recursive_and_deeply_nested_yaml_is_one_clear_error(tmp_path, text, what):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=what) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_ordinary_anchors_and_aliases_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\ntask: {labels: [a, b]}\n"
                    "corpus:\n  unlabeled: {path: u.jsonl}\n"
                    "  seed: &gold {path: gold.jsonl, label_field: y}\n  test: *gold\n")
    cfg = load_config(path)
    assert cfg.corpus.seed.path == cfg.corpus.test.path == str(tmp_path / "gold.jsonl")


def test_an_alias_bomb_in_an_override_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\ntask: {labels: [a, b]}\ncorpus: {unlabeled: {path: u.jsonl}}\n")
    value = "{a: &a [x, x, x, x, x, x, x, x, x], " + ", ".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(7)) + "}"
    with pytest.raises(ConfigError, match=r"--set teacher\.vllm\.engine_args.*alias"):
        load_config(path, [f"teacher.vllm.engine_args={value}"])


def test_unused_backend_settings_are_not_in_the_digest():
    hf = parse_config(BASE).digest()
    engine = {"vllm": {"engine_args": {"swap_space": 4}, "gpu_memory_utilization": 0.5}}
    assert parse_config({**BASE, "teacher": engine}).digest() == hf
    endpoint = {"endpoint": {"model": "m", "top_logprobs": 5}}
    assert parse_config({**BASE, "teacher": endpoint}).digest() == hf
    vllm = {**BASE, "teacher": {"backend": "vllm"}}
    assert parse_config({**vllm, "teacher": {"backend": "vllm", **engine}}).digest() != \
        parse_config(vllm).digest()
    remote = {"backend": "openai", "endpoint": {"base_url": "http://h:1/v1", "model": "m"}}
    assert parse_config({**BASE, "teacher": {**remote, **{"vllm": engine["vllm"]}}}).digest() == \
        parse_config({**BASE, "teacher": remote}).digest()


def test_the_version_fingerprint_ignores_unused_backend_settings(tmp_path):
    from types import SimpleNamespace

    from potstill import job

    models = {"teacher": SimpleNamespace(name="t", source="s", sha256="0" * 64)}
    plain = parse_config(BASE)
    engine = parse_config({**BASE, "teacher": {"vllm": {"engine_args": {"swap_space": 4}}}})
    assert job.plan(plain, models, {}).fingerprint == job.plan(engine, models, {}).fingerprint


def test_the_cli_refuses_an_alias_bomb_before_anything_runs(tmp_path, capsys):
    from potstill.beam_pipelines.cli import main

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"config {path} is refused" in err and "alias bomb" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _number_fields(model, prefix=""):
    """(dotted key, a bool in the field's shape) for every int or float setting of the config
    tree, nested blocks and lists of numbers included."""
    import types
    import typing

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann, key = field.annotation, f"{prefix}{name}"
        args = typing.get_args(ann)
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            ann = next(a for a in args if a is not type(None))
            args = typing.get_args(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _number_fields(ann, f"{key}.")
        elif ann in (int, float):
            yield key, True
        elif typing.get_origin(ann) is list and args[0] in (int, float):
            yield key, [True]


def _with(raw: dict, dotted: str, value) -> dict:
    import copy

    raw = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = raw
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value
    return raw


NUMBER_FIELDS = sorted(_number_fields(__import__("potstill.config.core", fromlist=["Config"]).Config))


def test_every_number_setting_is_found():
    keys = [k for k, _ in NUMBER_FIELDS]
    assert len(keys) > 60 and "teacher.batch_size" in keys and "curation.min_confidence" in keys
    assert "audit.search.few_shot_k" in keys and "teacher.endpoint.price_per_million.prompt" in keys


@pytest.mark.parametrize("key,value", NUMBER_FIELDS, ids=[k for k, _ in NUMBER_FIELDS])
def test_a_boolean_for_a_number_setting_is_refused_naming_the_key(key, value):
    """pydantic's lax mode reads `true` as 1 (and 1.0): `teacher.batch_size: true` ran with
    batches of one. Every int and float setting refuses a boolean, naming its key."""
    raw = _with(BASE, key, value)
    if key.startswith("teacher.endpoint.price_per_million."):
        raw = _with(_with(raw, "teacher.endpoint.price_per_million.prompt", 1.0),
                    "teacher.endpoint.price_per_million.completion", 1.0)
        raw = _with(raw, key, value)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert f"  {key}" in str(err.value)


def test_teacher_batch_size_true_is_refused_from_yaml_and_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\ntask: {labels: [a, b]}\ncorpus: {unlabeled: {path: u.jsonl}}\n"
                    "teacher: {batch_size: true}\n")
    for args in ((path,), (path, ["teacher.batch_size=yes"])):
        with pytest.raises(ConfigError, match=r"teacher\.batch_size: .*a number is expected, not "
                                              r"true \(a boolean\)"):
            load_config(*args)
    assert load_config(path, ["teacher.batch_size=4"]).teacher.batch_size == 4


def test_numbers_that_are_no_booleans_still_load(tmp_path):
    """Only booleans are refused: PyYAML reads 1e-4 as a string, an int is a float."""
    path = tmp_path / "c.yaml"
    path.write_text("dataset: d\ntask: {labels: [a, b]}\ncorpus: {unlabeled: {path: u.jsonl}}\n"
                    "student: {learning_rate: 1e-4, head_c: [1, 0.5]}\ncuration: {min_confidence: 1}\n"
                    "signals: {enabled: false}\naudit: {search: {enabled: true}}\n")
    cfg = load_config(path, ["student.learning_rate=5e-5"])
    assert cfg.student.learning_rate == 5e-5 and cfg.student.head_c == [1.0, 0.5]
    assert cfg.curation.min_confidence == 1.0 and cfg.signals.enabled is False
    with pytest.raises(ConfigError, match=r"audit\.search\.few_shot_k: .*not \[0, true\]"):
        load_config(path, ["audit.search.few_shot_k=[0, true]"])


def test_digest_ignores_how_the_teacher_store_is_looked_up():
    """teacher.store_lookup_answers picks a lookup in memory or a join: the same data either
    way (tests/beam_pipelines/test_teacher_store.py), so a version is not made again for it."""
    teacher = dict(BASE.get("teacher", {}))
    a = parse_config({**BASE, "teacher": {**teacher, "store_lookup_answers": 0}})
    b = parse_config({**BASE, "teacher": {**teacher, "store_lookup_answers": 10}})
    c = parse_config({**BASE, "teacher": {**teacher, "max_input_tokens": 64}})
    assert a.digest() == b.digest() == parse_config(BASE).digest() != c.digest()
    with pytest.raises(Exception, match="store_lookup_answers"):
        parse_config({**BASE, "teacher": {**teacher, "store_lookup_answers": -1}})
