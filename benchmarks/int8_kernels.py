"""int8 kernels for the teacher on this CPU, against float32, in one process on one core: each
GEMM option on one decoder layer's linear layers, then what each does to label scoring.

    python -m benchmarks.int8_kernels [--model qwen2.5-0.5b-instruct] [--rows 32] [--batch 8]
        [--repeats 3] [--agree-rows 500] [--gemm-seconds 1] [--out results.json] [--tiny]

Everything runs with one torch thread and is timed in this process's CPU time (on a shared
machine wall time mostly measures the other jobs; wall-time ratios are printed too). Every
repeat runs each option once, back to back, so that load drifts hit them alike; figures are
medians over the repeats.

- GEMM table: the linear layers of the teacher's middle decoder layer on the inputs they get
  from one real batch (`--batch` reviews; q/k/v and gate/up share their input, as in the model),
  each option from the float32 input to the float32 output, quantisation included, against
  `torch.matmul` in float32 ([M, K] x [K, N]: the op of the throughput benchmark's ceiling).
  Options: float32 `nn.Linear`; bfloat16 (oneDNN; precision for reference only); two int8
  terms per operand (models/int8.py's `Int8Linear`) on each of its kernels, oneDNN's
  `onednn::qlinear_pointwise` (its default where torch has it: AMX where the CPU has it; the
  second product summed into the first's output by a post-op; each distinct input quantised
  once) and `torch._int_mm` (its fallback); one int8 term per operand with either;
  `quantized::linear_dynamic` on each quantised engine (one term,
  activations per tensor). `int8 units`: int8 products of the inner size each option runs.
- Scoring table: `HFTeacher.score_encoded` on `--rows` Rotten Tomatoes reviews (the throughput
  benchmark's rows), batch `--batch`, with the decoder's linear layers as each option (the LM
  head stays float32 throughout), against the ceiling (the float32 GEMM rate on the layer
  shapes, M = batch x mean row tokens, divided by one row's forward FLOPs: as
  benchmarks/throughput.py, in CPU time). `linear layers free` returns zeros from every linear
  layer: what no linear kernel can beat (the rest of the forward: attention, norms, the LM
  head). `labels = fp32` and `max abs dp` (label probabilities) are over `--agree-rows`
  reviews when given (fp32 and the oneDNN options scored once more, untimed), else the timed
  rows.
- The cascade bound: one int8 term for every row, two terms again for the rows whose one-term
  label margin is within the largest one-term error seen on the agreement rows (the least a
  label-safe threshold rescores, no safety margin): its rows/s from the measured rates,
  1 / (1 / one-term + share / two-term). An upper bound on such a scheme here.

`--tiny`: the tiny Llama on the synthetic reviews; the figures mean nothing.
"""
from __future__ import annotations

import copy
import statistics
import sys
import time
import warnings

import numpy as np

from benchmarks.harness import Benchmark, markdown
from benchmarks.throughput import SHORT, corpus_texts, forward_flops, gemm_rate, layer_shapes

_LAST: list = [None]  # (input, version, its one-term quantisation): q/k/v and gate/up share one


def forget() -> None:
    """Drop every kept quantised input (here and models/int8.py's), so each timed run pays its own."""
    from potstill.models.int8 import _INPUTS

    _LAST[0] = _INPUTS.last = None


def activation_terms(x):
    """(per-token scale [M, 1], the int8 first term Q1 [M, K]): models/int8.py's first term. The
    last input's are kept, so that layers fed the same tensor quantise it once."""
    import torch

    version = None if x.is_inference() else x._version
    last = _LAST[0]
    if last is not None and last[0] is x and last[1] == version:
        return last[2]
    flat = x.reshape(-1, x.shape[-1]).float()
    scale = flat.abs().amax(1, keepdim=True).clamp_(min=1e-8).div_(127)
    got = scale, (flat / scale).round_().to(torch.int8)
    _LAST[0] = (x, version, got)
    return got


class _Quantised:
    """What the int8 options share: the float32 bias, the output's shape and its scaling."""

    def __init__(self, linear):
        self.bias = None if linear.bias is None else linear.bias.detach().float()
        self.k, self.n = linear.in_features, linear.out_features

    def finish(self, out, scale, x):
        import torch

        out = out.mul_(scale) if self.bias is None else torch.addcmul(self.bias, out, scale)
        return out.reshape(*x.shape[:-1], self.n)


class OneDNNOneTerm(_Quantised):
    """models/int8.py's first term alone on oneDNN's int8 matmul: per-channel weight scales
    inside the kernel, the per-token scale and bias after."""

    def __init__(self, linear):
        import torch

        from potstill.models.int8 import _split

        super().__init__(linear)
        scale, first, _ = _split(linear.weight.detach().float())
        self.main = torch.ops.onednn.qlinear_prepack(first, None)
        self.scale = scale.squeeze(1).contiguous()
        self.zero = torch.zeros(self.n, dtype=torch.long)

    def __call__(self, x):
        import torch

        scale, q = activation_terms(x)
        out = torch.ops.onednn.qlinear_pointwise(q, 1.0, 0, self.main, self.scale, self.zero,
                                                 None, 1.0, 0, torch.float32, "none", [], "")
        return self.finish(out, scale, x)


class IntMMOneTerm(_Quantised):
    """One int8 term per operand with `torch._int_mm` (the scheme models/int8.py had before)."""

    def __init__(self, linear):
        from potstill.models.int8 import _split

        super().__init__(linear)
        scale, first, _ = _split(linear.weight.detach().float())
        self.weight_t, self.scale = first.t().contiguous(), scale.squeeze(1)

    def __call__(self, x):
        import torch

        scale, q = activation_terms(x)
        return self.finish(torch._int_mm(q, self.weight_t).float().mul_(self.scale), scale, x)


class DynamicLinear:
    """`quantized::linear_dynamic` on one engine: weights int8 per output channel, activations
    quantised per tensor inside the op."""

    def __init__(self, linear, engine: str):
        import torch

        self.engine, self.n = engine, linear.out_features
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(1).clamp_(min=1e-8) / 127
        with warnings.catch_warnings():  # quantised tensors are deprecated; the op still runs
            warnings.simplefilter("ignore")
            torch.backends.quantized.engine = engine
            q = torch.quantize_per_channel(weight, scale, torch.zeros(self.n, dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, linear.bias)

    def __call__(self, x):
        import torch

        torch.backends.quantized.engine = self.engine
        out = torch.ops.quantized.linear_dynamic(x.reshape(-1, x.shape[-1]), self.packed)
        return out.reshape(*x.shape[:-1], self.n)


class BF16Linear:
    def __init__(self, linear):
        self.linear = copy.deepcopy(linear).bfloat16()

    def __call__(self, x):
        return self.linear(x.bfloat16()).float()


class FreeLinear:
    """Zeros of the output's shape: the forward without the cost of its linear layers."""

    def __init__(self, linear):
        self.n = linear.out_features

    def __call__(self, x):
        import torch

        return torch.zeros(*x.shape[:-1], self.n)


def options(scoring: bool) -> dict:
    """name -> (int8 units, a function of a float32 nn.Linear giving a callable layer)."""
    import torch

    from potstill.models.int8 import Int8Linear, default_kernel

    got = {"fp32 nn.Linear": (None, lambda lin: lin),
           "int8x2 torch._int_mm (models/int8.py fallback)": (3, lambda lin: Int8Linear(lin, "int_mm"))}
    if default_kernel() == "onednn":
        got["int8x2 oneDNN qlinear"] = (3, lambda lin: Int8Linear(lin, "onednn"))
        got["int8x1 oneDNN qlinear"] = (1, OneDNNOneTerm)
    if scoring:
        return {**got, "linear layers free": (0, FreeLinear)}
    got["int8x1 torch._int_mm"] = (1, IntMMOneTerm)
    for engine in ("fbgemm", "x86", "onednn"):
        if engine in torch.backends.quantized.supported_engines:
            got[f"int8x1 linear_dynamic ({engine})"] = (1, lambda lin, e=engine: DynamicLinear(lin, e))
    got["bf16 nn.Linear"] = (None, BF16Linear)
    return got


def swap_linear(module, make):
    """Every torch.nn.Linear under `module` replaced by make(linear), in place."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x)

    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            layer = make(child)
            setattr(module, name, layer if isinstance(layer, torch.nn.Module) else Wrapped(layer))
        else:
            swap_linear(child, make)
    return module


def timed(runs: dict, repeats: int, inner: int = 1, progress=None) -> dict:
    """name -> [(CPU seconds, wall seconds) per repeat] of `inner` calls, options interleaved."""
    out = {name: [] for name in runs}
    for rep in range(repeats):
        for name, run in runs.items():
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(inner):
                run()
            out[name].append(((time.process_time() - cpu) / inner, (time.perf_counter() - wall) / inner))
            if progress:
                progress({"repeat": rep + 1, "option": name, "cpu_s": out[name][-1][0], "wall_s": out[name][-1][1]})
    return out


def gemm_table(teacher, encoded, args, progress=None) -> tuple[list[dict], int]:
    """The middle decoder layer's linear layers on the inputs of one real batch (the `--batch`
    rows around the median length), every option; and M."""
    import torch

    from potstill.models.int8 import _INPUTS

    layer = teacher.model.model.layers[len(teacher.model.model.layers) // 2]
    linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    teacher.shared_cache("prefix")  # computed before the hooks: they keep the batch's own inputs
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0])) for m in linears]
    ordered = sorted(encoded, key=lambda e: len(e.ids))
    start = max(0, len(ordered) // 2 - args.batch // 2)
    teacher.score_encoded(ordered[start: start + args.batch])
    for h in hooks:
        h.remove()
    xs = [inputs[m] for m in linears]
    m_rows = xs[0].reshape(-1, xs[0].shape[-1]).shape[0]
    flat = [x.reshape(-1, x.shape[-1]) for x in xs]
    weights_t = [lin.weight.detach().t().contiguous() for lin in linears]
    engine = torch.backends.quantized.engine  # DynamicLinear sets its own per call
    with torch.inference_mode():
        exact = [lin(x) for lin, x in zip(linears, xs)]
        layers = {name: (units, [make(lin) for lin in linears]) for name, (units, make) in options(False).items()}
        runs = {"fp32 torch.matmul (ceiling op)": lambda: [torch.matmul(x, w) for x, w in zip(flat, weights_t)]}
        runs.update({name: (lambda ls=ls: (forget(), [f(x) for f, x in zip(ls, xs)]))
                     for name, (_, ls) in layers.items()})
        runs["two-term quantisation alone"] = lambda: (forget(), [_INPUTS.terms(x, x.shape[-1]) for x in xs])
        errors = {name: max(float((f(x) - y).abs().max() / y.abs().max()) for f, x, y in zip(ls, xs, exact))
                  for name, (_, ls) in layers.items()}
        forget()
        for run in runs.values():
            run()
        times = timed(runs, args.repeats * 3, inner=2, progress=progress)
    torch.backends.quantized.engine = engine
    base = statistics.median(c for c, _ in times["fp32 torch.matmul (ceiling op)"])
    flops = sum(2 * m_rows * lin.in_features * lin.out_features for lin in linears)
    rows = []
    for name, got in times.items():
        cpu = statistics.median(c for c, _ in got)
        rows.append({"option": name, "int8_units": layers.get(name, (None,))[0], "ms_per_layer": 1e3 * cpu,
                     "gflops": flops / cpu / 1e9, "x_ceiling_op": base / cpu,
                     "max_rel_error": errors.get(name, 0.0 if name.startswith("fp32") else None)})
    forget()
    return rows, m_rows


def label_gap(probs, ref) -> tuple[float, float]:
    return float((probs.argmax(1) == ref.argmax(1)).mean()), float(np.abs(probs - ref).max())


def cascade_share(one, exact) -> tuple[float, float]:
    """(the largest one-term error of a label margin, the share of rows whose one-term margin
    is within it): label log-probs [n, L] of the one-term and float32 scorers."""
    top = one.argmax(1)
    rows = np.arange(len(one))
    delta = one - exact
    error = float(np.abs(delta - delta[rows, top][:, None]).max())
    margin = np.sort(one, axis=1)[:, -1] - np.sort(one, axis=1)[:, -2]
    return error, float((margin <= error).mean())


def main(argv: list[str] | None = None) -> int:
    bench = Benchmark("int8_kernels", __doc__, repeats=3, tiny={
        "model": lambda ws: ws.teacher, "rows": 8, "batch": 4, "repeats": 1, "agree_rows": 0,
        "gemm_seconds": 0.05})
    parser = bench.parser
    parser.add_argument("--model", default="qwen2.5-0.5b-instruct", help="packaged name or HF folder")
    parser.add_argument("--rows", type=int, default=32, help="reviews timed per repeat")
    parser.add_argument("--batch", type=int, default=8, help="teacher.batch_size")
    parser.add_argument("--agree-rows", type=int, default=0,
                        help="labels = fp32 over this many reviews (fp32 and the oneDNN options, untimed)")
    parser.add_argument("--gemm-seconds", type=float, default=1.0, help="CPU time per ceiling GEMM rate")
    args = bench.parse(argv)

    import torch

    from potstill.models.registry import resolve_model
    from potstill.models.teacher.hf import HFTeacher, normalise

    torch.set_num_threads(1)
    path = resolve_model(args.model).path
    reviews = args.workspace.texts() if args.workspace else corpus_texts("rt")
    fp32 = HFTeacher(path, *SHORT, batch_size=args.batch, threads=1)
    encoded = [fp32.encode(t) for t in reviews[: max(args.rows, args.agree_rows)]]
    timed_rows = encoded[: args.rows]
    gemm_rows, m_batch = gemm_table(fp32, timed_rows, args, bench.progress)

    teachers = {"fp32 nn.Linear": fp32}
    for name, (_, make) in list(options(True).items())[1:]:
        teacher = copy.copy(fp32)
        teacher.model, teacher._caches = copy.deepcopy(fp32.model), {}
        swap_linear(teacher.model.base_model, make)
        teachers[name] = teacher
    own = statistics.mean(len(e.ids) for e in timed_rows)
    config = fp32.model.config
    flops = forward_flops(config, own, len(fp32.prefix_ids))
    shapes, m_rows = layer_shapes(config), max(1, round(args.batch * own))

    def ceiling(clock):
        return gemm_rate(shapes, m_rows, "float32", args.gemm_seconds, clock) / flops

    scores = {}

    def score(name, rows):
        forget()
        got = teachers[name].label_scores(torch.from_numpy(teachers[name].score_encoded(rows))).numpy()
        forget()
        return got

    for name in teachers:
        score(name, timed_rows[: args.batch])  # warm-up: first-call allocations, kernels
    ceil_cpu, ceil_wall = [], []
    runs = {"ceiling": lambda: (ceil_cpu.append(ceiling(time.process_time)),
                                ceil_wall.append(ceiling(time.perf_counter))),
            **{name: (lambda n=name: scores.__setitem__(n, score(n, timed_rows))) for name in teachers}}
    times = timed(runs, args.repeats, progress=bench.progress)
    agree_rows = encoded[: args.agree_rows] if args.agree_rows else timed_rows
    agreed = {name: score(name, agree_rows) for name in teachers
              if args.agree_rows and (name == "fp32 nn.Linear" or "oneDNN" in name)} or dict(scores)
    c_cpu, c_wall = statistics.median(ceil_cpu), statistics.median(ceil_wall)
    rows = []
    for name in teachers:
        cpu = [len(timed_rows) / c for c, _ in times[name]]
        wall = [len(timed_rows) / w for _, w in times[name]]
        got, ref = (agreed, agreed) if name in agreed else (scores, scores)
        agree, gap = (None, None) if name == "linear layers free" else label_gap(
            normalise(got[name]), normalise(ref["fp32 nn.Linear"]))
        rows.append({"backend": name, "rows_per_s_cpu": statistics.median(cpu),
                     "x_ceiling": statistics.median(cpu) / c_cpu, "x_ceiling_wall": statistics.median(wall) / c_wall,
                     "labels_equal_fp32": agree, "max_abs_dp": gap,
                     "agree_rows": None if agree is None else len(got[name])})
    rows.append({"backend": "ceiling-float32 (GEMM rate / forward FLOPs)", "rows_per_s_cpu": c_cpu,
                 "x_ceiling": 1.0, "x_ceiling_wall": 1.0})
    notes = []
    by = {r["backend"]: r for r in rows}
    if "int8x1 oneDNN qlinear" in agreed:
        error, share = cascade_share(agreed["int8x1 oneDNN qlinear"], agreed["fp32 nn.Linear"])
        one, two = by["int8x1 oneDNN qlinear"]["rows_per_s_cpu"], by["int8x2 oneDNN qlinear"]["rows_per_s_cpu"]
        bound = 1 / (1 / one + share / two)
        rows.append({"backend": f"cascade bound: int8x1, then int8x2 on {share:.1%} of rows",
                     "rows_per_s_cpu": bound, "x_ceiling": bound / c_cpu, "cascade_share": share,
                     "cascade_error": error})
        notes.append(f"cascade: the largest one-term error of a label margin on {len(agree_rows)} rows is {error:.3f} "
                     f"(log-prob); {share:.1%} of the rows have a one-term margin within it")
    gemm_columns = {"option": "option", "int8 units": "int8_units", "ms per layer (CPU)": "ms_per_layer:.2f",
                    "GFLOP/s": "gflops:.0f", "x fp32 ceiling op": "x_ceiling_op:.2f",
                    "max rel error": "max_rel_error:.1e"}
    notes = [f"GEMM options, decoder layer {len(fp32.model.model.layers) // 2}, M = {m_batch} tokens, "
             f"medians of {args.repeats * 3}:", "", markdown(gemm_rows, gemm_columns), "", *notes]
    return bench.report(rows, {
        "backend": "backend", "rows/s (CPU)": "rows_per_s_cpu:.2f", "x fp32 ceiling": "x_ceiling:.2f",
        "x fp32 ceiling (wall)": "x_ceiling_wall:.2f", "labels = fp32": "labels_equal_fp32:.1%",
        "max abs dp": "max_abs_dp:.1e", "agreement rows": "agree_rows"},
        title=f"model {args.model}, 1 thread, batch {args.batch}, {len(timed_rows)} rows ({own:.0f} row tokens, "
              f"{len(fp32.prefix_ids)} cached prefix tokens), medians of {args.repeats} repeats, CPU time",
        notes=notes, gemm=gemm_rows, gemm_m=m_batch, rows_timed=len(timed_rows), agreement_rows=len(agree_rows),
        cpu_capability=torch.backends.cpu.get_cpu_capability())


if __name__ == "__main__":
    sys.exit(main())
