"""Transfer learning: init_from loads matching layers only, freeze really freezes."""
import pytest
import torch

from ecgnet.build import build, resolve_config
from ecgnet.config import load_config
from ecgnet.engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from ecgnet.engine.run import train
from ecgnet.engine.transfer import freeze, init_from_checkpoint, keep_frozen_norms_in_eval
from ecgnet.registry import ConfigError

MODEL = {"model": {"type": "cnn1d", "widths": [8, 16], "hidden": 8}}


def cnn(num_classes, leads=2):
    return build("model", MODEL, in_leads=leads, num_classes=num_classes)


def test_init_from_loads_matching_layers_and_reinitialises_the_head(tmp_path):
    torch.manual_seed(0)
    source = cnn(5)
    save_checkpoint({"format": FORMAT, "model": source.state_dict()}, tmp_path / "best.pt")
    torch.manual_seed(1)
    target = cnn(3)
    fresh_head = target.head.fc2.weight.clone()
    report = init_from_checkpoint(target, str(tmp_path))          # a run directory works too
    assert set(report["kept"]) == {"head.fc2.weight", "head.fc2.bias"}
    for name, value in target.state_dict().items():
        if name in report["kept"]:
            continue
        assert torch.equal(value, source.state_dict()[name]), name
    assert torch.equal(target.head.fc2.weight, fresh_head)
    with pytest.raises(ConfigError, match="no layer of"):
        init_from_checkpoint(build("model", {"model": {"type": "resnet1d", "base_width": 4, "num_blocks": 2}},
                                   in_leads=2, num_classes=3), str(tmp_path / "best.pt"))
    with pytest.raises(ConfigError, match="model.init_from: .* not found"):
        init_from_checkpoint(target, str(tmp_path / "missing.pt"))


def test_freeze_keeps_weights_and_norm_statistics_fixed():
    torch.manual_seed(0)
    model = cnn(3)
    frozen = freeze(model, ["features.*"])
    assert frozen and all(n.startswith("features.") for n in frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    keep_frozen_norms_in_eval(model)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 2, 64) * 3 + 1), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    for name, param in model.named_parameters():
        if name in frozen:
            assert param.grad is None and torch.equal(after[name], before[name]), name
        else:
            assert not torch.equal(after[name], before[name]), name
    assert torch.equal(after["features.0.bn.running_mean"], before["features.0.bn.running_mean"])
    with pytest.raises(ConfigError, match="'stem.\\*' matches no parameter"):
        freeze(cnn(3), ["stem.*"])


def test_transfer_end_to_end_through_the_config(tmp_path):
    cfg_path = tmp_path / "src.yaml"
    cfg_path.write_text("""
data: {type: synthetic, num_records: 80, fs: 50, duration_s: 4, leads: [II]}
model: {type: cnn1d, widths: [8, 16], hidden: 8}
loss: {type: bce}
schedule: {type: constant}
train: {epochs: 1, tensorboard: false}
""")
    source = train(load_config(cfg_path), work_dir=str(tmp_path / "source"))
    opts = [f"model.init_from={source}", "model.freeze=[features.*]", "data.mode=single_label", "loss.type=ce"]
    cfg = load_config(cfg_path, opts)
    assert resolve_config(cfg)["model"]["freeze"] == ["features.*"]
    target = train(cfg, work_dir=str(tmp_path / "target"))
    src, dst = load_checkpoint(source / "best.pt")["model"], load_checkpoint(target / "best.pt")["model"]
    assert torch.equal(src["features.0.conv.weight"], dst["features.0.conv.weight"])      # frozen, loaded
    assert torch.equal(src["features.0.bn.running_var"], dst["features.0.bn.running_var"])
    assert not torch.equal(src["head.fc1.weight"], dst["head.fc1.weight"])               # trained
    with pytest.raises(ConfigError, match="model.freeze: expected a list"):
        resolve_config(load_config(cfg_path, ["model.freeze=features"]))
