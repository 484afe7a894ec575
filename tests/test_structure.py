"""Static and process checks of the code's shape: file sizes, where device branches may live,
that every module imports alone (no import cycle), no import inside a function that is not
an explained lazy import, Tensor methods defined on the class, every op class in ``ops/``,
names that explain themselves, no words pointing outside the repository, and no global side
effect of ``import minitrans``."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
import pydoc
import re
import subprocess
import sys

import pytest

import minitrans as mt

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = ("minitrans", "kernels")            # kernels/ is installed as minitrans.kernels
MAX_LINES = 400


def library_files():
    return sorted(p for d in LIBRARY for p in (ROOT / d).rglob("*.py"))


def rel(p: pathlib.Path) -> str:
    return p.relative_to(ROOT).as_posix()


def module_name(p: pathlib.Path) -> str:
    parts = list(p.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "kernels":
        parts.insert(0, "minitrans")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str) -> pathlib.Path | None:
    """The file of library module ``name`` (``None`` if it is not one)."""
    parts = name.split(".")
    if parts[:2] == ["minitrans", "kernels"]:
        parts = parts[1:]
    base = ROOT.joinpath(*parts)
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


PARSED = {}


def tree(p: pathlib.Path) -> ast.Module:
    if p not in PARSED:
        PARSED[p] = ast.parse(p.read_text(), filename=str(p))
    return PARSED[p]


# ----------------------------------------------------------------------------- sizes
def test_no_library_file_is_over_400_lines():
    long = {rel(p): n for p in library_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


# ----------------------------------------------------------------------------- device branches
DEVICE_NAMES = {"cpu", "cuda"}
MAY_TEST_DEVICES = ("minitrans/backends/", "minitrans/device.py")


def _is_device_test(node: ast.Compare) -> bool:
    operands = [node.left, *node.comparators]
    if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)) for op in node.ops):
        return False
    for o in operands:
        if isinstance(o, ast.Constant) and o.value in DEVICE_NAMES:
            return True
        if isinstance(o, (ast.Tuple, ast.List, ast.Set)) and o.elts and all(
                isinstance(e, ast.Constant) and e.value in DEVICE_NAMES for e in o.elts):
            return True
    return False


def test_no_device_type_test_outside_the_backends():
    """``x.device.type == "cpu"``, ``str(dev) != "cuda"``, ``kind in ("cpu", "cuda")``...: a behaviour that
    differs per device belongs to a backend primitive, not to an op, layer or optimizer."""
    hits = []
    for p in library_files():
        if rel(p).startswith(MAY_TEST_DEVICES):
            continue
        for node in ast.walk(tree(p)):
            if isinstance(node, ast.Compare) and _is_device_test(node):
                hits.append(f"{rel(p)}:{node.lineno}: {ast.unparse(node)}")
    assert not hits, "device-type tests outside minitrans/backends/ and device.py:\n" + "\n".join(hits)


def test_the_device_type_detector_can_fail():
    for src in ("t.device.type == 'cpu'", "dev.type != 'cuda'", "kind in ('cuda',)", "x.name == 'cuda'"):
        assert _is_device_test(ast.parse(src, mode="eval").body), src
    for src in ("dtype.name == 'bool'", "n == 3", "c.name == 'ToDevice'", "name in ('nn', 'cuda')",
                "np.dtype(a).type not in SUPPORTED"):
        assert not _is_device_test(ast.parse(src, mode="eval").body), src


# ----------------------------------------------------------------------------- imports
#: optional dependencies: a module that imports one at module level is checked only where it is installed
OPTIONAL = {"mpi4py": "mpi4py", "torch": "torch", "matplotlib": "matplotlib", "numba.cuda": "numba_cuda",
            "numba_cuda": "numba_cuda", "sacrebleu": "sacrebleu"}


def _needs_missing_dependency(p: pathlib.Path) -> str | None:
    for node in tree(p).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        for n in names:
            for dep, dist in OPTIONAL.items():
                if (n == dep or n.startswith(dep + ".")) and importlib.util.find_spec(dist) is None:
                    return dep
    return None


def _importable_modules():
    mods, skipped = [], {}
    for p in library_files():
        missing = _needs_missing_dependency(p)
        if missing:
            skipped[module_name(p)] = missing
        else:
            mods.append(module_name(p))
    return mods, skipped


_IMPORT_EACH_ALONE = """
import importlib, importlib.util, json, os, sys
import numpy, numba                      # third-party modules only: loaded once, before the forks
if importlib.util.find_spec("numba_cuda") is not None:
    import numba.cuda
assert not [m for m in sys.modules if m.split(".")[0] == "minitrans"]
results = {}
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                         # the child: the module is the first minitrans module it imports
        os.close(r)
        try:
            importlib.import_module(name)
            msg = ""
        except BaseException as e:
            msg = f"{type(e).__name__}: {e}" or "failed"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode()
    _, status = os.waitpid(pid, 0)
    results[name] = msg if status == 0 else msg or f"exit status {status}"
print(json.dumps(results))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the check forks one process per module (POSIX only)")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    """Each module is imported in a process of its own in which no other minitrans module has
    been imported (a fork of an interpreter that loaded only NumPy and Numba, so that their
    import time is paid once): an import cycle shows as an ImportError when a module in the
    cycle is the first one imported."""
    mods, _ = _importable_modules()
    assert len(mods) > 50, mods
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _IMPORT_EACH_ALONE, *mods], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(results) == sorted(mods)
    failed = {n: e for n, e in results.items() if e}
    assert not failed, "modules that do not import alone:\n" + "\n".join(f"{n}: {e}" for n, e in failed.items())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the check forks one process per module (POSIX only)")
def test_the_import_alone_check_finds_a_cycle(tmp_path):
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("from .a import A\nB = 2\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-c", _IMPORT_EACH_ALONE, "cyclic", "cyclic.a", "cyclic.b"],
                       capture_output=True, text=True, env=env, timeout=300)
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert results["cyclic"] == ""
    assert results["cyclic.a"].startswith("ImportError") and results["cyclic.b"].startswith("ImportError")


#: Lazy imports allowed inside functions: the target module (or a prefix of it) and why.
LAZY_IMPORTS_ALLOWED = {
    "minitrans.kernels.cpu": "Numba-compiled CPU kernels: compiled on first use, not when minitrans is imported",
    "minitrans.backends.cpu": "imports the Numba-compiled CPU kernel modules: loaded when the first CPU array "
                              "is made, not when minitrans is imported",
    "minitrans.kernels.cuda": "CUDA kernels: need the optional numba-cuda",
    "minitrans.backends.cuda": "the CUDA backend: needs the optional numba-cuda",
    "minitrans.distributed._mpi": "wraps the optional mpi4py",
}


def _import_targets(p: pathlib.Path, node) -> list[str]:
    """The library modules an import statement inside ``p`` names (absolute names)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "minitrans"]
    if node.level:
        package = module_name(p).split(".")
        if p.name != "__init__.py":
            package = package[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "minitrans":
        return []
    return [f"{base}.{a.name}" if module_path(f"{base}.{a.name}") else base for a in node.names]


def _allowed(target: str) -> bool:
    return any(target == k or target.startswith(k + ".") for k in LAZY_IMPORTS_ALLOWED)


def test_no_library_module_is_imported_inside_a_function():
    """An import inside a function hides a dependency (often a cycle); only the lazy imports of
    ``LAZY_IMPORTS_ALLOWED`` are allowed."""
    hits = []
    for p in library_files():
        for fn in ast.walk(tree(p)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    bad = [t for t in _import_targets(p, node) if not _allowed(t)]
                    if bad:
                        hits.append(f"{rel(p)}:{node.lineno} in {fn.name}(): {', '.join(sorted(set(bad)))}")
    assert not hits, "library modules imported inside functions:\n" + "\n".join(sorted(set(hits)))


# ----------------------------------------------------------------------------- Tensor
def test_tensor_methods_are_not_assigned_from_outside_the_class():
    hits = []
    for p in library_files():
        for node in ast.walk(tree(p)):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "Tensor":
                        hits.append(f"{rel(p)}:{node.lineno}: Tensor.{sub.attr} = ...")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" \
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "Tensor":
                hits.append(f"{rel(p)}:{node.lineno}: setattr(Tensor, ...)")
    assert not hits, f"{len(hits)} Tensor attributes set from outside the class:\n" + "\n".join(hits[:40])


TENSOR_METHODS = ("add", "sub", "mul", "matmul", "reshape", "view", "transpose", "permute", "sum", "mean",
                  "softmax", "log_softmax", "exp", "clamp", "clamp_", "add_", "contiguous", "masked_fill",
                  "__add__", "__getitem__", "backward", "numpy", "item", "to")


@pytest.fixture(scope="module")
def tensor_help():
    return pydoc.render_doc(mt.Tensor, renderer=pydoc.plaintext)


@pytest.mark.parametrize("name", TENSOR_METHODS)
def test_tensor_method_is_defined_in_the_class_hierarchy_and_documented(name, tensor_help):
    owners = [k for k in mt.Tensor.__mro__ if k is not object and name in vars(k)]
    assert owners, f"Tensor.{name} is not defined in Tensor or a class it inherits"
    assert re.search(rf"^ \|  {re.escape(name)}(\(| = | lambda)", tensor_help, re.MULTILINE), \
        f"Tensor.{name} does not show in help(mt.Tensor)"


def test_no_class_defines_a_method_twice():
    hits = []
    for p in library_files():
        for cls in ast.walk(tree(p)):
            if isinstance(cls, ast.ClassDef):
                seen = {}
                for node in cls.body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        overload = any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter")
                                       for d in node.decorator_list)
                        if node.name in seen and not overload:
                            hits.append(f"{rel(p)}:{node.lineno}: {cls.name}.{node.name} (also line {seen[node.name]})")
                        seen.setdefault(node.name, node.lineno)
                    elif isinstance(node, ast.Assign):
                        for t in node.targets:
                            if isinstance(t, ast.Name) and t.id in seen:
                                hits.append(f"{rel(p)}:{node.lineno}: {cls.name}.{t.id} assigned after its def")
    assert not hits, "\n".join(hits)


def test_no_method_is_defined_in_its_class_and_again_from_outside():
    """``class Tensor: def __hash__`` and, elsewhere, ``Tensor.__hash__ = ...``: two definitions."""
    defined = {}
    for p in library_files():
        for cls in ast.walk(tree(p)):
            if isinstance(cls, ast.ClassDef):
                for node in cls.body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        defined.setdefault(cls.name, {})[node.name] = f"{rel(p)}:{node.lineno}"
    hits = []
    for p in library_files():
        for node in ast.walk(tree(p)):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    for sub in ast.walk(t):
                        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and \
                                sub.attr in defined.get(sub.value.id, {}):
                            hits.append(f"{rel(p)}:{node.lineno}: {sub.value.id}.{sub.attr} = ... "
                                        f"(defined at {defined[sub.value.id][sub.attr]})")
    assert not hits, "\n".join(hits)


def test_optim_does_not_import_nn():
    """``minitrans.optim`` works on tensors and the backend only: optimizers and gradient clipping
    do not depend on the layers package."""
    hits = []
    for p in sorted((ROOT / "minitrans" / "optim").rglob("*.py")):
        for node in ast.walk(tree(p)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                hits += [f"{rel(p)}:{node.lineno}: {t}" for t in _import_targets(p, node)
                         if t == "minitrans.nn" or t.startswith("minitrans.nn.")]
    assert not hits, "\n".join(hits)


# ----------------------------------------------------------------------------- ops
#: Function subclasses that may live outside minitrans.ops, and why.
FUNCTIONS_OUTSIDE_OPS = {
    "minitrans.distributed.ring.RingAttention": "attention across processes: part of the distributed package "
                                                "(needs a process group), not a device op",
}

_FIND_FUNCTIONS = """
import importlib, json, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
from minitrans.autograd.function import Function
seen, todo = set(), [Function]
while todo:
    for s in todo.pop().__subclasses__():
        if s not in seen:
            seen.add(s); todo.append(s)
print(json.dumps(sorted(f"{c.__module__}.{c.__qualname__}" for c in seen)))
"""


def test_every_function_subclass_is_in_ops():
    mods, _ = _importable_modules()
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-c", _FIND_FUNCTIONS, *mods], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    classes = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(classes) > 20, classes
    outside = [c for c in classes if c.startswith("minitrans.") and not c.startswith("minitrans.ops.")
               and c not in FUNCTIONS_OUTSIDE_OPS]
    assert not outside, f"Function subclasses outside minitrans/ops/: {outside}"



# ----------------------------------------------------------------------------- repetition and dead code
def test_every_exported_cuda_kernel_is_called_by_the_backend():
    """A kernel the CUDA kernel package exports but the CUDA backend never calls is dead code
    (the embedding kernels were, once the backend gathered rows with its indexing kernels)."""
    init = tree(ROOT / "kernels" / "cuda" / "__init__.py")
    exported = next(ast.literal_eval(node.value) for node in init.body
                    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__all__")
    backend = "\n".join(p.read_text() for p in sorted((ROOT / "minitrans" / "backends" / "cuda").glob("*.py")))
    unused = [name for name in exported if not name.isupper() and not re.search(rf"\b{name}\b", backend)]
    assert not unused, f"exported by minitrans.kernels.cuda but never called by the CUDA backend: {unused}"


def test_strided_device_views_are_built_in_one_place():
    """Views of device memory are made with numba-cuda's array classes in one function only."""
    private = re.compile(r"DeviceNDArray\(|FakeCUDAArray\(|\.gpu_data\b")
    places = [rel(p) for p in library_files() if private.search(p.read_text())]
    assert places == ["kernels/cuda/_util.py"], places


def test_linear_checks_its_shapes_in_one_place():
    """The features-mismatch check of a linear layer is written once (the public entry point)."""
    for words in ("features but", "Linear(in_features="):      # F.linear's words, nn.Linear's words
        places = [rel(p) for p in library_files() if words in p.read_text()]
        assert len(places) == 1, (words, places)
    with pytest.raises(ValueError, match="features but"):
        mt.nn.functional.linear(mt.zeros(4, 5), mt.zeros(2, 3))
    with pytest.raises(ValueError, match=r"Linear\(in_features=3\) got input of shape \(4, 5\)"):
        mt.nn.Linear(3, 2)(mt.zeros(4, 5))


# ----------------------------------------------------------------------------- names
#: short aliases everyone reads at once
SHORT_ALIASES_ALLOWED = {"np": "numpy", "mt": "minitrans", "F": "nn.functional, as in PyTorch",
                         "nn": "minitrans.nn, as in PyTorch", "mp": "multiprocessing"}
CRYPTIC = {"Dr", "dvv", "_u", "_w", "_v", "_d", "_st"}


def _is_module(base: str, name: str) -> bool:
    full = f"{base}.{name}" if base else name
    if full.split(".")[0] == "minitrans":
        return module_path(full) is not None
    try:
        return importlib.util.find_spec(full) is not None
    except (ImportError, ValueError):
        return False


def test_no_short_module_aliases():
    hits = []
    for p in library_files():
        for node in ast.walk(tree(p)):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for a in node.names:
                if not a.asname or len(a.asname) > 2 or a.asname in SHORT_ALIASES_ALLOWED:
                    continue
                if isinstance(node, ast.Import):
                    is_mod = True
                elif node.level:
                    package = module_name(p).split(".")
                    package = package if p.name == "__init__.py" else package[:-1]
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                    is_mod = _is_module(base, a.name)
                else:
                    is_mod = _is_module(node.module or "", a.name)
                if is_mod:
                    hits.append(f"{rel(p)}:{node.lineno}: {a.name} as {a.asname}")
    assert not hits, "modules imported under 1-2 character names:\n" + "\n".join(hits)


def test_no_cryptic_module_level_names():
    hits = []
    for p in library_files():
        for node in tree(p).body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.asname or a.name for a in node.names]
            hits += [f"{rel(p)}:{node.lineno}: {n}" for n in names if n in CRYPTIC]
    assert not hits, "names that do not explain themselves:\n" + "\n".join(hits)


def test_no_cryptic_attribute_names():
    """The same names as attributes: methods, ``__slots__`` entries and ``self.<name> = ...``."""
    hits = []
    for p in library_files():
        for cls in ast.walk(tree(p)):
            if not isinstance(cls, ast.ClassDef):
                continue
            for node in ast.walk(cls):
                names = []
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names = [node.name]
                elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__"
                                                          for t in node.targets):
                    names = [e.value for e in ast.walk(node.value) if isinstance(e, ast.Constant)]
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                        isinstance(node.value, ast.Name) and node.value.id == "self":
                    names = [node.attr]
                hits += [f"{rel(p)}:{node.lineno}: {cls.name}.{n}" for n in names if n in CRYPTIC]
    assert not hits, "attribute names that do not explain themselves:\n" + "\n".join(sorted(set(hits)))


# ----------------------------------------------------------------------------- words
OUTSIDE_WORDS = re.compile(r"issue\s*#?\d|\bthe (project )?spec\b|(?<![\w&])#\d{1,3}\b", re.IGNORECASE)


def _text_files():
    out = [p for d in ("minitrans", "kernels", "experiments", "docs") for p in (ROOT / d).rglob("*")
           if p.is_file() and p.suffix in (".py", ".md", ".txt", ".rst", ".toml", ".cfg", ".sh", ".yml", ".yaml")]
    return sorted(out) + [ROOT / "README.md"]


def test_no_words_pointing_outside_the_repository():
    hits = []
    for p in _text_files():
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for m in OUTSIDE_WORDS.finditer(line):
                hits.append(f"{rel(p)}:{i}: {m.group()!r} in {line.strip()[:90]!r}")
    assert not hits, "\n".join(hits)


def test_the_outside_words_pattern_can_fail():
    for s in ("see issue 10", "Issue #4", "as the project spec says", "fixed in #12"):
        assert OUTSIDE_WORDS.search(s), s
    for s in ("# 2 threads", "color '#ffffff'", "spec.shape", "inspect", "a specification"):
        assert not OUTSIDE_WORDS.search(s), s


# ----------------------------------------------------------------------------- import side effects
_SIDE_EFFECTS = """
import json, os
before = dict(os.environ)
import numba
layer = numba.config.THREADING_LAYER
import minitrans, minitrans.nn, minitrans.optim
after = dict(os.environ)
changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
print(json.dumps({"env": changed, "layer": [layer, numba.config.THREADING_LAYER]}))
"""


def test_importing_minitrans_changes_no_global_setting():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_THREADING", "OMP_", "MKL_"))}
    r = subprocess.run([sys.executable, "-c", _SIDE_EFFECTS], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["env"] == [], f"import minitrans changed the environment variables {out['env']}"
    assert out["layer"][0] == out["layer"][1], f"import minitrans changed numba's threading layer {out['layer']}"
