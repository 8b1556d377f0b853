from dataclasses import dataclass, field

import pytest

from lvjob.core.config import ConfigError, non_default
from lvjob.study.spec import Study, load_study


def write(tmp_path, text):
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


def test_an_empty_file_gives_the_spec_defaults(tmp_path):
    s = load_study(write(tmp_path, ""))
    assert s == Study()
    assert (s.default.rank, s.default.lr, s.default.context, s.default.steps) == (4, 1e-5, 512, 5000)
    assert s.stage1.ranks == (2, 4, 8) and s.stage2.contexts == (128, 512, 768)


def test_unknown_key_is_refused_naming_file_and_key(tmp_path):
    p = write(tmp_path, "stage1:\n  rank: [2, 4]\n")
    with pytest.raises(ConfigError, match=r"study\.yaml.*unknown key stage1\.'rank'.*ranks"):
        load_study(p)


def test_wrong_type_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"default\.steps: expected an integer, got 'many'"):
        load_study(write(tmp_path, "default: {steps: many}\n"))


@pytest.mark.parametrize(
    "text, key, valid",
    [
        ("default: {rank: 0}", "rank", "integers >= 1"),
        ("default: {lr: 0}", "lr", "lr > 0"),
        ("stage1: {lrs: [1.0e-4, -1]}", "stage1.lrs", "numbers > 0"),
        ("training: {batch_size: 0}", "training.batch_size", "integers >= 1"),
        ("evaluation: {series: 500}", "evaluation.series", "100 test systems"),
        ("model: gpt2", "model", "qwen2.5-0.5b"),
    ],
)
def test_out_of_range_value_is_refused_with_the_valid_range(tmp_path, text, key, valid):
    with pytest.raises(ConfigError) as e:
        load_study(write(tmp_path, text + "\n"))
    assert key in str(e.value) and valid in str(e.value)


def test_yaml_exponent_without_a_dot_is_read_as_a_number(tmp_path):
    assert load_study(write(tmp_path, "default: {lr: 1e-5}\n")).default.lr == 1e-5


def test_overrides_apply_after_the_file(tmp_path):
    s = load_study(write(tmp_path, "final: {steps: 10}\n"), overrides=["final.steps=20", "stage1.lrs=[1e-3]"])
    assert s.final.steps == 20 and s.stage1.lrs == (1e-3,)


def test_malformed_override_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_study(write(tmp_path, ""), overrides=["final.steps"])


def test_a_named_scale_applies_its_overrides(tmp_path):
    p = write(tmp_path, "model: qwen2.5-0.5b\nscales:\n  demo: {model: tiny, default.steps: 60}\n")
    s = load_study(p, scale="demo")
    assert (s.model, s.default.steps, s.scale) == ("tiny", 60, "demo")
    assert load_study(p).model == "qwen2.5-0.5b"


def test_an_unknown_scale_is_refused_listing_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="no scale 'huge'.*full, demo"):
        load_study(write(tmp_path, "scales:\n  demo: {model: tiny}\n"), scale="huge")


def test_invalid_yaml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="study.yaml: not valid YAML"):
        load_study(write(tmp_path, "default: {rank: [\n"))


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_study(tmp_path / "nope.yaml")


@dataclass
class Inner:
    rate: float = 0.1


@dataclass
class Old:
    steps: int = 20
    inner: Inner = field(default_factory=Inner)


@dataclass
class New(Old):
    warmup: int = 0  # a setting added to the code later, with its default


def test_a_key_of_settings_leaves_out_those_at_their_default_so_a_setting_added_later_changes_no_key():
    assert non_default(Old(steps=5, inner=Inner(0.2))) == non_default(New(steps=5, inner=Inner(0.2))) == \
        {"steps": 5, "inner": {"rate": 0.2}}
    assert non_default(New(warmup=3)) == {"warmup": 3} and non_default(Old()) == {}
