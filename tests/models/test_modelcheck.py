"""Staged model folders: what `lvjob check-model` / `fetch-model` accept and refuse, on local folders."""

import fnmatch
import json
import math
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lvjob.cli import main
from lvjob.models.modelcheck import NEEDED_FILES, expected_shapes, problems
from lvjob.models.loading import ensure_tiny_model
from lvjob.models.registry import config_dict
from lvjob.data.tokenizer import ensure_tokenizer


@pytest.fixture
def folder(tmp_path):
    """The tiny model as save_pretrained wrote it, with the offline tokenizer's files beside it:
    what a staged model folder looks like, at the tiny size."""
    dest = tmp_path / "model"
    shutil.copytree(ensure_tiny_model(), dest)
    shutil.copytree(ensure_tokenizer(), dest, dirs_exist_ok=True)
    return dest


def edit_config(folder, **values):
    path = folder / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | values))


def edit_weights(folder, change):
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_a_saved_tiny_model_with_the_offline_tokenizer_has_no_problems(folder):
    assert problems(folder, "tiny") == []


def test_a_missing_folder_is_one_problem_naming_it(tmp_path):
    assert problems(tmp_path / "nowhere", "tiny") == [
        f"{tmp_path / 'nowhere'}: no such folder; valid: a folder holding config.json, *.safetensors and the "
        f"tokenizer files (lvjob fetch-model --to {tmp_path / 'nowhere'} makes one)"]


def test_a_folder_without_weights_is_refused_naming_it(folder):
    (folder / "model.safetensors").unlink()
    assert problems(folder, "tiny") == [f"{folder}: no *.safetensors weights; valid: model.safetensors (or the shards "
                                        f"its index names) of tiny (tiny is built by lvjob prepare)"]


def test_a_folder_without_config_is_refused_naming_the_file(folder):
    (folder / "config.json").unlink()
    assert problems(folder, "tiny") == [f"{folder}/config.json: missing; valid: the model's config.json (tiny is built by lvjob prepare)"]


def test_another_architecture_is_refused_naming_architectures_and_model_type(folder):
    edit_config(folder, architectures=["LlamaForCausalLM"], model_type="llama")
    assert problems(folder, "tiny") == [
        f"{folder}/config.json: architectures is ['LlamaForCausalLM']; tiny needs ['Qwen2ForCausalLM']",
        f"{folder}/config.json: model_type is 'llama'; tiny needs 'qwen2'"]


def test_a_wrong_size_in_the_config_is_refused_naming_the_key_and_the_valid_value(folder):
    edit_config(folder, num_key_value_heads=4)
    assert problems(folder, "tiny") == [f"{folder}/config.json: num_key_value_heads is 4; tiny has 2"]


def test_the_tiny_model_checked_as_qwen25_reports_its_sizes_and_a_bounded_list_of_tensors(folder):
    found = problems(folder, "qwen2.5-0.5b")
    assert f"{folder}/config.json: hidden_size is 64; qwen2.5-0.5b has 896" in found
    assert any("264 of the 290 tensors of qwen2.5-0.5b are missing" in line for line in found)
    assert len(found) <= 4 + 1 + 5 + 1  # four sizes, the missing tensors, five shapes and a count


def test_a_truncated_safetensors_file_is_refused_as_unreadable(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    [line] = problems(folder, "tiny")
    assert line.startswith(f"{path}: not a readable safetensors file") and "delete it and run lvjob fetch-model again" in line


def test_a_file_that_is_not_safetensors_is_refused(folder):
    (folder / "model.safetensors").write_bytes(b"<html>rate limited</html>")
    [line] = problems(folder, "tiny")
    assert line.startswith(f"{folder}/model.safetensors: not a readable safetensors file")


def test_a_missing_tensor_is_refused_naming_it(folder):
    edit_weights(folder, lambda t: t.pop("model.norm.weight"))
    assert problems(folder, "tiny") == [f"{folder}: 1 of the 26 tensors of tiny are missing from the weights, "
                                        f"e.g. model.norm.weight; valid: the complete checkpoint"]


def test_a_tensor_of_the_wrong_shape_is_refused_naming_its_shape_and_file(folder):
    edit_weights(folder, lambda t: t.update({"model.layers.1.self_attn.k_proj.bias": np.zeros(64, np.float32)}))
    assert problems(folder, "tiny") == [f"{folder}: tensor model.layers.1.self_attn.k_proj.bias is (64,) in "
                                        f"model.safetensors, tiny needs (32,)"]


def test_a_shard_named_by_the_index_but_absent_is_refused(folder):
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00002.safetensors"}}))
    assert problems(folder, "tiny") == [f"{folder}/model-00002.safetensors: missing; model.safetensors.index.json "
                                        f"names it as a shard of the weights"]


def test_a_folder_without_tokenizer_files_is_refused(folder):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).unlink()
    assert problems(folder, "tiny") == [f"{folder}: no tokenizer files; valid: tokenizer.json (or vocab.json and "
                                        f"merges.txt) and tokenizer_config.json of Qwen/Qwen2.5-0.5B-Instruct"]


def test_a_tokenizer_with_other_ids_for_digits_is_refused(folder):
    path = folder / "tokenizer.json"
    tok = json.loads(path.read_text())
    vocab = tok["model"]["vocab"]
    vocab["0"], vocab["1"] = vocab["1"], vocab["0"]
    path.write_text(json.dumps(tok))
    found = problems(folder, "tiny")
    assert f"{folder}: its tokenizer encodes '0' as [16], the offline Qwen2.5 tokenizer as [15]; valid: the " \
           f"tokenizer files of Qwen/Qwen2.5-0.5B-Instruct" in found
    assert len(found) == 4  # '0', '1', the whole alphabet, the series


def test_expected_tensors_of_qwen25_05b_hold_its_published_parameter_count():
    assert sum(math.prod(s) for s in expected_shapes(config_dict("qwen2.5-0.5b")).values()) == 494_032_768


def test_the_download_takes_the_files_transformers_reads_and_no_other_weight_format(folder):
    def wanted(name):
        return any(fnmatch.fnmatch(name, p) for p in NEEDED_FILES)

    assert all(wanted(p.name) for p in folder.iterdir())
    assert not any(wanted(n) for n in ("pytorch_model.bin", "model.pt", "README.md", "LICENSE", "onnx/model.onnx"))


# --- the commands ----------------------------------------------------------------------------------


def test_check_model_prints_the_profiles_model_path_line_for_a_good_folder(folder, capsys):
    assert main(["check-model", str(folder), "--model", "tiny"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"model_path: {folder.resolve()}"


def test_check_model_exits_1_with_each_problem_on_its_own_line(folder, capsys):
    edit_config(folder, model_type="llama", num_key_value_heads=4)
    assert main(["check-model", str(folder), "--model", "tiny"]) == 1
    err = capsys.readouterr()
    assert err.err.splitlines()[:2] == [f"{folder}/config.json: model_type is 'llama'; tiny needs 'qwen2'",
                                        f"{folder}/config.json: num_key_value_heads is 4; tiny has 2"]
    assert "model_path" not in err.out


def test_check_model_refuses_an_unknown_model_name(folder, capsys):
    assert main(["check-model", str(folder), "--model", "gpt2"]) == 2
    assert "--model 'gpt2': unknown model; valid: qwen2.5-0.5b" in capsys.readouterr().err


def test_fetch_model_without_the_hub_fails_in_one_line_naming_the_repo(tmp_path, capsys):
    # The tests run with HF_HUB_OFFLINE=1 (conftest): the download itself cannot be tested here.
    assert main(["fetch-model", "--to", str(tmp_path / "m")]) == 1
    out = capsys.readouterr()
    [line] = out.err.splitlines()
    assert line.startswith(f"lvjob fetch-model: error: could not download Qwen/Qwen2.5-0.5B-Instruct into {tmp_path / 'm'}")
    assert "model_path" not in out.out
