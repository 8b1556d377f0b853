"""The package's import layers (pyproject.toml, [tool.importlinter]) hold, and an upward import breaks them by name."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package in `root`, as installed beside this Python (import-linter, pinned)."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_every_module_imports_only_the_layers_below_it():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_fails_the_contract_naming_both_modules(tmp_path):
    shutil.copytree(ROOT / "lvjob", tmp_path / "lvjob", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "lvjob" / "data" / "dataset.py", "a") as f:
        f.write("\nfrom lvjob import cli  # an upward import: data is below the command line\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "lvjob.data is not allowed to import lvjob.cli" in result.stdout
    assert "lvjob.data.dataset -> lvjob.cli" in result.stdout


def test_the_package_is_its_subpackages_and_no_module_is_over_400_lines():
    package = ROOT / "lvjob"
    top = sorted(p.name for p in package.iterdir() if p.suffix == ".py")
    assert top == ["__init__.py", "__main__.py"]
    assert all((p / "__init__.py").exists() for p in package.iterdir() if p.is_dir() and p.name != "__pycache__")
    long = {str(p.relative_to(ROOT)): n for p in package.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
