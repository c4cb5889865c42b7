"""The package as users install it: a wheel with its recipes and its license."""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import tf_distill
from tf_distill import catalog
from tf_distill.losses import registry

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_recipes_are_package_data_and_examples_links_to_them():
    package = pathlib.Path(tf_distill.__file__).resolve().parent
    assert pathlib.Path(str(catalog.RECIPES_DIR)).resolve() == package / "recipes"
    assert (ROOT / "examples" / "recipes").resolve() == package / "recipes"
    assert registry.describe_loss("kd")["recipe"] == str(package / "recipes" / "kd.yaml")


def test_the_license_and_the_changelog_are_there():
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_wheel_holds_every_module_every_recipe_and_the_license(tmp_path):
    # A copy, so that building leaves no build/ or egg-info in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "tf_distill", source / "tf_distill",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "tf_distill").rglob("*.py")}
    assert modules <= names
    recipes = {f"tf_distill/recipes/{path.name}"
               for path in (ROOT / "tf_distill" / "recipes").glob("*.yaml")}
    assert "tf_distill/recipes/kd.yaml" in recipes and recipes <= names
    assert any(name.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in name
               for name in names)
    assert os.path.basename(str(wheel)).startswith(f"tf_distill-{tf_distill.__version__}-")
