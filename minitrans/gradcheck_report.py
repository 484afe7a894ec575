"""Float64 gradient checks over every differentiable op and every ``nn`` layer, or over your own.

    python -m minitrans.gradcheck_report                      # the whole library on cpu
    python -m minitrans.gradcheck_report --device cuda        # ... on the GPU (or Numba's simulator)
    python -m minitrans.gradcheck_report --fast               # random projections vᵀJu instead of full Jacobians
    python -m minitrans.gradcheck_report --only Linear        # cases whose name contains "Linear"
    python -m minitrans.gradcheck_report --target mypkg.layers:MyLayer --shape 2,5,8

Each case runs on several input layouts: plain, broadcast, length 1, and non-contiguous
(an input stored transposed and handed to the op as a permuted view). Layers are checked
with respect to their input and every parameter. The table gives, per case and layout, the
largest absolute and relative error between the analytic gradient and float64 central
differences; the exit code is 1 when any check fails, so the command can guard a CI job.

A failure names the case, the input (or parameter) and the element; for a ``--target`` it
also reruns each op the target called on its own, so the op with the wrong backward is named.

Coverage: every ``Function`` subclass in minitrans and every layer in ``minitrans.nn`` must
have a case in ``minitrans/gradcheck_cases.py`` or an entry in its ``EXCLUDED`` with the
reason (``missing()`` lists the rest; a test asserts it is empty), and each case must
actually reach the op it claims to cover.
"""
from __future__ import annotations

import argparse
import importlib
import math
import pkgutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

import minitrans as mt
from minitrans.autograd.function import Function
from minitrans.autograd.gradcheck import check_gradients
from minitrans.gradcheck_cases import EXCLUDED, Case, cases
from minitrans.gradcheck_inputs import In, leaf, view, view_element
from minitrans.device import unusable_reason
from minitrans.tensor import Tensor


# --------------------------------------------------------------------------- coverage
def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def discover() -> tuple[list[type], list[str]]:
    """(every Function subclass defined in minitrans, every layer class exported by minitrans.nn)."""
    for info in pkgutil.iter_modules(mt.__path__, "minitrans."):
        try:
            importlib.import_module(info.name)
        except ImportError:             # an optional dependency (e.g. mpi4py) is missing: its ops still count
            pass                        # when their module imports without it, as minitrans.distributed does
    importlib.import_module("minitrans.nn.hooks")
    ops = sorted({c for c in _all_subclasses(Function) if c.__module__.startswith("minitrans.")},
                 key=lambda c: (c.__module__, c.__qualname__))
    layers = sorted(f"nn.{n}" for n in mt.nn.__all__
                    if isinstance(getattr(mt.nn, n), type) and issubclass(getattr(mt.nn, n), (mt.nn.Module, Tensor)))
    return ops, layers


def missing() -> list[str]:
    """Ops and layers with neither a case nor an exclusion: what a new op or layer must add here."""
    ops, layers = discover()
    covered = {c for case in cases() for c in case.covers}
    names = {case.name for case in cases()}
    out = [f"{c.__module__}.{c.__qualname__}" for c in ops if c not in covered and c.__name__ not in EXCLUDED]
    return out + [n for n in layers if n not in names and n not in EXCLUDED]


@contextmanager
def trace_ops():
    """Record every ``Function.apply`` call made inside the block as (class, args, kwargs).

    Ops that define their own ``apply`` (e.g. ToDevice) are wrapped too."""
    calls = []
    owners = [Function] + [c for c in _all_subclasses(Function) if "apply" in c.__dict__]
    originals = [(c, c.__dict__["apply"]) for c in owners]

    def wrap(original):
        def apply(cls, *args, **kwargs):
            calls.append((cls, args, kwargs))
            return original.__func__(cls, *args, **kwargs)
        return classmethod(apply)

    for c, original in originals:
        c.apply = wrap(original)
    try:
        yield calls
    finally:
        for c, original in originals:
            c.apply = original


# --------------------------------------------------------------------------- running
@dataclass
class Row:
    name: str
    shapes: str
    device: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    ok: bool = True
    status: str = "pass"
    details: list = field(default_factory=list)


def _input_name(k: int, names: list[str]) -> str:
    return names[k] if k < len(names) else f"input {k}"


def check(fn, inputs: list[Tensor], names: list[str], label: str, shapes: str, device: str, fast: bool,
          eps: float = 1e-6, localize: bool = False, specs=()) -> Row:
    """One gradcheck of ``fn(*inputs)``, summarised as a table row (failures named by input and element).

    ``specs``: the layouts of the leading inputs, so that an element is named in the view the op saw."""
    row = Row(label, shapes, device)
    try:
        results = check_gradients(fn, inputs, eps=eps, fast_mode=fast)
    except Exception as e:                       # a crash is a failure of this case, not of the report
        row.ok, row.status = False, "ERROR"
        row.details.append(f"{label} [{shapes}]: {type(e).__name__}: {e}")
        return row
    for r in results:
        row.max_abs = max(row.max_abs, r.max_abs) if not math.isnan(r.max_abs) else float("nan")
        row.max_rel = max(row.max_rel, r.max_rel)
        if not r.ok:
            row.ok, row.status = False, "FAIL"
            el = view_element(specs[r.index], r.element) if r.index < len(specs) else r.element
            shape = specs[r.index].shape if r.index < len(specs) else r.shape
            where = "vᵀJu" if fast else f"element {el} (output element {r.output_element})"
            row.details.append(f"{label} [{shapes}]: d/d {_input_name(r.index, names)} {shape}, {where}: "
                               f"analytic {r.analytic:.6g} vs numeric {r.numeric:.6g} "
                               f"({r.n_bad} of {r.n_compared} differ)")
    if not row.ok and localize:
        row.details.extend(localize_ops(fn, inputs))
    return row


def localize_ops(fn, inputs) -> list[str]:
    """Rerun gradcheck on each op that ``fn`` calls, on the inputs it got: which op's backward is wrong."""
    with trace_ops() as calls, mt.enable_grad():
        fn(*inputs)
    found, seen = [], {}
    for cls, args, kwargs in calls:
        if seen.get(cls, 0) >= 3:
            continue
        seen[cls] = seen.get(cls, 0) + 1
        leaves = [Tensor._wrap(a._data.copy(), a._device, a.requires_grad and a.dtype.is_floating_point)
                  if isinstance(a, Tensor) else a for a in args]
        if not any(isinstance(a, Tensor) and a.requires_grad for a in leaves):
            continue
        if any(isinstance(a, Tensor) and a.requires_grad and a.dtype is not mt.float64 for a in leaves):
            continue
        try:
            res = check_gradients(lambda *xs, c=cls, kw=kwargs: c.apply(*xs, **kw), leaves)
        except Exception as e:
            found.append(f"  op {cls.__name__}: its gradcheck raised {type(e).__name__}: {e}")
            continue
        for r in res:
            if not r.ok:
                found.append(f"  op {cls.__name__} ({cls.__module__}): input {r.index} {r.shape}, element "
                             f"{r.element}: analytic {r.analytic:.6g} vs numeric {r.numeric:.6g}")
                break
    if not found:
        found.append("  every op it calls passes on its own: the error is in how they are combined "
                     "(or in a non-differentiable step, e.g. a detach or a NumPy round trip)")
    return found


def run_case(case: Case, device: str, fast: bool, seed: int = 0) -> list[Row]:
    rows = []
    for k, (specs, config) in enumerate(case.variants):
        rng = np.random.default_rng(seed + k)
        leaves = [leaf(rng, s, device) for s in specs]
        shapes = ", ".join(s.describe() for s in specs) + "".join(f" {a}={b}" for a, b in config.items())
        if case.make is None:
            call, params, pnames = case.call, [], []
        else:
            mt.manual_seed(seed + k)
            module = case.make(**config).double().to(device)
            params = [p for p in module.parameters()]
            pnames = [n for n, _ in module.named_parameters()]
            call = (lambda *xs, m=module: case.call(m, *xs))
        n_in = len(leaves)

        def fn(*xs, call=call, specs=specs):
            if case.seed_each_call:
                mt.manual_seed(seed)
            return call(*[view(t, s) for t, s in zip(xs[:n_in], specs)])

        if k == 0 and case.covers:
            with trace_ops() as calls, mt.enable_grad():
                fn(*leaves, *params)
            reached = {c for c, _, _ in calls}
            lost = [c.__name__ for c in case.covers if c not in reached]
            if lost:
                rows.append(Row(case.name, shapes, device, ok=False, status="FAIL",
                                details=[f"{case.name}: the case never calls {', '.join(lost)}"]))
                continue
        names = [f"x{i}" for i in range(n_in)] + pnames
        rows.append(check(fn, leaves + params, names, case.name, shapes, device, fast, case.eps, specs=specs))
    return rows


def _target(spec: str):
    if ":" not in spec:
        raise SystemExit(f"--target must look like module:attr (e.g. mypkg.layers:MyLayer), got {spec!r}")
    mod_name, attr = spec.split(":", 1)
    sys.path.insert(0, ".")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise SystemExit(f"--target {spec}: cannot import {mod_name!r} ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SystemExit(f"--target {spec}: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type) and issubclass(obj, mt.nn.Module):
        obj = obj()
    if not callable(obj):
        raise SystemExit(f"--target {spec}: {attr!r} is a {type(obj).__name__}, not a module or function")
    return obj


def _shape(text: str) -> tuple:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise SystemExit(f"--shape takes comma-separated sizes such as 2,3,8; got {text!r}") from None


def run_target(spec: str, shapes: list[tuple], device: str, fast: bool, seed: int = 0) -> list[Row]:
    """Check a user's module (its input and every parameter) or function (every input), plain and non-contiguous."""
    obj = _target(spec)
    if not shapes:
        raise SystemExit(f"--target {spec}: give the input shape(s) with --shape, e.g. --shape 2,5,8")
    params, pnames = [], []
    if isinstance(obj, mt.nn.Module):
        obj.double().to(device)
        params = list(obj.parameters())
        pnames = [n for n, _ in obj.named_parameters()]
    rows = []
    for nc in (False, True):
        specs = [In(s, nc=nc) for s in shapes]
        rng = np.random.default_rng(seed)
        leaves = [leaf(rng, s, device) for s in specs]
        n_in = len(leaves)

        def fn(*xs, specs=specs):
            return obj(*[view(t, s) for t, s in zip(xs[:n_in], specs)])

        names = [f"input {i}" for i in range(n_in)] + pnames
        rows.append(check(fn, leaves + params, names, spec, ", ".join(s.describe() for s in specs), device,
                          fast, localize=True, specs=specs))
    return rows


def _fmt(x: float) -> str:
    return f"{x:.1e}"


def print_table(rows: list[Row], out=None) -> None:
    out = out or sys.stdout
    w = max([len(r.name) for r in rows] + [8])
    ws = max([len(r.shapes) for r in rows] + [6])
    print(f"{'op/layer':<{w}}  {'shapes':<{ws}}  {'device':<6}  {'max abs':>8}  {'max rel':>8}  result", file=out)
    for r in rows:
        print(f"{r.name:<{w}}  {r.shapes:<{ws}}  {r.device:<6}  {_fmt(r.max_abs):>8}  {_fmt(r.max_rel):>8}  "
              f"{r.status}", file=out)
    failed = [r for r in rows if not r.ok]
    for r in failed:
        for line in r.details:
            print(line, file=out)
    na = sum(r.status.startswith("n/a") for r in rows)
    print(f"\n{len(rows) - len(failed) - na} of {len(rows) - na} checks pass" + (f" ({na} n/a)" if na else ""),
          file=out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minitrans.gradcheck_report", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--fast", action="store_true", help="compare random projections vᵀJu (2 forwards per input) "
                   "instead of full Jacobians: for large layers")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="run only the cases whose name contains TEXT (repeatable)")
    p.add_argument("--target", action="append", default=[], metavar="MODULE:ATTR",
                   help="check your own nn.Module (class or instance) or function instead of the library")
    p.add_argument("--shape", action="append", default=[], metavar="D0,D1,...",
                   help="input shape for --target, once per input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="list the cases and exclusions, run nothing")
    p.add_argument("--progress", action="store_true", help="name each case on stderr as it finishes")
    a = p.parse_args(argv)
    reason = unusable_reason(a.device)
    if reason is not None:
        print(f"--device {a.device}: {reason}", file=sys.stderr)
        return 2
    if a.list:
        for c in cases():
            print(f"{c.name}: {len(c.variants)} layouts")
        for k, why in EXCLUDED.items():
            print(f"{k}: excluded ({why})")
        return 0
    rows: list[Row] = []
    if a.target:
        shapes = [_shape(s) for s in a.shape]
        for t in a.target:
            rows += run_target(t, shapes, a.device, a.fast, a.seed)
    else:
        gaps = missing()
        selected = [c for c in cases() if not a.only or any(o in c.name for o in a.only)]
        if not selected:
            p.error(f"--only {a.only}: no case matches (see --list)")
        for c in selected:
            if c.name == "ToDevice" and not mt.cuda.is_available():
                rows.append(Row(c.name, "-", a.device, status="n/a (needs a CUDA device to move to)"))
                continue
            if a.device not in c.devices:
                rows.append(Row(c.name, "-", a.device,
                                status=f"n/a (no {a.device} kernel: {', '.join(c.devices)} only)"))
                continue
            rows += run_case(c, a.device, a.fast, a.seed)
            if a.progress:
                print(f"{c.name}: {'pass' if all(r.ok for r in rows) else 'FAIL so far'}", file=sys.stderr, flush=True)
        for g in gaps:
            rows.append(Row(g, "-", a.device, ok=False, status="FAIL",
                            details=[f"{g}: no gradcheck case and no exclusion in minitrans/gradcheck_cases.py"]))
    print_table(rows)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
