"""Issue 17 (mutation testing): the from-scratch CNN recipe and the five detectors built on it.

Expected values are the authors' recipe written out by hand (the catalogue's documented
defaults, BCE-with-logits and the sigmoid as formulas, the lr rule of their train.py);
each detector built without the catalogue must behave as the catalogue's defaults say.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from baselines.binary_cnn import (
    BinaryCNNDetector,
    check_resize_crop,
    resize_then_crop,
    step_decay_factor,
)
from baselines.cnnspot import CNNSpot
from baselines.dffreq import DFFreq
from baselines.dffreq_net import DFFreqNet
from baselines.freqnet import FreqNet
from baselines.freqnet_net import FreqNet as FreqNetwork
from baselines.ladeda import LaDeDa
from baselines.npr import NPR
from baselines.npr_net import NPRNet
from bench.errors import BenchError
from bench.interfaces import IMAGENET_MEAN, IMAGENET_STD, RunContext, TransformChain
from bench.options import merge_options
from bench.plugins import get_registry

# tiny tensors: one torch thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


REGISTRY = get_registry(refresh=True)
TENSOR = "ToTensor(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))"
FLIP = "HorizontalFlip(p=0.5)"


def resize(size: int) -> str:
    return f"ResizeSquare(size={size}, interpolation='bilinear')"


def build(name: str, **overrides):
    entry = REGISTRY.get("detector", name)
    return entry.load()(merge_options(name, entry.specs, overrides))


class Tiny(BinaryCNNDetector):
    name = "tiny"

    def base_transforms(self, train: bool) -> TransformChain:
        return TransformChain([])

    def build_net(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.BatchNorm1d(1))


def test_step_decay_factor_by_hand():
    assert [step_decay_factor(e, 1, 0.5) for e in range(4)] == [1.0, 1.0, 0.5, 0.25]
    assert [step_decay_factor(e, 3, 0.5) for e in (3, 4, 6, 7)] == [1.0, 0.5, 0.5, 0.25]
    assert step_decay_factor(50, 0, 0.5) == 1.0 and step_decay_factor(50, -2, 0.5) == 1.0
    assert step_decay_factor(-3, 1, 0.5) == 1.0


def test_the_recipe_on_a_tiny_network():
    det = Tiny({})
    assert det.net is None and det.describe() == {"parameters": 0}
    assert (det.name, det.provides, det.input_size) == ("tiny", frozenset(), 224)
    assert det.normalization == (IMAGENET_MEAN, IMAGENET_STD)
    det.setup(RunContext(device="cpu", log=lambda m: None))
    assert det.describe() == {"parameters": 4 + 1 + 2}
    optimizer = det.configure_optimizer()
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.Adam)
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.9, 0.999), 0)
    det.options.update({"lr": 0.5, "beta1": 0.7, "lr_decay_every": 2, "lr_decay": 0.1})
    optimizer = det.configure_optimizer()
    assert optimizer.param_groups[0]["betas"] == (0.7, 0.999)
    scheduler = det.configure_scheduler(optimizer, steps_per_epoch=2, epochs=4)
    seen = []
    for _ in range(8):  # epochs 0..3; decays after epoch 2 (0-based) only
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5] * 6 + [0.05] * 2)
    det.options = {}
    optimizer = det.configure_optimizer()
    scheduler = det.configure_scheduler(optimizer, steps_per_epoch=1, epochs=12)
    seen = []
    for _ in range(13):  # the defaults: × 0.9 after the 11th epoch
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([1e-4] * 11 + [0.9e-4] * 2)


def test_loss_probability_modes_and_state_on_a_tiny_network():
    det = Tiny({})
    det.setup(RunContext(device="cpu", log=lambda m: None))
    images = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]], [[[0.0, 1.0], [2.0, -1.0]]]])
    labels = torch.tensor([1, 0])
    det.train_mode(False)
    assert not det.net.training
    with torch.no_grad():
        z = det.net(images)[:, 0]
    p = 1 / (1 + torch.exp(-z))
    expected = -(torch.log(p[0]) + torch.log(1 - p[1])) / 2
    torch.testing.assert_close(det.training_step({"image": images, "label": labels}), expected)
    torch.testing.assert_close(det.predict_proba({"image": images}), p)
    assert det.predict_proba({"image": images}).dtype == torch.float32
    assert not det.is_training()
    det.train_mode(True)
    assert det.net.training and det.is_training()
    state = det.trainable_state()
    assert set(state) == set(det.net.state_dict()) and "2.running_mean" in state
    assert all(not v.requires_grad for v in state.values())
    changed = {k: v.clone() for k, v in state.items()}
    changed["1.weight"] = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    det.load_trainable_state(changed)
    assert torch.equal(det.net[1].weight.detach(), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    with pytest.raises(RuntimeError, match="Missing key"):
        det.load_trainable_state({})


def test_resize_and_crop_rules():
    check_resize_crop({}, "x")  # 256 >= 224
    check_resize_crop({"load_size": 224, "input_size": 224}, "x")
    check_resize_crop({"load_size": 0, "eval_crop": True}, "x")
    with pytest.raises(BenchError, match="^x.load_size 1 is smaller than x.input_size 224$"):
        check_resize_crop({"load_size": 1}, "x")
    with pytest.raises(BenchError, match="^x.load_size 223 is smaller than x.input_size 224$"):
        check_resize_crop({"load_size": 223}, "x")
    with pytest.raises(BenchError, match="^x.load_size 256 is smaller than x.input_size 300$"):
        check_resize_crop({"input_size": 300}, "x")
    message = (
        "^y.load_size = 0 \\(no resize\\) needs y.eval_crop = true: images of different sizes "
        "cannot be batched$"
    )
    with pytest.raises(BenchError, match=message):
        check_resize_crop({"load_size": 0}, "y")
    with pytest.raises(BenchError, match="^npr.load_size = 0 "):
        NPR({"load_size": 0})
    with pytest.raises(
        BenchError, match="^freqnet.load_size 100 is smaller than freqnet.input_size 224$"
    ):
        FreqNet({"load_size": 100})
    assert [repr(s) for s in resize_then_crop({}, True)] == [resize(256), "RandomCrop(size=224)"]
    assert [repr(s) for s in resize_then_crop({}, False)] == [resize(256)]
    assert [repr(s) for s in resize_then_crop({"eval_crop": True}, False)] == [
        resize(256),
        "CenterCrop(size=224)",
    ]
    steps = resize_then_crop({"load_size": 0, "input_size": 32, "eval_crop": True}, False)
    assert [repr(s) for s in steps] == ["CenterCrop(size=32)"]
    assert [repr(s) for s in resize_then_crop({"load_size": 0, "input_size": 32}, True)] == [
        "RandomCrop(size=32)"
    ]


NPR_TRAIN = [
    resize(256),
    "RandomCrop(size=224)",
    FLIP,
    "TorchvisionStep(RandomRotation(degrees=[-180.0, 180.0], interpolation=nearest, expand=False, fill=0))",
    "TorchvisionStep(ColorJitter(brightness=(0.5, 1.5), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=None))",
    TENSOR,
    "RandomMask(p=0.5, patch=16, ratio=(0.0, 0.75))",
]


def test_npr_and_freqnet_chains_without_the_catalogue_are_the_catalogues():
    for det in (NPR({}), build("npr")):
        assert det.transforms(True).describe() == NPR_TRAIN
        assert det.transforms(False).describe() == [resize(256), TENSOR]
    other = NPR(
        {
            "hflip": False,
            "rotation": 90.0,
            "jitter": 0.25,
            "mask_p": 0.2,
            "mask_patch": 8,
            "mask_ratio_max": 0.5,
        }
    )
    assert other.transforms(True).describe() == [
        resize(256),
        "RandomCrop(size=224)",
        "TorchvisionStep(RandomRotation(degrees=[-90.0, 90.0], interpolation=nearest, expand=False, fill=0))",
        "TorchvisionStep(ColorJitter(brightness=(0.75, 1.25), contrast=(0.75, 1.25), saturation=(0.75, 1.25), hue=None))",
        TENSOR,
        "RandomMask(p=0.2, patch=8, ratio=(0.0, 0.5))",
    ]
    for det in (FreqNet({}), build("freqnet")):
        assert det.transforms(True).describe() == [
            resize(256),
            "RandomCrop(size=224)",
            FLIP,
            TENSOR,
        ]
        assert det.transforms(False).describe() == [resize(256), TENSOR]
    no_flip = FreqNet({"hflip": False, "eval_crop": True, "input_size": 200})
    assert no_flip.transforms(True).describe() == [resize(256), "RandomCrop(size=200)", TENSOR]
    assert no_flip.transforms(False).describe() == [resize(256), "CenterCrop(size=200)", TENSOR]


def test_dffreq_crops_256_without_the_catalogue_too():
    for det in (DFFreq({}), build("dffreq")):
        assert det.input_size == 256
        assert det.transforms(True).describe() == ["RandomCrop(size=256)", FLIP, TENSOR]
        assert det.transforms(False).describe() == ["CenterCrop(size=256)", TENSOR]
    det = DFFreq({"input_size": 64, "hflip": False})
    assert det.transforms(True).describe() == ["RandomCrop(size=64)", TENSOR]
    message = (
        "^dffreq.input_size must be a multiple of 4 \\(Haar DWT of 2x2 blocks of sub-band "
        "coefficients\\), got 66$"
    )
    with pytest.raises(BenchError, match=message):
        DFFreq({"input_size": 66})


def test_each_detector_builds_its_own_network():
    for cls, net_cls in ((NPR, NPRNet), (FreqNet, FreqNetwork), (DFFreq, DFFreqNet)):
        net = cls({}).build_net()
        assert type(net) is net_cls
        assert net.fc1.out_features == 1
    assert (NPR.name, FreqNet.name, DFFreq.name, CNNSpot.name, LaDeDa.name) == (
        "npr",
        "freqnet",
        "dffreq",
        "cnnspot",
        "ladeda",
    )


def test_cnnspot_defaults_head_and_facts(tmp_path, monkeypatch):
    blur = (
        "BlurJpeg(blur_p=0.5, sigma=(0.0, 3.0), jpeg_p=0.5, quality=(30, 100), "
        "draws='independent', jpeg='cv2-bgr')"
    )
    train = [
        "ResizeShorter(size=256, interpolation='bilinear')",
        blur,
        "RandomCrop(size=224)",
        FLIP,
        TENSOR,
    ]
    for det in (CNNSpot({}), build("cnnspot")):
        assert det.transforms(True).describe() == train
        assert det.transforms(False).describe() == ["CenterCrop(size=224)", TENSOR]
        assert det.input_size == 224 and det.normalization == (IMAGENET_MEAN, IMAGENET_STD)
    assert CNNSpot({"input_size": 96}).transforms(False).describe()[0] == "CenterCrop(size=96)"
    torch.manual_seed(0)
    det = CNNSpot({"pretrained": "none", "init_std": 0.05})
    net = det.build_net(RunContext(log=lambda m: None))
    assert (net.fc.in_features, net.fc.out_features) == (2048, 1)
    assert net.fc.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert abs(net.fc.weight.mean().item()) < 0.01  # N(0, std)
    assert det.init_facts["random_weights"] is True
    net = CNNSpot({"pretrained": "none"}).build_net(RunContext(log=lambda m: None))
    assert net.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)  # the default std
    assert CNNSpot.weights_facts("a.pth", False) == {"backbone": "a.pth", "random_weights": False}
    assert CNNSpot.weights_facts("r", True) == {
        "backbone": "r",
        "random_weights": True,
        "weights": "random (no ImageNet weights: CNN-Spot is not meant to start from scratch)",
    }
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(BenchError) as info:  # the default is torchvision's V1 file
        CNNSpot({}).build_net(RunContext(log=lambda m: None))
    assert "resnet50/torchvision:IMAGENET1K_V1" in str(info.value)
    assert "--opt cnnspot.pretrained=" in str(info.value)


def test_ladeda_defaults_network_options_and_facts():
    for det in (LaDeDa({}), build("ladeda")):
        assert det.transforms(True).describe() == [
            resize(256),
            "RandomCrop(size=224)",
            FLIP,
            TENSOR,
        ]
        assert det.transforms(False).describe() == [resize(256), TENSOR]
        assert det.input_size == 224 and det.normalization == (IMAGENET_MEAN, IMAGENET_STD)
    assert LaDeDa({"load_size": 1}).transforms(False).describe() == [resize(1), TENSOR]
    assert LaDeDa({"eval_crop": 1}).transforms(False).describe() == [
        resize(256),
        "CenterCrop(size=1)",
        TENSOR,
    ]
    det = LaDeDa({"load_size": 0, "eval_crop": 48, "input_size": 32})
    assert det.transforms(True).describe() == ["RandomCrop(size=32)", FLIP, TENSOR]
    assert det.transforms(False).describe() == ["CenterCrop(size=48)", TENSOR]
    torch.manual_seed(0)
    det = LaDeDa(
        {"receptive_field": 17, "preprocess": "raw", "stem_bn_momentum": 0.2, "init_std": 0.05}
    )
    net = det.build_net(RunContext(log=lambda m: None))
    assert (net.receptive_field, net.preprocess, net.bn1.momentum) == (17, "raw", 0.2)
    assert (net.fc.in_features, net.fc.out_features) == (2048, 1)
    assert net.fc.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert abs(net.fc.weight.mean().item()) < 0.01  # N(0, std)
    assert det.init_facts == {
        "init": "random (LaDeDa trains from scratch, as its authors' code)",
        "receptive_field": 17,
    }
    torch.manual_seed(0)
    default = LaDeDa({})
    net = default.build_net(RunContext(log=lambda m: None))
    assert (net.receptive_field, net.preprocess, net.bn1.momentum) == (9, "NPR", 0.001)
    assert net.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert abs(net.fc.weight.mean().item()) < 0.005
    assert math.isclose(float(net.fc.bias.detach().abs().max()), 0.0, abs_tol=1 / math.sqrt(2048))


def test_cnnspot_loads_a_headless_file_and_names_a_wrong_one(tmp_path, monkeypatch):
    """A file without the classifier (fc.*) loads: the head is replaced anyway. A file that
    does not fit is refused in a message that names it."""
    from torchvision.models import resnet50

    import bench.backbones.imagenet as imagenet

    torch.manual_seed(3)
    headless = {k: v for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "r50.pth"
    path.write_bytes(b"")  # read through the patched reader below
    monkeypatch.setattr(imagenet, "read_state_dict", lambda p: headless)
    net = CNNSpot({"pretrained": str(path)}).build_net(RunContext(log=lambda m: None))
    assert torch.equal(net.layer4[2].conv3.weight, headless["layer4.2.conv3.weight"])
    monkeypatch.setattr(imagenet, "read_state_dict", lambda p: {"conv1.weight": torch.zeros(1)})
    with pytest.raises(BenchError, match="^resnet50@.*r50.pth.* does not fit this network"):
        CNNSpot({"pretrained": str(path)}).build_net(RunContext(log=lambda m: None))
