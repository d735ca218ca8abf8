"""potstill: knowledge-distillation datasets from unlabeled text, as a Beam batch job.

This is the only import name the package installs. Its floors, lowest first (a module imports
its own floor and the ones below, never one above; tests/test_layers.py checks it):

- the library, in this folder: `config/` (the typed config), `rows/` (reading and validating
  input rows), `store` (the teacher store), `publish/` (the column contract, curation,
  validation, versions), `reports/` (report.html and the read side), `job` (the library side of
  a run), plus `progress` and `memory`;
- `potstill.models` (the card's `models/` folder): everything about models, without Beam;
- `potstill.transforms` (`transforms/`): thin Beam wrappers;
- `potstill.beam_pipelines` (`beam_pipelines/`): the driver and the CLI.

`potstill.sql` (`sql/`) holds the queries. `python -m potstill` is the `potstill` command.

The Python API (docs/python-api.md) is `potstill.init`, `plan`, `run`, `train`, `evaluate` and
`open_version`, with their result types: names this package forwards, on first use, to
`potstill.beam_pipelines.api`, so `import potstill` itself stays cheap (it loads no other
module; tests/test_layers.py checks both).
"""
__version__ = "0.1.0"

API = ("init", "plan", "run", "train", "evaluate", "open_version", "load_config",
       "InitResult", "Plan", "RunResult", "TrainResult", "EvalResult", "Version")
__all__ = list(API)


def __getattr__(name: str):
    if name in API:
        import potstill.beam_pipelines.api as api

        return getattr(api, name)
    raise AttributeError(f"module 'potstill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
