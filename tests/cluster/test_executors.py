"""Every executor's backend is the written `Backend` interface, member for member, and nothing the
orchestration calls lies outside it."""

import inspect
import re
from pathlib import Path

import pytest

from lvjob.cluster import executors
from lvjob.cluster.executors import BACKENDS, Backend

ORCHESTRATE = Path(executors.__file__).parents[1] / "orchestrate"
MEMBERS = {n for n in vars(Backend) if not n.startswith("_")} | set(Backend.__annotations__)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_backend_has_every_member_of_the_interface_with_its_signature(name):
    cls = BACKENDS[name]
    for member in MEMBERS:
        assert hasattr(cls, member), f"{cls.__name__} lacks {member}"
        if callable(getattr(Backend, member, None)):
            assert inspect.signature(getattr(cls, member)).parameters.keys() == \
                inspect.signature(getattr(Backend, member)).parameters.keys(), member


def test_the_orchestration_calls_only_members_of_the_interface_on_a_backend():
    called = {m for f in ORCHESTRATE.glob("*.py") for m in re.findall(r"backend(?:\(\))?\.(\w+)", f.read_text())}
    assert called and called <= MEMBERS, called - MEMBERS
