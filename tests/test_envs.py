"""The conda environments list every third-party package the code imports."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = {"cpu": REPO / "envs" / "cpu.yaml", "gpu": REPO / "envs" / "gpu.yaml"}
SCANNED = ("lumbar_core", "workflow_scripts")

# Import name -> accepted conda-forge package names.
CONDA_NAMES = {
    "skimage": {"scikit-image"},
    "sklearn": {"scikit-learn"},
    "yaml": {"pyyaml"},
    "PIL": {"pillow"},
    "matplotlib": {"matplotlib", "matplotlib-base"},
    "cv2": {"opencv", "py-opencv"},
    "torch": {"pytorch"},
    "dateutil": {"python-dateutil"},
    "SimpleITK": {"simpleitk"},
}
# First-party code, and Snakemake, which puts its own package on a rule script's path.
NOT_FROM_CONDA = {"lumbar_core", "snakemake"}


def top_level_imports(root: Path) -> dict:
    """Top-level names of absolute imports in the .py files under ``root`` -> files."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def third_party(imports: dict) -> dict:
    return {
        name: files for name, files in imports.items()
        if name not in sys.stdlib_module_names and name not in NOT_FROM_CONDA
    }


def conda_packages(env_file: Path) -> set:
    """Package names (no channel, version or build) of an environment file."""
    env = yaml.safe_load(env_file.read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            spec = dep.split("::")[-1].strip()
            names.add(re.match(r"[A-Za-z0-9_.\-]+", spec).group(0).lower())
    return names


def missing(imports: dict, packages: set) -> list:
    return sorted(
        name for name in imports
        if not (CONDA_NAMES.get(name, {name.lower()}) & packages)
    )


@pytest.fixture(scope="module")
def code_imports():
    imports = {}
    for folder in SCANNED:
        if (REPO / folder).is_dir():
            for name, files in top_level_imports(REPO / folder).items():
                imports.setdefault(name, set()).update(files)
    return third_party(imports)


def test_scanner_finds_imports_on_a_tiny_tree(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import os\nimport skimage.filters as f\nfrom yaml import safe_load\n"
        "from . import sibling\nfrom lumbar_core.io import read_json\n"
        "def later():\n    import sklearn.metrics\n"
    )
    found = third_party(top_level_imports(tmp_path))
    assert set(found) == {"skimage", "yaml", "sklearn"}
    assert missing(found, {"scikit-image", "pyyaml"}) == ["sklearn"]
    assert missing(found, {"scikit-image", "pyyaml", "scikit-learn"}) == []


def test_package_names_are_read_without_versions_or_builds(tmp_path):
    env = tmp_path / "env.yaml"
    env.write_text(
        "channels: [conda-forge]\ndependencies:\n  - python=3.11\n"
        "  - \"tensorflow[version='>=2.16',build='cpu*']\"\n  - conda-forge::numpy>=1.26\n"
        "  - pip\n  - pip: [something]\n"
    )
    assert conda_packages(env) == {"python", "tensorflow", "numpy", "pip"}


# Imports an environment may lack: the code imports TensorFlow and JAX only where they are
# Keras' backend (or, for JAX, after checking that it is installed). The CPU environment
# runs Keras on TensorFlow, the GPU environment Keras on JAX.
NOT_NEEDED = {"cpu": {"jax"}, "gpu": {"tensorflow"}}


@pytest.mark.parametrize("env", sorted(ENVS))
def test_every_imported_package_is_in_the_env(code_imports, env):
    assert code_imports, "no imports found: are lumbar_core/ and workflow_scripts/ there?"
    packages = conda_packages(ENVS[env])
    lacking = set(missing(code_imports, packages)) - NOT_NEEDED[env]
    assert not lacking, {name: sorted(code_imports[name]) for name in lacking}


@pytest.mark.parametrize("env", sorted(ENVS))
def test_channels_and_python(env):
    spec = yaml.safe_load(ENVS[env].read_text())
    assert spec["channels"] == ["conda-forge", "nodefaults"]
    assert "python=3.11" in spec["dependencies"]
    assert not any(isinstance(dep, dict) for dep in spec["dependencies"])  # no pip section


def test_cpu_env_has_tensorflow_cpu_and_gpu_env_jax_cuda():
    """CPU: TensorFlow's CPU build. GPU: Keras on JAX with the CUDA 12 jaxlib, the same
    other packages."""
    cpu = yaml.safe_load(ENVS["cpu"].read_text())["dependencies"]
    gpu = yaml.safe_load(ENVS["gpu"].read_text())["dependencies"]
    tf_cpu = [d for d in cpu if d.startswith("tensorflow")]
    assert len(tf_cpu) == 1 and "build='cpu*'" in tf_cpu[0]
    assert not [d for d in gpu if d.startswith("tensorflow")]
    jaxlib = [d for d in gpu if "jaxlib" in d]
    assert len(jaxlib) == 1 and "build='cuda12*'" in jaxlib[0]
    assert conda_packages(ENVS["cpu"]) - {"tensorflow"} == conda_packages(ENVS["gpu"]) - {
        "jax", "jaxlib"}
