"""Tests for ddpm_tf.evaluation and ddpm_tf.features: FID and KID against closed forms and
brute-force computations, the real-vs-real floor, and the feature extractors (offline)."""

import itertools
import json

import keras
import numpy as np
import pytest
import scipy.linalg

from ddpm_tf.classifier import ImageClassifier
from ddpm_tf.evaluation import (
    ClassifierFeatures,
    InceptionFeatures,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    mmd2_unbiased,
    real_floor,
    sample_quality,
)
from ddpm_tf.features import INCEPTION_WEIGHTS_FILE
from ddpm_tf.pixels import scale_to_unit, to_unit_range


def random_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def gaussian_fid_commuting(mu1, var1, mu2, var2) -> float:
    """Closed form for covariances diagonal in one basis: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))


# ------------------------------------------------------------------------------------------ FID


def test_frechet_distance_closed_form_commuting(np_rng):
    dim = 6
    mu1, mu2 = np_rng.normal(size=dim), np_rng.normal(size=dim)
    var1, var2 = np_rng.uniform(0.1, 3.0, dim), np_rng.uniform(0.1, 3.0, dim)
    expected = gaussian_fid_commuting(mu1, var1, mu2, var2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(
        expected, rel=1e-10
    )
    # Rotating both Gaussians by one orthogonal Q keeps the distance; the covariances are no
    # longer diagonal but still commute.
    q = random_orthogonal(dim, np_rng)
    rotated = frechet_distance(q @ mu1, q @ np.diag(var1) @ q.T, q @ mu2, q @ np.diag(var2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_singular_covariances(np_rng):
    # Rank-deficient covariances (dead features, N <= D): the closed form still holds.
    var1 = np.array([2.0, 0.0, 1.0, 0.0])
    var2 = np.array([0.5, 0.0, 0.0, 3.0])
    mu = np.zeros(4)
    expected = gaussian_fid_commuting(mu, var1, mu, var2)
    assert frechet_distance(mu, np.diag(var1), mu, np.diag(var2)) == pytest.approx(expected)
    # A rank-2 covariance against itself in 5 dimensions is at distance 0.
    a = np_rng.normal(size=(5, 2))
    assert frechet_distance(np.ones(5), a @ a.T, np.ones(5), a @ a.T) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_general_matches_scipy_sqrtm(np_rng):
    dim = 8
    a, b = np_rng.normal(size=(dim, dim)), np_rng.normal(size=(dim, dim))
    s1, s2 = a @ a.T + 0.1 * np.eye(dim), b @ b.T + 0.1 * np.eye(dim)
    mu1, mu2 = np_rng.normal(size=dim), np_rng.normal(size=dim)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)


def test_fid_from_samples_converges_to_closed_form(np_rng):
    dim, n = 4, 200_000
    q = random_orthogonal(dim, np_rng)
    mu1, mu2 = np.zeros(dim), np.array([0.5, 0.0, -0.3, 0.2])
    var1, var2 = np.array([1.0, 2.0, 0.5, 1.5]), np.array([2.0, 1.0, 0.5, 0.25])
    x = (np_rng.normal(size=(n, dim)) * np.sqrt(var1)) @ q.T + mu1
    y = (np_rng.normal(size=(n, dim)) * np.sqrt(var2)) @ q.T + q @ mu2
    expected = gaussian_fid_commuting(mu1, var1, mu2, var2)  # rotation-invariant
    assert fid_from_features(x, y) == pytest.approx(expected, rel=0.02)


def test_fid_identical_symmetric_permutation_invariant(np_rng):
    a = np_rng.normal(size=(300, 16))
    b = np_rng.normal(size=(250, 16)) * 1.3 + 0.2
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    ab = fid_from_features(a, b)
    assert ab > 0.5
    assert fid_from_features(b, a) == pytest.approx(ab, rel=1e-9)
    assert fid_from_features(a[np_rng.permutation(300)], b[::-1]) == pytest.approx(ab, rel=1e-9)
    # More features than samples: singular covariances, still finite and 0 for identical sets.
    wide = np_rng.normal(size=(20, 64))
    assert fid_from_features(wide, wide) == pytest.approx(0.0, abs=1e-8)
    assert np.isfinite(fid_from_features(wide, np_rng.normal(size=(30, 64))))


def test_fid_bad_input(np_rng):
    feats = np_rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match=r"feats_a must be features of shape \[N, D\].*\(10,\)"):
        fid_from_features(feats[:, 0], feats)
    with pytest.raises(ValueError, match="same feature size D, got 3 and 2"):
        fid_from_features(feats, feats[:, :2])
    with pytest.raises(ValueError, match="feats_b has 1 rows but at least 2"):
        fid_from_features(feats, feats[:1])
    bad = feats.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="feats_a contains NaN"):
        fid_from_features(bad, feats)
    with pytest.raises(
        ValueError, match=r"sigma2 must be a covariance of shape \[D, D\] = \[3, 3\]"
    ):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="mu1 and mu2 must have the same shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        frechet_distance(np.zeros(2), [[1.0, 0.5], [0.0, 1.0]], np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2), np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -0.5]), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------------------------------ KID


def brute_force_mmd2(x: np.ndarray, y: np.ndarray, unbiased: bool = True) -> float:
    """MMD^2 with k(a, b) = (a.b / D + 1)^3 by explicit loops (the U- or the V-statistic)."""
    dim = x.shape[1]

    def k(a, b):
        return (sum(a[i] * b[i] for i in range(dim)) / dim + 1.0) ** 3

    def mean_within(s):
        pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if i != j or not unbiased]
        return sum(k(s[i], s[j]) for i, j in pairs) / len(pairs)

    cross = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return mean_within(x) + mean_within(y) - 2.0 * cross


def test_mmd2_matches_brute_force(np_rng):
    x, y = np_rng.normal(size=(7, 5)), np_rng.normal(size=(9, 5)) + 0.3
    assert mmd2_unbiased(x, y) == pytest.approx(brute_force_mmd2(x, y), rel=1e-10)
    # With subsets as large as the (equal-sized) sets, every subset is the whole set.
    y = y[:7]
    mean, std = kid_from_features(x, y, num_subsets=3, subset_size=100)
    assert mean == pytest.approx(brute_force_mmd2(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased(np_rng):
    # Many independent pairs from one distribution: the U-statistic averages to 0 within its
    # standard error, while the biased V-statistic is clearly positive (so the test has power).
    reps, n, dim = 200, 12, 3
    unbiased, biased = [], []
    for _ in range(reps):
        x, y = np_rng.normal(size=(n, dim)), np_rng.normal(size=(n, dim))
        unbiased.append(kid_from_features(x, y, num_subsets=1, subset_size=n)[0])
        biased.append(brute_force_mmd2(x, y, unbiased=False))
    z_unbiased = np.mean(unbiased) / (np.std(unbiased) / np.sqrt(reps))
    z_biased = np.mean(biased) / (np.std(biased) / np.sqrt(reps))
    assert abs(z_unbiased) < 4, z_unbiased
    assert z_biased > 8, z_biased


def test_kid_positive_for_shifted_and_seeded(np_rng):
    a = np_rng.normal(size=(400, 8))
    same = np_rng.normal(size=(400, 8))
    shifted = np_rng.normal(size=(400, 8)) + 0.5
    kid_same, std_same = kid_from_features(a, same, num_subsets=20, subset_size=100, seed=1)
    kid_shift, std_shift = kid_from_features(a, shifted, num_subsets=20, subset_size=100, seed=1)
    # Far outside the spread of the same-distribution estimate, and every subset agrees.
    assert kid_shift > 10 * (abs(kid_same) + std_same)
    assert kid_shift > 3 * std_shift
    assert kid_from_features(a, same, 20, 100, seed=1) == (kid_same, std_same)
    assert kid_from_features(a, same, 20, 100, seed=2)[0] != kid_same
    assert std_same > 0


def test_kid_bad_input(np_rng):
    feats = np_rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="same feature size D, got 3 and 4"):
        kid_from_features(feats, np_rng.normal(size=(10, 4)))
    with pytest.raises(ValueError, match="num_subsets must be an int >= 1, got 0"):
        kid_from_features(feats, feats, num_subsets=0)
    with pytest.raises(ValueError, match="subset_size must be an int >= 2, got 1"):
        kid_from_features(feats, feats, subset_size=1)
    with pytest.raises(ValueError, match="feats_b has 1 rows"):
        kid_from_features(feats, feats[:1])


# ---------------------------------------------------------------------------------------- floor


def test_real_floor_split_halves_are_disjoint_halves(np_rng):
    real = np_rng.normal(size=(6, 2))
    floor = real_floor(real, num_subsets=2, seed=5)
    assert floor["floor_method"] == "split_halves" and floor["floor_sizes"] == [3, 3]
    # The floor is the FID of one of the 10 ways to split 6 rows into two sets of 3.
    candidates = [
        fid_from_features(real[list(part)], real[[i for i in range(6) if i not in part]])
        for part in itertools.combinations(range(6), 3)
    ]
    assert min(abs(floor["fid_floor"] - c) for c in candidates) < 1e-9
    assert real_floor(real, num_subsets=2, seed=5) == floor
    with pytest.raises(ValueError, match="at least 4"):
        real_floor(real[:3])


def test_real_floor_with_reference(np_rng):
    real, reference = np_rng.normal(size=(200, 4)), np_rng.normal(size=(300, 4))
    floor = real_floor(real, reference, size=300, num_subsets=10, subset_size=50)
    assert floor["floor_method"] == "reference_vs_real" and floor["floor_sizes"] == [300, 200]
    # All of the reference is drawn, so the floor is the FID of the two full sets.
    assert floor["fid_floor"] == pytest.approx(fid_from_features(reference, real), rel=1e-9)
    assert abs(floor["kid_floor"]) < 4 * floor["kid_floor_std"] + 1e-3
    assert real_floor(real, reference, size=50)["floor_sizes"] == [50, 200]
    with pytest.raises(ValueError, match="reference_feats and real_feats must have the same"):
        real_floor(real, reference[:, :3])


# ----------------------------------------------------------------------------------- extractors


def blob_images(n: int, seed: int, brightness: int = 0) -> np.ndarray:
    """uint8 [n, 8, 8, 1]: a noisy bright blob at a random place, plus ``brightness``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, 8, 8, 1)) + brightness
    for image, (r, c) in zip(images, rng.integers(0, 5, (n, 2)), strict=True):
        image[r : r + 4, c : c + 4] += 150
    return np.clip(images, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def small_classifier() -> ImageClassifier:
    keras.utils.set_random_seed(0)
    return ImageClassifier((8, 8, 1), 10, width=8, feature_dim=16, name="small")


def test_to_unit_range():
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    np.testing.assert_array_equal(to_unit_range(pixels), scale_to_unit(pixels).numpy())
    floats = np.linspace(-1.01, 1.01, 64, dtype=np.float32).reshape(1, 8, 8, 1)
    assert to_unit_range(floats).min() == -1.0 and to_unit_range(floats).max() == 1.0
    with pytest.raises(ValueError, match=r"values in \[0, 255\]"):
        to_unit_range(pixels.astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \[N, H, W, C\].*\(8, 8, 1\)"):
        to_unit_range(pixels[0])
    with pytest.raises(ValueError, match="C in"):
        to_unit_range(np.zeros((2, 8, 8, 2), np.uint8))
    with pytest.raises(TypeError, match="int64"):
        to_unit_range(pixels.astype(np.int64))


def test_classifier_features(small_classifier, tmp_path):
    images = blob_images(7, seed=0)
    extractor = ClassifierFeatures(small_classifier, batch_size=3)
    feats = extractor(images)
    assert feats.shape == (7, 16) and feats.dtype == np.float64 and extractor.dim == 16
    expected = small_classifier.features(scale_to_unit(images)).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-6, atol=1e-6)
    # The same features from the saved file, and from floats in [-1, 1].
    path = tmp_path / "c.keras"
    small_classifier.save(path)
    from_file = ClassifierFeatures(path)
    assert from_file.name == "classifier:c.keras"
    np.testing.assert_allclose(from_file(scale_to_unit(images).numpy()), feats, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"\[N, 28, 28, 1\] but 'classifier:small' takes \[N, 8, 8, 1\]"
    ):
        extractor(np.zeros((2, 28, 28, 1), np.uint8))
    with pytest.raises(FileNotFoundError, match="ddpm-classifier"):
        ClassifierFeatures(tmp_path / "missing.keras")


def test_classifier_features_functional_model():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(5, name="features")(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    images = blob_images(4, seed=1)
    feats = ClassifierFeatures(model)(images)
    dense = model.get_layer("features")
    x = scale_to_unit(images).numpy().reshape(4, 64)
    expected = x @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)
    no_features = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="layer named 'features'"):
        ClassifierFeatures(no_features)


def numpy_bilinear_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of [H, W] with edge clamping, written out in NumPy."""

    def weights(n_in: int) -> np.ndarray:
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = np.zeros((size, n_in))
        w[np.arange(size), lo] += 1 - (src - lo)
        w[np.arange(size), hi] += src - lo
        return w

    return weights(image.shape[0]) @ image @ weights(image.shape[1]).T


def test_inception_preprocessing():
    gray = blob_images(2, seed=3)
    unit = scale_to_unit(gray)
    out = InceptionFeatures.preprocess(unit).numpy()
    assert out.shape == (2, 299, 299, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])  # grayscale repeated
    # Bilinear resize of the [0, 255] pixels, then Keras' scaling x / 127.5 - 1.
    expected = numpy_bilinear_resize(gray[1, :, :, 0].astype(np.float64), 299) / 127.5 - 1
    np.testing.assert_allclose(out[1, :, :, 1], expected, atol=1e-4)
    rgb = np.stack([np.full((5, 5), v, np.uint8) for v in (0, 128, 255)], axis=-1)[None]
    out = InceptionFeatures.preprocess(scale_to_unit(rgb)).numpy()
    np.testing.assert_allclose(out[0, 100, 200], [-1.0, 128 / 127.5 - 1, 1.0], atol=1e-6)


def test_inception_missing_or_wrong_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_FILE) as info:
        InceptionFeatures(tmp_path / "nowhere.h5")
    assert "never" in str(info.value) and "nowhere.h5" in str(info.value)
    wrong = tmp_path / "weights.npz"
    wrong.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.h5"):
        InceptionFeatures(wrong)


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory) -> tuple[keras.Model, dict]:
    """A randomly initialised InceptionV3 (no top) and its weights in both Keras file formats."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(1)
    model = keras.applications.InceptionV3(
        include_top=False, pooling="avg", weights=None, input_shape=(299, 299, 3)
    )
    folder = tmp_path_factory.mktemp("inception")
    paths = {"keras3": folder / "random.weights.h5", "legacy": folder / INCEPTION_WEIGHTS_FILE}
    model.save_weights(paths["keras3"])
    with h5py.File(paths["legacy"], "w") as f:  # the format of the released ImageNet file
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return model, paths


@pytest.mark.parametrize("fmt", ["legacy", pytest.param("keras3", marks=pytest.mark.slow)])
def test_inception_features_load_weights(random_inception, fmt):
    model, paths = random_inception
    extractor = InceptionFeatures(paths[fmt], batch_size=2)
    assert extractor.name == "inception_v3" and extractor.dim == 2048
    images = blob_images(3, seed=4)
    feats = extractor(images)
    assert feats.shape == (3, 2048) and feats.dtype == np.float64
    # Same output as the model whose weights were saved: the file was really loaded.
    expected = model(InceptionFeatures.preprocess(scale_to_unit(images)), training=False)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-4, atol=1e-7)
    assert np.std(feats) > 0


# ---------------------------------------------------------------------------------- end to end


def test_sample_quality(small_classifier):
    extractor = ClassifierFeatures(small_classifier)
    real = blob_images(120, seed=10)
    good = blob_images(100, seed=11)
    bad = blob_images(100, seed=12, brightness=60)
    report = sample_quality(real, good, extractor, kid_subsets=10, kid_subset_size=50)
    json.dumps(report)
    assert report["num_real"] == 120 and report["num_fake"] == 100
    assert report["features"] == extractor.name and report["feature_dim"] == 16
    assert report["floor_method"] == "split_halves" and report["floor_sizes"] == [60, 60]
    assert report["kid_subset_size"] == 50
    # The reported FID is the FID of the extracted features.
    assert report["fid"] == pytest.approx(fid_from_features(extractor(good), extractor(real)))
    worse = sample_quality(real, bad, extractor, kid_subsets=10, kid_subset_size=50)
    assert worse["fid"] > 3 * report["fid"] and worse["fid"] > 3 * report["fid_floor"]
    assert worse["kid_mean"] > report["kid_mean"] + 3 * worse["kid_std"]
    with_reference = sample_quality(
        real, good, extractor, reference_uint8=blob_images(150, seed=13), kid_subsets=5
    )
    assert with_reference["floor_method"] == "reference_vs_real"
    assert with_reference["floor_sizes"] == [100, 120]
    assert with_reference["fid"] == pytest.approx(report["fid"])


def test_sample_quality_bad_input(small_classifier):
    extractor = ClassifierFeatures(small_classifier)
    real = blob_images(10, seed=0)
    with pytest.raises(ValueError, match=r"same \[H, W, C\]"):
        sample_quality(real, np.zeros((10, 8, 8, 3), np.uint8), extractor)
    with pytest.raises(ValueError, match="fake_uint8 has 1 images; at least 2"):
        sample_quality(real, real[:1], extractor)
    with pytest.raises(ValueError, match="real_uint8 has 3 images; at least 4"):
        sample_quality(real[:3], real, extractor)
    with pytest.raises(ValueError, match="float fake_uint8 must be in"):
        sample_quality(real, real.astype(np.float32), extractor)
    with pytest.raises(TypeError, match="FeatureExtractor"):
        sample_quality(real, real, lambda x: x)
    with pytest.raises(ValueError, match="kid_subsets must be an int >= 1"):
        sample_quality(real, real, extractor, kid_subsets=0)
