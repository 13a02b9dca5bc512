"""What the installed package carries besides code: the type stub of the compiled module (checked
against the module itself), the typing marker, and one version everywhere."""

import ast
import importlib.metadata
import pathlib
import re
import subprocess
import sys

import fusedrnn
from fusedrnn import _core

PKG = pathlib.Path(fusedrnn.__file__).resolve().parent
# Names the stub declares that only a CUDA (or emulated-device) build defines.
CUDA_ONLY = {"DeviceArray", "CudaTimer", "cuda_synchronize", "cuda_forward", "cuda_backward",
             "cuda_optimizer_update", "cuda_add_into", "cuda_sum_squares", "cuda_zero"}


def _stub():
    """{function: parameter names}, {class: member names}, {attribute} of _core.pyi."""
    tree = ast.parse((PKG / "_core.pyi").read_text(encoding="utf-8"))
    functions, classes, attributes = {}, {}, set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = [a.arg for a in node.args.args + node.args.kwonlyargs]
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            attributes.add(node.target.id)
    return functions, classes, attributes


def _runtime_parameters(fn):
    """Parameter names from pybind11's signature line, 'name(a: T, b: U) -> R'."""
    first = fn.__doc__.splitlines()[0]
    inner = re.fullmatch(rf"{fn.__name__}\((.*)\) -> .*", first).group(1)
    return re.findall(r"(?:^|, )(\w+): ", inner)


def test_the_package_ships_its_typing_files():
    assert (PKG / "py.typed").is_file()
    assert (PKG / "_core.pyi").is_file()


def test_the_stub_declares_every_public_name_of_the_module():
    functions, classes, attributes = _stub()
    declared = set(functions) | set(classes) | attributes
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert public - declared == set(), "missing from python/fusedrnn/_core.pyi"
    extra = {n for n in declared - public if not n.startswith("_")}
    assert extra <= CUDA_ONLY, f"declared in _core.pyi but not in the module: {extra - CUDA_ONLY}"
    if _core.cuda_compiled:
        assert extra == set()


def test_the_stub_parameters_are_the_modules():
    functions, classes, _ = _stub()
    compiled = [n for n in dir(_core) if type(getattr(_core, n)).__name__ == "builtin_function_or_method"]
    assert len(compiled) >= 20
    for name in compiled:
        if name in functions or not name.startswith("_"):
            assert functions[name] == _runtime_parameters(getattr(_core, name)), name
    for name, members in classes.items():
        cls = getattr(_core, name, None)
        if cls is not None:
            public = {m for m in vars(cls) if not m.startswith("_")}
            assert public <= members, f"{name}: {public - members} missing from the stub"


def test_one_version_everywhere():
    version = importlib.metadata.version("fusedrnn")
    assert fusedrnn.__version__ == version == fusedrnn.build_info()["version"]
    pyproject = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():  # run from the source tree: the one place the version is written
        written = re.search(r'^version = "([^"]+)"$', pyproject.read_text(encoding="utf-8"), re.M)
        assert written.group(1) == version


def test_missing_metadata_does_not_break_the_import():
    code = ("import importlib.metadata as m\n"
            "def version(name):\n"
            "    raise m.PackageNotFoundError(name)\n"
            "m.version = version\n"
            "import fusedrnn\n"
            "print(fusedrnn.__version__, fusedrnn.build_info()['version'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0+unknown", "0+unknown"]
