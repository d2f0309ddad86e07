"""Config loading: _base_ inheritance, --opts, schema checks and user errors."""
import textwrap
from pathlib import Path

import pytest

from ecgnet.build import resolve_config
from ecgnet.config import load_config, merge, parse_opts
from ecgnet.registry import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tree(tmp_path):
    write(tmp_path / "base" / "data.yaml", """
        data: {type: synthetic, num_records: 100, fs: 100}
        train: {epochs: 7, batch_size: 16}
    """)
    write(tmp_path / "base" / "model.yaml", """
        model: {type: cnn1d, widths: [8, 16], dropout: 0.1}
    """)
    return write(tmp_path / "exp" / "child.yaml", """
        _base_: [../base/data.yaml, ../base/model.yaml]
        model: {dropout: 0.3}
        train: {epochs: 3}
        loss: {type: bce}
        schedule: {cooldown_epochs: 1}
    """)


def test_base_inheritance_deep_merges(tree):
    cfg = load_config(tree)
    assert cfg["model"] == {"type": "cnn1d", "widths": [8, 16], "dropout": 0.3}
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["batch_size"] == 16
    assert cfg["train"]["monitor"] == "val/macro_auroc"     # schema default filled in
    assert cfg["name"] == "child"


def test_base_as_single_string(tmp_path):
    write(tmp_path / "a.yaml", "data: {type: synthetic}\nmodel: {type: cnn1d}\n")
    cfg = load_config(write(tmp_path / "b.yaml", "_base_: a.yaml\nseed: 3\n"))
    assert cfg["seed"] == 3 and cfg["data"]["type"] == "synthetic"


def test_opts_override_typed_as_yaml(tree):
    cfg = load_config(tree, ["train.epochs=5", "model.widths=[4, 8, 16]", "optimizer.lr=1e-4",
                             "thresholds.tune=false"])
    assert cfg["train"]["epochs"] == 5
    assert cfg["model"]["widths"] == [4, 8, 16]
    assert cfg["thresholds"]["tune"] is False
    assert resolve_config(cfg)["optimizer"]["lr"] == pytest.approx(1e-4)


def test_on_off_settings_accept_yaml_booleans(tree):
    assert load_config(tree, ["train.progress=off"])["train"]["progress"] == "off"
    assert load_config(tree, ["train.progress=on"])["train"]["progress"] == "on"


def test_lists_replace_and_delete_replaces_dicts():
    base = {"model": {"type": "cnn1d", "widths": [1, 2, 3], "dropout": 0.1}}
    assert merge(base, {"model": {"widths": [9]}})["model"]["widths"] == [9]
    assert merge(base, {"model": {"_delete_": True, "type": "resnet1d"}})["model"] == {"type": "resnet1d"}
    # switching a component's type drops the old type's settings
    assert merge(base, {"model": {"type": "resnet1d"}})["model"] == {"type": "resnet1d"}


def test_resolve_fills_component_defaults(tree):
    cfg = resolve_config(load_config(tree))
    assert cfg["model"]["hidden"] == 128 and cfg["model"]["kernel_size"] == 3
    assert cfg["optimizer"]["type"] == "radam" and cfg["schedule"]["type"] == "warmup_cooldown"
    assert cfg["loss"] == {"type": "bce"}


@pytest.mark.parametrize("opts, message", [
    (["train.epohcs=3"], "train.epohcs: unknown setting; did you mean 'epochs'?"),
    (["trian.epochs=3"], "trian: unknown config section; did you mean 'train'?"),
    (["train.epochs=three"], "train.epochs: expected int, got 'three'"),
    (["train.amp=fp32"], "train.amp: 'fp32' is not allowed"),
    (["model.type=resnet"], "model.type: unknown model 'resnet'; did you mean 'resnet1d'?"),
    (["model.dropuot=0.5"], "model.dropuot: not a setting of model 'cnn1d'; did you mean 'dropout'?"),
    (["model.widths=16"], "model.widths: expected a list, got 16"),
    (["model.num_classes=3"], "model.num_classes: is set from the data"),
    (["loss.type=focall"], "loss.type: unknown loss 'focall'; did you mean 'focal'?"),
    (["optimizer.type=adamm"], "optimizer.type: unknown optimizer 'adamm'"),
    (["sampler.type=balanced"], "sampler.type: unknown sampler 'balanced'"),
    (["train.epochs"], "expected key.sub=value"),
])
def test_user_errors_name_the_key(tree, opts, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(load_config(tree, opts))
    assert message in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = write(tmp_path / "bad.yaml", "model: {type: cnn1d\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ is not valid YAML"):
        load_config(bad)
    missing_base = write(tmp_path / "c.yaml", "_base_: gone.yaml\n")
    with pytest.raises(ConfigError, match="c.yaml: _base_ 'gone.yaml' not found"):   # names the including file
        load_config(missing_base)


def test_missing_required_section(tmp_path):
    with pytest.raises(ConfigError, match="model: missing section"):
        load_config(write(tmp_path / "x.yaml", "data: {type: synthetic}\n"))
    cfg = load_config(write(tmp_path / "y.yaml", "data: {type: synthetic}\nmodel: {type: cnn1d}\n"))
    with pytest.raises(ConfigError, match="loss: missing section"):
        resolve_config(cfg)


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_schedule_longer_than_training_is_an_error(tree):
    with pytest.raises(ConfigError, match=r"warmup_epochs \+ cooldown_epochs \(1.0 \+ 1.0\) exceed train.epochs \(1\)"):
        resolve_config(load_config(tree, ["train.epochs=1"]))


def test_parse_opts_nests():
    assert parse_opts(["a.b.c=1", "a.d=[1, 2]", "e=null"]) == {"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}


SHIPPED = sorted(p for p in (REPO / "cfgs").rglob("*.yaml") if not {"_base_", "external"} & set(p.parts))
# fragments are checked through the configs that include them; external/ holds the data sections of
# external evaluations (evaluate --config), checked on top of a model's config below


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_resolve(path):
    resolve_config(load_config(path))


EXTERNAL = {"cfgs/external/mitdb_ds2.yaml": "cfgs/mitdb/cnn1d_inter_patient.yaml",
            "cfgs/external/demo_unseen_patients_250hz.yaml": "cfgs/demo.yaml",
            "cfgs/external/cinc2020_as_ptbxl_superdiagnostic.yaml": "cfgs/ptbxl/resnet1d_superdiagnostic.yaml"}


def test_every_shipped_external_config_is_checked():
    assert {str(p.relative_to(REPO)) for p in (REPO / "cfgs" / "external").glob("*.yaml")} == set(EXTERNAL)


@pytest.mark.parametrize("path, model", sorted(EXTERNAL.items()))
def test_shipped_external_configs_resolve_over_a_model_config(path, model):
    from ecgnet.config import load_yaml_tree
    from ecgnet.engine.external import external_config
    other = load_yaml_tree(REPO / path)
    cfg = external_config(resolve_config(load_config(REPO / model)), other, None)
    assert cfg["data"]["type"] == other["data"]["type"]
    assert cfg["eval"]["class_map"] == (other.get("eval") or {}).get("class_map")


def test_yaml_off_is_the_string_off_where_a_setting_allows_it():
    # YAML 1.1 reads `off` as False; train.amp allows "off" but not "on"
    import typing
    from ecgnet.config import TrainCfg
    from ecgnet.registry import check_type
    amp = typing.get_type_hints(TrainCfg)["amp"]
    assert check_type(False, amp, "train.amp") == "off"
    with pytest.raises(ConfigError, match="train.amp"):
        check_type(True, amp, "train.amp")
