"""PEP 517 / PEP 660 build backend of subinterp.

CMake builds the `subinterp._subinterp` extension module and the core library
it links (libsubinterp.so.X.Y); this file packs both, with the `subinterp`
package from python/subinterp, into a wheel. The two sit side by side in the
package folder, where the extension's $ORIGIN run path finds the library. It uses only the
standard library, so `pip install .` works with no package index and no
setuptools (pyproject.toml: `requires = []`).

Knobs:
  SUBINTERP_CMAKE_ARGS        extra CMake arguments (shell syntax), also
                              `pip install . -C cmake-args="-DX=1 -DY=2"`
  SUBINTERP_WHEEL_BUILD_DIR   keep the CMake build there (incremental rebuilds)
                              instead of in a temporary folder
  CMAKE_BUILD_PARALLEL_LEVEL  build jobs (default: the number of CPUs)
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "python" / "subinterp"
MODULE_NAME = "_subinterp"
SERVER_MODULE_NAME = "_server"
# Fixed time stamp (the zip format's earliest) unless SOURCE_DATE_EPOCH says
# otherwise: the same sources give the same wheel.
ZIP_EPOCH = 315532800
SDIST_ENTRIES = (
    "CMakeLists.txt", "CMakePresets.json", "pyproject.toml", "README.md", "LICENSE",
    ".clang-format", "cmake", "include", "src", "python", "tools/build_backend",
    "tests", "bench", "examples", "docs", "scripts",
)
SKIP_PARTS = {"__pycache__", ".git", "build", "dist", ".mypy_cache", ".pytest_cache"}

__all__ = [
    "build_wheel", "build_sdist", "build_editable",
    "get_requires_for_build_wheel", "get_requires_for_build_sdist",
    "get_requires_for_build_editable",
    "prepare_metadata_for_build_wheel", "prepare_metadata_for_build_editable",
]


# --- project metadata -------------------------------------------------------

def _project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _dist_info_name(project: dict) -> str:
    return f"{_normalize(project['name'])}-{project['version']}.dist-info"


def _normalize(name: str) -> str:
    return "_".join(part for part in name.replace("-", "_").replace(".", "_").split("_") if part)


def _metadata(project: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
    ]
    if "description" in project:
        lines.append(f"Summary: {project['description']}")
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    lines += [f"Requires-Dist: {d}" for d in project.get("dependencies", [])]
    for label, url in project.get("urls", {}).items():
        lines.append(f"Project-URL: {label}, {url}")
    text = "\n".join(lines) + "\n"
    readme = project.get("readme")
    if isinstance(readme, str) and (ROOT / readme).is_file():
        kind = "text/markdown" if readme.endswith(".md") else "text/plain"
        body = (ROOT / readme).read_text(encoding="utf-8")
        text += f"Description-Content-Type: {kind}\n\n{body}"
    return text


def _entry_points(project: dict) -> str | None:
    sections = [("console_scripts", project.get("scripts", {})),
                ("gui_scripts", project.get("gui-scripts", {}))]
    sections += list(project.get("entry-points", {}).items())
    text = ""
    for section, entries in sections:
        if entries:
            text += f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
    return text or None


def _wheel_tag() -> str:
    """cp312-cp312-linux_x86_64 for the python running this backend."""
    if sys.implementation.name != "cpython":
        raise RuntimeError("subinterp builds only for CPython")
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    abi = py + getattr(sys, "abiflags", "")
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_").replace(" ", "_")
    return f"{py}-{abi}-{platform}"


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"


# --- CMake ------------------------------------------------------------------

def _cmake_args(config_settings: dict | None) -> list[str]:
    args = shlex.split(os.environ.get("SUBINTERP_CMAKE_ARGS", ""))
    value = (config_settings or {}).get("cmake-args", [])
    for item in [value] if isinstance(value, str) else value:
        args += shlex.split(item)
    return args


def _run(cmd: list[str]) -> None:
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)


def _build_module(build_dir: Path, config_settings: dict | None) -> list[Path]:
    """Configures and builds _subinterp in build_dir.

    Returns the files for the package folder: the extension, then the core
    library under its SONAME (none when the core is built static).
    """
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeError("building subinterp needs CMake >= 3.21 and a C++20 compiler "
                           "(Debian: apt-get install cmake ninja-build g++)")
    configure = [cmake, "-S", str(ROOT), "-B", str(build_dir),
                 "-DCMAKE_BUILD_TYPE=Release",
                 f"-DPython_EXECUTABLE={sys.executable}",
                 "-DSUBINTERP_TESTS=OFF", "-DSUBINTERP_BENCH=OFF",
                 "-DSUBINTERP_EXAMPLES=OFF", "-DSUBINTERP_INSTALL=OFF"]
    if not (build_dir / "CMakeCache.txt").exists() and shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    _run(configure + _cmake_args(config_settings))
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    cache = (build_dir / "CMakeCache.txt").read_text(errors="replace")
    targets = [MODULE_NAME]
    if re.search(r"^SUBINTERP_SERVER:BOOL=ON$", cache, re.M):
        targets.append(SERVER_MODULE_NAME)
    _run([cmake, "--build", str(build_dir), "--target", *targets, "--parallel", jobs])
    package = build_dir / "python" / "subinterp"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    modules = [package / (name + suffix) for name in targets]
    for built in modules:
        if not built.is_file():
            raise RuntimeError(f"CMake did not produce {built}")
    # The SONAME links (libsubinterp.so.X.Y, libsubinterp_server.so.X.Y) name
    # what the extensions need.
    libraries = sorted(p for p in package.glob("lib*.so.*")
                       if re.fullmatch(r"lib\w+\.so\.\d+\.\d+", p.name))
    return modules + libraries


def _package_files() -> list[tuple[Path, str]]:
    """(file, path in the wheel) for every file of the subinterp package."""
    if not (PACKAGE_DIR / "__init__.py").is_file():
        raise RuntimeError(f"{PACKAGE_DIR}/__init__.py is missing")
    files = []
    for path in sorted(PACKAGE_DIR.rglob("*")):
        rel = path.relative_to(PACKAGE_DIR.parent)
        if path.is_file() and not SKIP_PARTS & set(rel.parts) and path.suffix not in (".pyc", ".pyo"):
            files.append((path, rel.as_posix()))
    return files


# --- archives ---------------------------------------------------------------

def _epoch() -> int:
    return max(int(os.environ.get("SOURCE_DATE_EPOCH", ZIP_EPOCH)), ZIP_EPOCH)


def _zip_time() -> tuple[int, ...]:
    return time.gmtime(_epoch())[:6]


class _WheelWriter:
    """Writes a wheel: each file is hashed into RECORD as it is added."""

    def __init__(self, path: Path, dist_info: str):
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self._dist_info = dist_info
        self._record: list[str] = []

    def add(self, arcname: str, data: bytes, executable: bool = False) -> None:
        info = zipfile.ZipInfo(arcname, date_time=_zip_time())
        info.external_attr = (0o100755 if executable else 0o100644) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self._zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self._record.append(f"{arcname},sha256={digest},{len(data)}")

    def add_file(self, arcname: str, path: Path) -> None:
        self.add(arcname, path.read_bytes(), executable=os.access(path, os.X_OK))

    def close(self) -> None:
        record = f"{self._dist_info}/RECORD"
        lines = self._record + [f"{record},,"]
        info = zipfile.ZipInfo(record, date_time=_zip_time())
        info.external_attr = 0o100644 << 16
        self._zip.writestr(info, "\n".join(lines) + "\n")
        self._zip.close()


def _write_dist_info(writer: _WheelWriter, project: dict, dist_info: str, tag: str) -> None:
    writer.add(f"{dist_info}/METADATA", _metadata(project).encode())
    wheel = ("Wheel-Version: 1.0\nGenerator: subinterp_build\n"
             f"Root-Is-Purelib: false\nTag: {tag}\n")
    writer.add(f"{dist_info}/WHEEL", wheel.encode())
    entry_points = _entry_points(project)
    if entry_points:
        writer.add(f"{dist_info}/entry_points.txt", entry_points.encode())


def _wheel(wheel_directory: str, fill) -> str:
    project = _project()
    tag = _wheel_tag()
    dist_info = _dist_info_name(project)
    name = f"{_normalize(project['name'])}-{project['version']}-{tag}.whl"
    out = Path(wheel_directory) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _WheelWriter(out, dist_info)
    try:
        fill(writer)
        _write_dist_info(writer, project, dist_info, tag)
    finally:
        writer.close()
    return name


# --- PEP 517 hooks ----------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    project = _project()
    dist_info = Path(metadata_directory) / _dist_info_name(project)
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(_metadata(project), encoding="utf-8")
    (dist_info / "WHEEL").write_text(
        "Wheel-Version: 1.0\nGenerator: subinterp_build\n"
        f"Root-Is-Purelib: false\nTag: {_wheel_tag()}\n", encoding="utf-8")
    entry_points = _entry_points(project)
    if entry_points:
        (dist_info / "entry_points.txt").write_text(entry_points, encoding="utf-8")
    return dist_info.name


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    def fill(writer: _WheelWriter) -> None:
        for path, arcname in _package_files():
            writer.add_file(arcname, path)
        def add_built(build_dir: Path) -> None:
            for path in _build_module(build_dir, config_settings):
                # read_bytes() follows the SONAME link to the library itself.
                writer.add_file(f"subinterp/{path.name}", path)

        keep = os.environ.get("SUBINTERP_WHEEL_BUILD_DIR")
        if keep:
            add_built(Path(keep).resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="subinterp-wheel-") as tmp:
                add_built(Path(tmp))

    return _wheel(wheel_directory, fill)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """A wheel whose .pth puts python/ and a kept build of _subinterp on sys.path.

    Python edits take effect at once; after a C++ edit, run the install again
    (or `cmake --build build/editable-py3.X`).
    """
    build_dir = ROOT / "build" / f"editable-py{_python_tag()}"

    def fill(writer: _WheelWriter) -> None:
        _package_files()  # fails early if the package is missing
        module = _build_module(build_dir, config_settings)[0]
        # <build>/python/subinterp holds the extension: the package extends
        # its __path__ to it (python/subinterp/__init__.py).
        pth = f"{ROOT / 'python'}\n{module.parent.parent}\n"
        writer.add("_subinterp_editable.pth", pth.encode())

    return _wheel(wheel_directory, fill)


def build_sdist(sdist_directory, config_settings=None):
    project = _project()
    base = f"{_normalize(project['name'])}-{project['version']}"
    out = Path(sdist_directory) / f"{base}.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = _epoch()
        info.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
        return info

    with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        pkg_info = tarfile.TarInfo(f"{base}/PKG-INFO")
        data = _metadata(project).encode()
        pkg_info.size = len(data)
        tar.addfile(normalize(pkg_info), io.BytesIO(data))
        for entry in SDIST_ENTRIES:
            for path in _tree(ROOT / entry):
                rel = path.relative_to(ROOT).as_posix()
                tar.add(path, arcname=f"{base}/{rel}", recursive=False, filter=normalize)
    return out.name


def _tree(top: Path) -> list[Path]:
    if top.is_file():
        return [top]
    if not top.is_dir():
        return []
    files = []
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(ROOT)
        if path.is_file() and not SKIP_PARTS & set(rel.parts) and path.suffix != ".pyc":
            files.append(path)
    return files
