"""Everything about models, importable and testable without Beam (installed as `potstill.models`).

Rooms, lowest first; a room imports its own floor and those below, never one above:

- here: `registry` (packaged and local models, pinned checksums), `loading` (weights once per
  process; `int8` quantises a decoder's linear layers), `embed` and `embed_cache` (sentence
  embeddings), `metrics`, `tiny` (tiny random models for tests, benchmarks and smoke runs);
- `generation/`: label-conditioned generation and the quality filters for generated text;
- `teacher/`: the teacher setup and every backend that serves it (transformers, int8, vLLM,
  OpenAI-compatible endpoints), prompts, demonstrations, calibration, store requests;
- `quality/` and `saliency/` (side by side, neither imports the other): the setup search, the
  audit, the gate, the gold rows' classifier (trust, and the fallback teacher); attribution and faithfulness;
- `student/`: the student, its trainer, the frozen-encoder head, LLKD selection, signals, export.

May import the library (`potstill.config`, `potstill.rows`, `potstill.store`, ...), never
`potstill.transforms` or `potstill.beam_pipelines`.
"""
