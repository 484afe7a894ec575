"""Self-describing model checkpoints: the weights travel with the model's class name and config.

    mt.models.from_checkpoint("runs/reverse/checkpoint.npz")      # -> a Seq2Seq in eval mode

A checkpoint written by ``minitrans.train`` (or by ``save_model``) holds ``model`` (the state
dict) and ``model_spec`` = {"class": "Seq2Seq", "config": {...}}. Classes are looked up in a
registry by name, never imported from a path stored in the file, so loading a checkpoint runs
no code that the file names.
"""
from __future__ import annotations

import dataclasses
import os

from .. import serialization
from .gpt import GPT, GPTConfig
from .seq2seq import Seq2Seq, Seq2SeqConfig

_REGISTRY: dict[str, tuple[type, type]] = {"GPT": (GPT, GPTConfig), "Seq2Seq": (Seq2Seq, Seq2SeqConfig)}


def register(cls: type, config_cls: type, name: str | None = None) -> None:
    """Make ``from_checkpoint`` able to rebuild ``cls(config_cls(**config))`` (``config_cls`` a dataclass)."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"register: {config_cls.__name__} must be a dataclass config")
    _REGISTRY[name or cls.__name__] = (cls, config_cls)


def describe(model) -> dict:
    """{"class": registered name, "config": the dataclass config as a dict} for a registered model."""
    for name, (cls, cfg_cls) in _REGISTRY.items():
        if type(model) is cls:
            cfg = getattr(model, "config", None)
            if not isinstance(cfg, cfg_cls):
                raise TypeError(f"describe: {name}.config must be a {cfg_cls.__name__}, got {type(cfg).__name__}")
            return {"class": name, "config": dataclasses.asdict(cfg)}
    raise TypeError(f"describe: {type(model).__name__} is not a registered model class "
                    f"(known: {', '.join(_REGISTRY)}); call minitrans.models.register(cls, config_cls) first")


def config_differences(expected: dict, found: dict, where: str = "checkpoint") -> list[str]:
    """Human-readable differences, e.g. ["expected d_model 64, checkpoint has 32"]."""
    out = []
    for k in list(expected) + [k for k in found if k not in expected]:
        if k not in found:
            out.append(f"expected {k} {expected[k]!r}, {where} has no {k}")
        elif k not in expected:
            out.append(f"{where} has {k} {found[k]!r}, which this model config does not know")
        elif expected[k] != found[k]:
            out.append(f"expected {k} {expected[k]!r}, {where} has {found[k]!r}")
    return out


def check_config(expected, found: dict, where: str = "checkpoint") -> None:
    """Raise ``ValueError`` listing every field where ``expected`` (a dataclass or dict) and ``found`` differ."""
    exp = dataclasses.asdict(expected) if dataclasses.is_dataclass(expected) else dict(expected)
    diffs = config_differences(exp, dict(found), where)
    if diffs:
        raise ValueError("model config mismatch: " + "; ".join(diffs))


def _read(path_or_ckpt) -> dict:
    if isinstance(path_or_ckpt, dict):
        return path_or_ckpt
    if not isinstance(path_or_ckpt, (str, os.PathLike)):
        raise TypeError(f"expected a checkpoint path or a loaded checkpoint dict, got {type(path_or_ckpt).__name__}")
    return serialization.load(path_or_ckpt)


def save_model(model, path, task: dict | None = None) -> None:
    """Write weights + class + config (+ optional task/tokenizer settings) so ``from_checkpoint`` can rebuild it."""
    serialization.save({"model": model.state_dict(), "model_spec": describe(model), "task": task or {}}, path)


def from_checkpoint(path_or_ckpt, map_location=None, expected_config=None):
    """Rebuild the model a checkpoint describes, load its weights and put it in eval mode.

    ``expected_config`` (a config dataclass or dict), when given, must match the checkpoint's:
    a mismatch raises ``ValueError("model config mismatch: expected d_model 64, checkpoint has 32")``.
    """
    ck = _read(path_or_ckpt)
    where = path_or_ckpt if not isinstance(path_or_ckpt, dict) else "the checkpoint"
    spec = ck.get("model_spec") if isinstance(ck, dict) else None
    if not isinstance(spec, dict) or "class" not in spec or "config" not in spec or "model" not in ck:
        raise ValueError(f"from_checkpoint: {where} holds no model description (model_spec); it was written "
                         f"without one, so rebuild the model yourself and call load_state_dict(ck['model'])")
    if spec["class"] not in _REGISTRY:
        raise ValueError(f"from_checkpoint: {where} holds a {spec['class']!r}, which is not a registered model "
                         f"class (known: {', '.join(_REGISTRY)}); call minitrans.models.register first")
    cls, cfg_cls = _REGISTRY[spec["class"]]
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(spec["config"]) - fields)
    if unknown:
        raise ValueError(f"from_checkpoint: {where}: {cfg_cls.__name__} has no field(s) {', '.join(unknown)}")
    if expected_config is not None:
        check_config(expected_config, spec["config"])
    model = cls(cfg_cls(**spec["config"]))
    model.load_state_dict(ck["model"])
    if map_location is not None:
        model.to(map_location)
    return model.eval()


def checkpoint_task(path_or_ckpt) -> dict:
    """The task/tokenizer settings stored with the model (e.g. {"name": "reverse", "n_symbols": 17, ...})."""
    ck = _read(path_or_ckpt)
    return dict(ck.get("task") or {})
