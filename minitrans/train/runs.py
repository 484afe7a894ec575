"""Command-line plumbing shared by the training scripts: arguments, run directories, resuming.

A run lives in one directory (``runs/<task>`` by default). A new run never reuses a directory
that holds an earlier run: it takes the next free ``runs/<task>-2``, ``-3``, ... and says so,
unless ``--overwrite`` is given. ``--resume`` continues the newest run of that family (or the
``--out-dir`` given) and says which; options given on the command line override the ones
stored in the checkpoint, everything else (model, task, budget) comes from the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass

from .. import serialization
from ..device import unusable_reason
from .loop import CHECKPOINT, RunError

# options that only steer this invocation; never taken from a checkpoint
_SESSION_ONLY = {"resume", "overwrite", "out_dir", "quiet"}
_BUDGET = ("steps", "time_limit", "target")


def add_arguments(p: argparse.ArgumentParser, *, steps: int, batch_size: int, lr: float, warmup: int,
                  eval_every: int, eval_size: int, target: float, time_limit: float | None = None,
                  log_every: int = 10) -> None:
    """The options every training script shares (use ``ArgumentDefaultsHelpFormatter`` to show defaults)."""
    g = p.add_argument_group("budget (the run ends at whichever comes first)")
    g.add_argument("--steps", type=int, default=steps, help="total optimizer steps over every session of the run")
    g.add_argument("--target", type=float, default=target,
                   help="stop at the first evaluation whose held-out exact match is at least this")
    g.add_argument("--time-limit", type=float, default=time_limit, metavar="SECONDS",
                   help="stop this invocation after this much training time (a resumed run gets a fresh "
                        "allowance); none when omitted")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=int, default=batch_size, help="global batch (examples per step)")
    t.add_argument("--lr", type=float, default=lr, help="peak learning rate (after warm-up)")
    t.add_argument("--warmup", type=int, default=warmup, help="linear warm-up steps, then 1/sqrt(step) decay")
    t.add_argument("--eval-every", type=int, default=eval_every, help="steps between held-out evaluations "
                                                                      "(each writes a checkpoint)")
    t.add_argument("--log-every", type=int, default=log_every, help="steps between rows of metrics.csv")
    t.add_argument("--eval-size", type=int, default=eval_size, help="held-out examples")
    t.add_argument("--seed", type=int, default=0, help="fixes the model init and the data stream")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    r = p.add_argument_group("run directory")
    r.add_argument("--out-dir", default=None,
                   help="where the run writes; default runs/<task>, or the next free runs/<task>-N")
    r.add_argument("--overwrite", action="store_true", help="start a new run in --out-dir even if it holds one")
    r.add_argument("--resume", action="store_true", help="continue the newest run (or --out-dir) from its "
                                                         "checkpoint, with the budget left or the one given")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def explicit_options(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The ``dest`` of every option given on the command line (parsing again with no defaults)."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a in parser._actions:
            a.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for a, d in saved:
            a.default = d


def check_device(device: str) -> None:
    """Raise RunError naming the reason when tensors cannot be made on ``device`` here."""
    reason = unusable_reason(device)
    if reason is not None:
        raise RunError(f"--device {device}: {reason}; use --device cpu")


def _family(base: str) -> list[tuple[int, str]]:
    """Existing run directories ``base``, ``base-2``, ... as (number, path), oldest first."""
    parent, name = os.path.split(os.path.normpath(base))
    parent = parent or "."
    out = []
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            m = re.fullmatch(re.escape(name) + r"(?:-(\d+))?", entry)
            if m and os.path.isdir(os.path.join(parent, entry)):
                out.append((int(m.group(1) or 1), os.path.join(parent, entry) if parent != "." else entry))
    return sorted(out)


def _holds_run(d: str) -> bool:
    return os.path.isdir(d) and bool(os.listdir(d))


@dataclass
class RunSetup:
    args: argparse.Namespace
    dir: str
    checkpoint: dict | None      # the loaded checkpoint when resuming
    notes: list[str]             # what was decided, to print before training


def start_run(parser: argparse.ArgumentParser, argv, task) -> RunSetup:
    """Parse ``argv``, check the device, pick the run directory and (with --resume) load the checkpoint.

    ``task`` names the default directory ``runs/<task>``: a string, or a function of the parsed args.

    Raises ``RunError`` with a one-line message; creates no directory (``Trainer.fit`` does).
    """
    args = parser.parse_args(argv)
    given = explicit_options(parser, argv)
    check_device(args.device)
    if args.resume and args.overwrite:
        raise RunError("--resume continues a run and --overwrite replaces it: give one of them")
    base = args.out_dir or os.path.join("runs", task(args) if callable(task) else task)
    notes: list[str] = []
    if args.resume:
        if args.out_dir:
            d = args.out_dir
        else:
            fam = [p for _, p in _family(base) if os.path.exists(os.path.join(p, CHECKPOINT))]
            d = fam[-1] if fam else base
            if len(fam) > 1:
                notes.append(f"resuming {d}, the newest of {len(fam)} runs ({', '.join(fam)}); "
                             f"--out-dir picks another")
        path = os.path.join(d, CHECKPOINT)
        if not os.path.exists(path):
            raise RunError(f"--resume: no checkpoint at {path}; start a new run without --resume")
        try:
            ck = serialization.load(path)
        except (serialization.CheckpointError, OSError) as e:
            raise RunError(f"--resume: {e}") from None
        _merge_saved_args(args, given, ck, notes, d)
        check_device(args.device)
        return RunSetup(args, d, ck, notes)
    d = base
    if _holds_run(d):
        if args.overwrite:
            shutil.rmtree(d)
            notes.append(f"--overwrite: removed the earlier run in {d}")
        else:
            used = {n for n, _ in _family(base)}
            n = next(k for k in range(2, 10_000) if k not in used)
            d = f"{os.path.normpath(base)}-{n}"
            notes.append(f"{base} holds an earlier run, so this run writes to {d} "
                         f"(--overwrite replaces it; --resume continues it)")
    return RunSetup(args, d, None, notes)


def _merge_saved_args(args, given: set[str], ck: dict, notes: list[str], d: str) -> None:
    meta = json.loads(ck.get("meta", "{}")) if isinstance(ck.get("meta"), str) else {}
    saved = meta.get("args", {})
    changed = []
    for k, v in saved.items():
        if k in _SESSION_ONLY or not hasattr(args, k):
            continue
        if k in given and getattr(args, k) != v:
            changed.append(f"{k} {v!r} -> {getattr(args, k)!r}")
        elif k not in given:
            setattr(args, k, v)
    step = int(ck["step"])
    left = args.steps - step
    src = lambda k: "given now" if k in given else "from the checkpoint"              # noqa: E731
    limit = "none" if args.time_limit is None else f"{args.time_limit:g} s for this session"
    notes.append(f"resuming {d} at step {step}: step budget {args.steps} ({src('steps')}, {max(left, 0)} left), "
                 f"time limit {limit} ({src('time_limit')}), target {args.target} ({src('target')})")
    other = [c for c in changed if c.split()[0] not in _BUDGET]
    if other:
        notes.append("changed from the checkpoint's run: " + ", ".join(other))
    if left <= 0:
        raise RunError(f"--resume: {d} has used its whole step budget ({step} of {args.steps} steps); "
                       f"pass a larger --steps to continue")


def exit_code(result) -> int:
    """0 when the run ended normally, 128 + signal number when it was interrupted (shell convention)."""
    sig = getattr(result, "signal", None) if not isinstance(result, dict) else result.get("signal")
    return 128 + int(sig) if sig else 0


def cli(main, argv=None) -> int:
    """Run ``main(argv)`` as a command: a ``RunError`` becomes one ``error:`` line and exit status 2."""
    try:
        return exit_code(main(argv))
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
