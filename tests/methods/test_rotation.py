"""Rotation prediction: labels (inverse rotation recovers the image), axial-plane rotation of volumes."""

import pytest
import torch

from medrobust.methods.contract import Encoders
from medrobust.methods.rotation import Rotation, rotation_batch
from medrobust.models.encoders import SmallCNN


@pytest.mark.parametrize("shape", [(3, 2, 6, 6), (2, 1, 4, 5, 5)])
def test_inverse_rotation_of_each_label_recovers_the_image(shape):
    x = torch.rand(shape)
    rotated, labels = rotation_batch(x)
    assert rotated.shape == (4 * shape[0],) + shape[1:] and labels.tolist() == [r for r in range(4) for _ in x]
    for img, r, orig in zip(rotated, labels, x.repeat(4, *[1] * (x.ndim - 1))):
        assert torch.equal(torch.rot90(img, -int(r), dims=(-2, -1)), orig)
    for r in range(1, 4):  # the four copies differ (a random image has no rotational symmetry)
        assert not torch.equal(rotated[r * shape[0]], rotated[0])


def test_label_one_is_a_quarter_turn_counter_clockwise_in_the_axial_plane():
    x = torch.zeros(1, 1, 3, 4, 4)
    x[0, 0, 1, 0, 3] = 1.0  # top-right corner of the middle slice
    rotated, _ = rotation_batch(x)
    assert rotated[1, 0, 1, 0, 0] == 1.0  # top-right -> top-left, same slice (depth untouched)
    assert rotated[1, 0, [0, 2]].sum() == 0


def test_non_square_plane_is_rejected():
    with pytest.raises(ValueError, match="square images"):
        rotation_batch(torch.rand(1, 1, 4, 6))


def test_method_classifies_four_rotations_per_image():
    torch.manual_seed(0)
    enc = SmallCNN(1, 2, 28, [0.5], [0.25])
    method = Rotation(Encoders(enc), seed=0)
    out = method({"image": torch.rand(5, 1, 28, 28)})
    assert method.head.out_features == 4 and 0 <= out["accuracy"] <= 1
    assert abs(out["loss"].item() - torch.log(torch.tensor(4.0)).item()) < 0.5  # near chance at init
