"""The teacher: what it is asked and who answers.

`teacher_setup` builds the one immutable `TeacherSetup` every stage shares; `backends` picks the
backend for a role: `hf` (transformers; `potstill.models.int8` quantises it), `vllm_backend` (vLLM in process;
`vllm_server` runs `vllm serve` locally), `remote` (OpenAI-compatible endpoints over
`remote_http`, checked by `remote_endpoint`). `prompts`, `demos` and `calibration` decide what the
teacher reads and how its answer is adjusted; `requests` turns rows into store requests.

May import `potstill.models` (ground floor), `potstill.models.generation` and the library.
"""
