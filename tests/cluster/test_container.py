"""The Apptainer definition, read with the `spython` parser (no Apptainer on the CI machine)."""

import re

import pytest
from helpers import ROOT

DEF = ROOT / "containers" / "lvjob.def"


@pytest.fixture(scope="module")
def recipe():
    from spython.main.parse.parsers import SingularityParser

    return SingularityParser(str(DEF)).recipe["spython-base"]


def test_image_is_built_on_a_cuda_pytorch_base(recipe):
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-(runtime|devel)", recipe.fromHeader)


def test_every_copied_path_exists_in_the_project(recipe):
    sources = [line.split()[0] for line in recipe.files]
    assert {"lvjob", "pyproject.toml", "requirements.txt"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"%files copies {src}, which the project does not have"


def test_post_installs_pinned_torch_requirements_and_the_project(recipe):
    install = "\n".join(recipe.install)
    makefile_torch = re.search(r"pip install --quiet (torch==[\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert f"pip install --no-cache-dir {makefile_torch}" in install
    assert "-r /opt/lvjob/requirements.txt" in install
    assert "--no-deps /opt/lvjob" in install
    assert "lvjob prepare" in install  # the tokenizer is built into the image, offline


def test_runscript_is_lvjob(recipe):
    assert recipe.cmd.strip() == 'exec lvjob "$@"'


def test_environment_keeps_jobs_offline(recipe):
    assert "HF_HUB_OFFLINE=1" in recipe.environ


def test_image_self_test_loads_the_offline_tokenizer_and_checks_its_ids():
    # spython keeps %test as a script reference; the section is read from the file itself.
    section = DEF.read_text().split("%test", 1)[1]
    assert "load_tokenizer().encode('0.571,0.772;'" in section and "[15, 13, 20, 22, 16, 11" in section
