"""Regenerate the toy-task tables of experiments/RESULTS.md by running the commands they name.

    python experiments/results_toy.py                        # every run below (about 15 min on 2 idle cores)
    python experiments/results_toy.py --only reverse         # just the README's main command
    python experiments/results_toy.py --only reverse --busy-core   # ... while another process keeps one core busy

Each run is a fresh process with its own run directory under a temporary folder. Its
figures come from the run's summary.json; wall time is the whole process (start-up and
Numba compilation included), and the 1-minute load average before and after is stored
beside it, so a figure taken on a shared machine says so. Results accumulate in
experiments/results/toy.json (keyed by run), and the section between ``<!-- toy:begin -->``
and ``<!-- toy:end -->`` of RESULTS.md is rewritten from that file — every number in the
section is the output of the command printed next to it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
STORE = os.path.join(HERE, "results", "toy.json")
BEGIN, END = "<!-- toy:begin -->", "<!-- toy:end -->"

# key -> (script, extra arguments); the command shown is exactly `python experiments/<script> <args>`
RUNS = {
    "reverse": ("reverse.py", []),
    "reverse-seed1": ("reverse.py", ["--seed", "1"]),
    "reverse-seed2": ("reverse.py", ["--seed", "2"]),
    "reverse-nopos": ("reverse.py", ["--no-positional", "--steps", "3000"]),
    "addition": ("addition.py", []),
}


def run_one(key: str, busy_core: bool) -> dict:
    script, extra = RUNS[key]
    busy = None
    if busy_core:                                      # the "another process keeps one core busy" condition
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, key)
            cmd = [sys.executable, os.path.join(HERE, script), *extra, "--out-dir", out, "--quiet"]
            load0, t0 = os.getloadavg()[0], time.perf_counter()
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            wall, load1 = time.perf_counter() - t0, os.getloadavg()[0]
            if proc.returncode != 0:
                raise SystemExit(f"{key}: {' '.join(cmd)} failed with exit {proc.returncode}:\n{proc.stderr[-2000:]}")
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    last_line = proc.stdout.strip().splitlines()[-1]
    return {"command": " ".join(["python", f"experiments/{script}", *extra]), "busy_core": busy_core,
            "exact_match": summary.get("held_out_exact_match"), "token_acc": summary.get("held_out_token_acc"),
            "steps": summary["steps"], "ended": summary["ended"], "target_met": summary["target_met"],
            "train_s": round(summary["elapsed_s"], 1), "wall_s": round(wall, 1),
            "load_before": round(load0, 2), "load_after": round(load1, 2),
            "parameters": summary.get("parameters"), "last_line": last_line,
            "date": datetime.date.today().isoformat()}


def render(store: dict) -> str:
    lines = [BEGIN, "| command | held-out exact match | token accuracy | steps | ended by | training time | "
             "process wall time | 1-min load before → after | date |", "|---|---:|---:|---:|---|---:|---:|---|---|"]
    for key in [k + suffix for k in RUNS for suffix in ("", "+busy-core")]:
        if key not in store:
            continue
        r = store[key]
        cmd = f"`{r['command']}`" + (" + a busy core" if r["busy_core"] else "")
        pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"      # noqa: E731
        lines.append(f"| {cmd} | **{pct(r['exact_match'])}** | {pct(r['token_acc'])} | {r['steps']:,} | "
                     f"{r['ended']}{'' if r['target_met'] else ' (target missed)'} | {r['train_s']:.0f} s | "
                     f"**{r['wall_s']:.0f} s** | {r['load_before']:.1f} → {r['load_after']:.1f} | {r['date']} |")
    lines.append(END)
    return "\n".join(lines)


def write_section(store: dict, path: str = RESULTS_MD) -> None:
    text = open(path, encoding="utf-8").read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + render(store) + tail)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(RUNS), default=list(RUNS), help="runs to redo")
    ap.add_argument("--busy-core", action="store_true", help="keep one core busy with another process meanwhile")
    ap.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from toy.json, run nothing")
    args = ap.parse_args(argv)
    store = json.load(open(STORE)) if os.path.exists(STORE) else {}
    if not args.render_only:
        for key in args.only:
            print(f"running {key} ...", flush=True)
            slot = key + ("+busy-core" if args.busy_core else "")       # both conditions keep their row
            store[slot] = run_one(key, args.busy_core)
            print(f"  {store[slot]['last_line']}  ({store[slot]['wall_s']:.0f} s wall)", flush=True)
            os.makedirs(os.path.dirname(STORE), exist_ok=True)
            with open(STORE, "w") as f:
                json.dump(store, f, indent=1)
    write_section(store)


if __name__ == "__main__":
    main()
