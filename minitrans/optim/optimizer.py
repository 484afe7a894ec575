"""Optimizer base class: parameter groups, per-parameter state, zero_grad and state dicts."""
from __future__ import annotations

import numbers

import numpy as np

from ..tensor import Tensor


def _check_numbers(owner: str, **values) -> None:
    """Hyper-parameters must be real numbers (not str/None/bool): a clean TypeError naming the argument."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{owner}: {name} must be a number, got {type(v).__name__}")


class Optimizer:
    """Holds ``param_groups`` (dicts with 'params' and hyper-parameters) and ``state`` per parameter."""

    def __init__(self, params, defaults: dict) -> None:
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, not a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups: list[dict] = []
        self.state: dict = {}
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        ps = group["params"]
        group["params"] = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError("optimizer got a parameter that does not require grad")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None if set_to_none or p.grad is None else Tensor._wrap(p.grad._data * 0, p.device)

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self):
        for g in self.param_groups:
            for p in g["params"]:
                yield p

    def state_dict(self) -> dict:
        """{'state': {index: {name: array}}, 'param_groups': [...]}; parameters are referred to by index."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {}
        for p in self._params():
            st = self.state.get(p)
            if st:
                # arrays saved as host tensors (copies: the live state keeps changing)
                to_host = p.device.backend.to_numpy
                state[index[id(p)]] = {k: Tensor._wrap(to_host(v).copy()) if hasattr(v, "shape") else v
                                       for k, v in st.items()}
        groups = []
        for g in self.param_groups:
            d = {k: v for k, v in g.items() if k != "params"}
            d["params"] = [index[id(p)] for p in g["params"]]
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if groups is None or "state" not in state_dict:
            raise ValueError("optimizer state_dict must have 'state' and 'param_groups'")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state_dict has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        params = list(self._params())
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError("optimizer state_dict: a parameter group has a different number of parameters")
        new_state = {}
        for key, st in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"optimizer state_dict refers to parameter {i}, but there are {len(params)}")
            p = params[i]
            entry = {}
            for k, v in st.items():
                if isinstance(v, Tensor) or isinstance(v, np.ndarray):
                    arr = v.numpy() if isinstance(v, Tensor) else v
                    if arr.shape != p.shape and arr.ndim > 0:
                        raise ValueError(f"optimizer state_dict: state {k!r} of parameter {i} has shape "
                                         f"{arr.shape}, the parameter has {tuple(p.shape)}")
                    if arr.ndim > 0 and arr.dtype.kind != "f":
                        raise ValueError(f"optimizer state_dict: state {k!r} of parameter {i} has dtype "
                                         f"{arr.dtype}, expected a floating-point buffer like the parameter")
                    arr = arr.astype(p._data.dtype) if arr.dtype.kind == "f" else arr
                    entry[k] = p.device.backend.from_numpy(arr, copy=True)
                else:
                    entry[k] = v
            new_state[p] = entry
        self.state = new_state
        for mine, theirs in zip(self.param_groups, groups):
            for k, v in theirs.items():
                if k != "params":
                    mine[k] = v

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines + [")"])
