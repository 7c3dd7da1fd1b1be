"""The digit benchmark: datasets/digits.py and the scoring of ``tools/bench_quality.py digits``."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import ROOT, load_script

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digit set at 32 px, written once into OUT/data (where the benchmark looks for it)."""
    out = tmp_path_factory.mktemp("digits_bench")
    load_script("datasets/digits.py").build(out / "data", size=32, test_fraction=0.25, seed=0)
    return out


@pytest.fixture(scope="module")
def bench():
    return load_script("tools/bench_quality.py")


def test_digit_folders_are_a_stratified_split_of_the_data_as_given(digits):
    from sklearn.datasets import load_digits
    data = load_digits()
    files = {split: sorted((digits / "data" / split).glob("*/*.png")) for split in ("train", "test")}
    assert [len(files["train"]), len(files["test"])] == [1347, 450]
    indices = {split: {int(f.stem) for f in found} for split, found in files.items()}
    assert not indices["train"] & indices["test"] and len(indices["train"] | indices["test"]) == 1797
    for path in files["train"] + files["test"]:
        assert int(path.parent.name) == data.target[int(path.stem)]  # each image in its own digit's folder
    test_counts = np.bincount([int(f.parent.name) for f in files["test"]], minlength=10)
    assert test_counts.min() >= 43 and test_counts.max() <= 46  # 25 % of each digit's 174 to 183 images
    image = Image.open(files["train"][0])
    assert (image.mode, image.size) == ("L", (32, 32))
    # Shrunk back to 8x8 the image is the original (0..16 -> 0..255), neither mirrored nor transposed.
    original = data.images[int(files["train"][0].stem)] * 255 / 16
    shrunk = np.asarray(image.resize((8, 8), Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(shrunk - original).mean() < 20 < np.abs(shrunk - original[:, ::-1]).mean()


def test_digit_writer_refuses_a_bad_test_fraction(tmp_path):
    from i2i.errors import I2IError
    with pytest.raises(I2IError, match="test fraction must be between 0 and 1; got 1.5"):
        load_script("datasets/digits.py").build(tmp_path, test_fraction=1.5)


class FirstPixel(nn.Module):
    """Predicts class 1 when an image's first pixel is positive, else 0; its features are the flattened image."""

    def forward(self, images):
        positive = (images[:, 0, 0, 0] > 0).long()
        return nn.functional.one_hot(positive, 2).float()

    def features(self, images):
        return images.flatten(1)


def test_accuracy_and_kid_against_hand_computations(bench):
    cpu = torch.device("cpu")
    images = torch.tensor([1.0, 1.0, -1.0, -1.0]).view(4, 1, 1, 1).expand(4, 3, 1, 1)
    assert bench.accuracy(FirstPixel(), images, torch.tensor([1, 0, 0, 1]), cpu) == 0.5
    # Features a = {(1,0,0), (0,1,0)}, b = 2a, kernel (x.y / 3 + 1)^3: within-set pairs give 1; across, 1 or
    # (2/3 + 1)^3 = 125/27 (same axis). Unbiased MMD^2 = (1 + 1) - 2 * (2 * 125/27 + 2) / 4 = -98/27. Every subset
    # of 2 is the whole set, so the std over subsets is 0.
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).view(2, 3, 1, 1)
    kid, std = bench.classifier_kid(FirstPixel().features, a, 2 * a, cpu)
    assert kid == pytest.approx(-98 / 27) and std == pytest.approx(0.0, abs=1e-12)


def test_class_spread_is_the_mean_within_class_pixel_std(bench):
    images = torch.tensor([0.0, 2.0, 5.0, 5.0, 1.0, 3.0, 5.0]).view(7, 1, 1, 1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    # class stds (unbiased): sqrt(2), 0 (collapsed), 2
    assert bench.class_spread(images, labels) == pytest.approx((2 ** 0.5 + 0 + 2) / 3, abs=1e-4)


def test_kid_features_are_standardised_on_the_real_images(bench):
    real = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0]]).view(3, 2, 1, 1)
    features = bench.standardised_features(FirstPixel(), real, torch.device("cpu"))
    # per dimension: means 3 and 20, stds 2 and 17.32; the second image sits at (0, -0.577)
    expected = torch.tensor([[-1.0, -10 / 300 ** 0.5], [0.0, -10 / 300 ** 0.5], [1.0, 20 / 300 ** 0.5]])
    torch.testing.assert_close(features(real), expected)
    torch.testing.assert_close(features(torch.tensor([3.0, 20.0]).view(1, 2, 1, 1)), torch.zeros(1, 2))


def test_classifier_learns_digits_and_gives_penultimate_features(digits, bench):
    images, labels, names = bench.read_class_folders(digits / "data" / "train")
    assert names == [str(d) for d in range(10)] and images.shape == (1347, 3, 32, 32)
    assert images.min() == -1.0 and images.max() == 1.0
    cpu = torch.device("cpu")
    classifier = bench.train_classifier(images[::4], labels[::4], 10, epochs=3, seed=0, device=cpu)
    tests, test_labels, _ = bench.read_class_folders(digits / "data" / "test")
    assert bench.accuracy(classifier, tests, test_labels, cpu) > 0.5  # chance is 0.1
    assert classifier.features(tests[:5]).shape == (5, 128)


def test_kept_classifier_is_reloaded_with_reuse(digits, bench, tmp_path):
    images, labels, _ = bench.read_class_folders(digits / "data" / "test")
    args = argparse.Namespace(out=tmp_path, reuse=False, classifier_epochs=1, seed=0)
    trained, seconds = bench.digit_classifier(images[:40], labels[:40], 10, args, torch.device("cpu"))
    assert seconds is not None and (tmp_path / "classifier.pt").is_file()
    args.reuse = True
    reloaded, seconds = bench.digit_classifier(images[:40], labels[:40], 10, args, torch.device("cpu"))
    assert seconds is None
    assert torch.equal(reloaded(images[:8]), trained(images[:8]))


def test_default_cgan_draws_each_asked_digit_in_its_variety_within_400_steps(digits, bench, tmp_path):
    """A guard on the class conditioning, on real digits. Seen here at step 400 (seeds 0, 1, 2): class accuracy
    0.93, 0.94, 0.86 and within-class pixel std 0.25 to 0.26 (real images: 0.28). Conditioning through class gains
    that start at zero alone gave 0.10 at step 400; an N(0, 1) class embedding gave a std of 0.03 (one image per
    digit)."""
    import i2i
    images, labels, _ = bench.read_class_folders(digits / "data" / "train")
    cpu = torch.device("cpu")
    classifier = bench.train_classifier(images, labels, 10, epochs=5, seed=0, device=cpu)
    run = i2i.train(mode="cgan", data=str(digits / "data"), out=str(tmp_path / "run"), size=32, steps=400,
                    batch_size=64, seed=0, workers=0, tensorboard=False, sample_every=400, checkpoint_every=400)
    samples = i2i.load(run).class_grid(50, seed=0)
    asked = torch.arange(10).repeat_interleave(50)
    assert bench.accuracy(classifier, samples, asked, cpu) >= 0.6
    assert bench.class_spread(samples, asked) >= 0.15


def test_digits_command_trains_and_scores_both_modes(digits):
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_quality.py"), "digits", "--out", str(digits), "--steps", "1",
         "--batch-size", "4", "--samples", "20", "--classifier-epochs", "1", "--device", "cpu",
         "--train-args", "--ngf 8 --ndf 8 --workers 0 --no-tensorboard"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((digits / "digits.json").read_text())
    assert (report["train_images"], report["test_images"], report["device"]) == (1347, 450, "cpu")
    assert 0 <= report["classifier"]["test_accuracy"] <= 1
    cgan, gan = report["runs"]
    assert (cgan["name"], gan["name"]) == ("cgan", "gan")
    assert not cgan["flip"] and not gan["flip"]  # gan/cgan learn the images as given by default
    assert cgan["command"].startswith("i2i train --mode cgan") and cgan["steps"] == 1
    assert cgan["samples"] == 20 and set(cgan["per_class"]) == {str(d) for d in range(10)}
    assert cgan["class_accuracy"] == pytest.approx(sum(cgan["per_class"].values()) / 10, abs=1e-3)
    assert 0 < cgan["class_spread"] and 0.2 < report["class_spread_real_test"] < 0.4
    for run in (cgan, gan):
        assert run["kid_ratio"] == pytest.approx(run["kid_trained"] / run["kid_untrained"], abs=1e-4)
    assert sum(gan["predicted_classes"].values()) == pytest.approx(1.0, abs=0.01)
    for grid in ("cgan.png", "gan_trained.png", "gan_untrained.png"):
        assert (digits / "grids" / grid).is_file()
    table = (digits / "digits.md").read_text()
    assert "| cgan | --ngf 8 --ndf 8 --workers 0 --no-tensorboard (flip off) | 1 x 4 |" in table
