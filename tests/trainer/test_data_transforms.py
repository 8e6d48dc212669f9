"""Reference transforms: flip, scale-rotate, resize, ignore regions, normalisation, seeded randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtlora_deploy.trainer.data import (
    IMAGENET_MEAN,
    eval_transform,
    hflip,
    rotate_normals,
    rotation_matrix,
    train_transform,
    warp_affine,
)
from mtlora_deploy.trainer.data.transforms import to_planes

H, W = 24, 32


def _sample(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    semseg = np.zeros((H, W), np.uint8)
    semseg[4:14, 5:20], semseg[14:20, 10:30], semseg[10:13, 14:18] = 3, 15, 255
    parts = np.where(semseg == 15, 1 + (np.arange(W) % 6)[None, :], 0).astype(np.uint8)
    normals = rng.normal(size=(H, W, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[:, :4] = normals[8:16, 12:20] = 255  # ignored columns and a central block
    return {
        "image": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        "semseg": semseg,
        "human_parts": parts,
        "sal": (semseg > 0).astype(np.float32),
        "normals": normals,
        "edge": (rng.random((H, W)) > 0.9).astype(np.float32),
    }


def test_hflip_negates_normals_x_and_mirrors_everything() -> None:
    sample = _sample()
    planes = to_planes(sample)
    flipped = hflip(planes)
    valid = sample["normals"][..., 0] != 255
    np.testing.assert_array_equal(flipped["semseg"][0].numpy(), sample["semseg"][:, ::-1])
    np.testing.assert_array_equal(flipped["image"].numpy(), planes["image"].flip(-1).numpy())
    mirrored = sample["normals"][:, ::-1]
    np.testing.assert_allclose(flipped["normals"][0].numpy()[valid[:, ::-1]], -mirrored[..., 0][valid[:, ::-1]])
    np.testing.assert_allclose(
        flipped["normals"][1:].numpy().transpose(1, 2, 0)[valid[:, ::-1]], mirrored[..., 1:][valid[:, ::-1]]
    )
    assert (flipped["normals"][:, :, -4:] == 0).all()  # ignore travels as zero length until the end


def test_rotation_matrix_is_counter_clockwise_about_the_centre() -> None:
    matrix = rotation_matrix(90.0, 1.0, H, W)
    cx, cy = W / 2, H / 2
    np.testing.assert_allclose(matrix @ [cx, cy, 1], [cx, cy], atol=1e-9)
    np.testing.assert_allclose(matrix @ [cx + 5, cy, 1], [cx, cy - 5], atol=1e-9)  # right -> up
    np.testing.assert_allclose(rotation_matrix(0.0, 2.0, H, W) @ [cx + 3, cy + 1, 1], [cx + 6, cy + 2])


def test_warp_moves_labels_where_the_matrix_says() -> None:
    label = np.zeros((H, W), np.float32)
    label[11:14, 21:24] = 7  # centre (22, 12), i.e. 6 px right of the rotation centre (16, 12)
    out = warp_affine(to_planes({"semseg": label}), 90.0, 1.0)["semseg"][0].numpy()
    ys, xs = np.nonzero(out == 7)
    assert (ys.mean(), xs.mean()) == pytest.approx((6.0, 16.0))


def test_identity_warp_keeps_everything() -> None:
    planes = to_planes(_sample())
    out = warp_affine(planes, 0.0, 1.0)
    for key in planes:
        torch.testing.assert_close(out[key], planes[key], atol=1e-3, rtol=0)


def test_rotate_normals_turns_in_plane_and_keeps_length() -> None:
    normals = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    torch.testing.assert_close(
        rotate_normals(normals, 90.0).flatten(), torch.tensor([0.0, -1.0, 0.0]), atol=1e-6, rtol=0
    )
    rng = torch.Generator().manual_seed(0)
    many = torch.randn(3, 5, 5, generator=rng)
    rotated = rotate_normals(many, 33.0)
    torch.testing.assert_close(rotated.norm(dim=0), many.norm(dim=0))
    torch.testing.assert_close(rotated[2], many[2])


@pytest.mark.parametrize("seed", range(6))
def test_train_keeps_label_sets_ignore_and_unit_normals(seed: int) -> None:
    sample = _sample(seed)
    out = train_transform(sample, np.random.default_rng(seed), size=40)
    assert set(out["semseg"].unique().tolist()) <= {0, 3, 15, 255} and 255 in out["semseg"]
    assert set(out["human_parts"].unique().tolist()) <= set(range(7)) | {255}
    assert set(out["sal"].unique().tolist()) <= {0.0, 1.0} and set(out["edge"].unique().tolist()) <= {0.0, 1.0}
    normals = out["normals"]
    ignored = (normals == 255).all(dim=0)
    assert ignored.any() and ((normals == 255).any(dim=0) == ignored).all()
    torch.testing.assert_close(normals[:, ~ignored].norm(dim=0), torch.ones(int((~ignored).sum())), atol=1e-4, rtol=0)


def test_person_free_parts_stay_all_ignore_despite_zero_border() -> None:
    sample = _sample()
    sample["human_parts"] = np.full((H, W), 255, np.uint8)
    for seed in range(4):
        out = train_transform(sample, seed, size=16)
        assert (out["human_parts"] == 255).all()


def test_eval_shapes_dtypes_and_resize() -> None:
    out = eval_transform(_sample(), size=48)
    assert out["image"].shape == (3, 48, 48) and out["image"].dtype == torch.float32
    assert out["semseg"].shape == (48, 48) and out["semseg"].dtype == torch.int64
    assert out["human_parts"].shape == (48, 48) and out["human_parts"].dtype == torch.int64
    assert out["sal"].shape == out["edge"].shape == (1, 48, 48) and out["sal"].dtype == torch.float32
    assert out["normals"].shape == (3, 48, 48)
    assert (out["normals"][:, :, :4] == 255).all()  # cubic support of the first 4 output columns is all ignored
    rows, cols = (np.arange(48) * H) // 48, (np.arange(48) * W) // 48  # nearest = floor, like cv2.INTER_NEAREST
    np.testing.assert_array_equal(out["semseg"].numpy(), _sample()["semseg"][rows][:, cols])


def test_eval_is_identity_at_native_size_and_normalises_image() -> None:
    sample = _sample()
    sample["image"][:] = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    square = {k: v[:, :H] for k, v in sample.items()}
    out = eval_transform(square, size=H)
    assert out["image"].abs().max() < 0.01
    np.testing.assert_array_equal(out["semseg"].numpy(), square["semseg"])


def test_randomness_is_only_the_generator_passed_in() -> None:
    sample = _sample()
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a = train_transform(sample, np.random.default_rng(11), size=20)
    b = train_transform(sample, 11, size=20)
    outputs = [train_transform(sample, seed, size=20)["image"] for seed in range(5)]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])
    assert (np.random.get_state()[1] == np_state).all() and torch.equal(torch.get_rng_state(), torch_state)
