"""Data pipeline: YCOR format and converter, synthetic scenes, transforms, Dataset, CLI (CPU)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrast_semask_ros.preprocess import fit_to_scale, rescale_size
from contrast_semask_train.data import (
    IGNORE_INDEX,
    RAW_PALETTE,
    YCOR_CLASSES,
    YCOR_COST_TABLE,
    YCOR_PALETTE,
    DataFormatError,
    EvalTransform,
    PhotoMetricDistortion,
    SegmentationDataset,
    TrainTransform,
    colors_to_labels,
    convert_ycor,
    normalize,
    read_label_png,
    render_scene,
    write_synthetic_ycor,
)
from contrast_semask_train.data.cli import main as data_main

H, W = 96, 160
SEED = 7
N_FRAMES = 6


def _rendered_labels(seed: int, index: int, height: int = H, width: int = W) -> np.ndarray:
    """The labels write_synthetic_ycor renders for frame `index` (its documented seeding)."""
    return render_scene(np.random.default_rng([seed, 0, index]), height, width)[1]


def _frames(root: Path) -> dict[str, Path]:
    """iid -> frame directory of a raw yamaha_v0 tree."""
    return {d.name: d for split in ('train', 'valid') for d in sorted((root / split).iterdir())}


@pytest.fixture(scope='module')
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('synth') / 'yamaha_v0'
    write_synthetic_ycor(out, n=N_FRAMES, seed=SEED, height=H, width=W, valid_fraction=0.34,
                         progress=False)
    return out


@pytest.fixture(scope='module')
def converted_dir(raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('converted') / 'ycor'
    convert_ycor(raw_dir, out, progress=False)
    return out


# ---- format ---------------------------------------------------------------------------------

def test_classes_and_palettes_follow_the_seed_order() -> None:
    assert YCOR_CLASSES[0] == 'high_vegetation' and YCOR_CLASSES[5] == 'rough_trail'
    assert len(YCOR_CLASSES) == len(YCOR_PALETTE) == 8
    assert set(YCOR_COST_TABLE) == set(YCOR_CLASSES)  # one cost per class
    assert all(0.0 <= cost <= 1.0 for cost in YCOR_COST_TABLE.values())
    assert YCOR_PALETTE[4] == (1, 88, 255)  # sky
    assert RAW_PALETTE[0] == (255, 255, 255) and set(RAW_PALETTE[1:]) == set(YCOR_PALETTE)


def test_colors_to_labels_known_answer() -> None:
    rgb = np.array([
        [(40, 80, 0), (128, 255, 0), (178, 176, 153), (255, 0, 0)],
        [(1, 88, 255), (156, 76, 30), (255, 0, 128), (0, 160, 0)],
        [(255, 255, 255), (7, 7, 7), (7, 7, 7), (255, 0, 1)],
    ], dtype=np.uint8)  # 3, 4, 3
    labels, unknown = colors_to_labels(rgb)
    expected = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [255, 255, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.uint8
    assert unknown == {(7, 7, 7): 2, (255, 0, 1): 1}
    assert colors_to_labels(rgb[:2])[1] == {}


def test_read_label_png_palette_and_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    index = rng.integers(0, 9, size=(12, 20)).astype(np.uint8)
    rgb = np.array(RAW_PALETTE, dtype=np.uint8)[index]  # 12, 20, 3
    palette_image = Image.fromarray(index)
    palette_image.putpalette([c for color in RAW_PALETTE for c in color])
    palette_image.save(tmp_path / 'p.png')
    Image.fromarray(rgb).save(tmp_path / 'rgb.png')
    assert Image.open(tmp_path / 'p.png').mode == 'P'
    np.testing.assert_array_equal(read_label_png(tmp_path / 'p.png'), rgb)
    np.testing.assert_array_equal(read_label_png(tmp_path / 'rgb.png'), rgb)


# ---- synthetic scenes -----------------------------------------------------------------------

def test_render_scene_is_deterministic() -> None:
    image, labels = render_scene(np.random.default_rng(3), H, W)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert labels.shape == (H, W) and labels.dtype == np.uint8
    again = render_scene(np.random.default_rng(3), H, W)
    np.testing.assert_array_equal(again[0], image)
    np.testing.assert_array_equal(again[1], labels)
    other = render_scene(np.random.default_rng(4), H, W)
    assert not np.array_equal(other[1], labels)
    assert not np.array_equal(other[0], image)


def test_render_scene_classes_values_and_colours() -> None:
    present = np.zeros(8, dtype=int)
    sums = np.zeros((8, 3))
    counts = np.zeros(8)
    for i in range(12):
        image, labels = render_scene(np.random.default_rng([1, 0, i]), H, W)
        assert set(np.unique(labels)) <= set(range(8)) | {IGNORE_INDEX}
        for cls in range(8):
            mask = labels == cls
            present[cls] += mask.any()
            sums[cls] += image[mask].sum(axis=0)
            counts[cls] += mask.sum()
    assert (present > 0).all(), f'classes never rendered: {np.nonzero(present == 0)[0]}'
    assert (present[[0, 1, 4]] == 12).all()  # tree line, grass and sky in every scene
    mean = sums / counts[:, None]  # 8, 3 mean RGB per class: labels follow the painting
    sky, grass, high_veg = mean[4], mean[1], mean[0]
    assert sky[2] > sky[0] + 30  # blue sky
    assert grass[1] > grass[2] + 40  # green grass
    assert high_veg.sum() < grass.sum() - 100  # dark trees
    distances = np.linalg.norm(mean[:, None] - mean[None], axis=2) + np.eye(8) * 1e3
    assert distances.min() > 12, 'two classes have nearly the same mean colour'


def test_write_synthetic_is_deterministic_and_palette_png(raw_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / 'again'
    write_synthetic_ycor(again, n=N_FRAMES, seed=SEED, height=H, width=W, valid_fraction=0.34,
                         progress=False)
    frames, frames_again = _frames(raw_dir), _frames(again)
    assert sorted(frames) == [f'iid{i:06d}' for i in range(N_FRAMES)]
    assert {d.parent.name for d in frames.values()} == {'train', 'valid'}
    assert [d.relative_to(raw_dir) for d in frames.values()] == [
        d.relative_to(again) for d in frames_again.values()]
    for iid, frame in frames.items():
        for name in ('rgb.jpg', 'labels.png'):
            assert (frame / name).read_bytes() == (frames_again[iid] / name).read_bytes()
        with Image.open(frame / 'labels.png') as png:
            assert png.mode == 'P' and png.info.get('transparency') is None
        decoded, unknown = colors_to_labels(read_label_png(frame / 'labels.png'))
        assert unknown == {}
        np.testing.assert_array_equal(decoded, _rendered_labels(SEED, int(iid[3:])))
    other = tmp_path / 'other'
    write_synthetic_ycor(other, n=2, seed=SEED + 1, height=H, width=W, valid_fraction=0.0,
                         progress=False)
    assert ((other / 'train/iid000000/labels.png').read_bytes()
            != (frames['iid000000'] / 'labels.png').read_bytes())
    assert not list(tmp_path.glob('.*.tmp'))  # no temporary left behind


# ---- conversion -----------------------------------------------------------------------------

def test_synth_convert_round_trip(raw_dir: Path, converted_dir: Path) -> None:
    manifest = json.loads((converted_dir / 'manifest.json').read_text())
    assert manifest['format'] == 'contrast_semask/ycor-1'
    assert manifest['classes'] == list(YCOR_CLASSES) and manifest['ignore_index'] == 255
    assert [tuple(c) for c in manifest['palette']] == list(YCOR_PALETTE)
    for split in ('train', 'valid'):
        info = manifest['splits'][split]
        iids = sorted(d.name for d in (raw_dir / split).iterdir())
        assert info['iids'] == iids and info['num_images'] == len(iids)
        assert info['sizes'] == {f'{W}x{H}': len(iids)}
        counts = np.zeros(256, dtype=np.int64)
        for iid in iids:
            assert ((converted_dir / 'images' / split / f'{iid}.jpg').read_bytes()
                    == (raw_dir / split / iid / 'rgb.jpg').read_bytes())
            with Image.open(converted_dir / 'labels' / split / f'{iid}.png') as png:
                assert png.mode == 'L'
                labels = np.asarray(png)
            np.testing.assert_array_equal(labels, _rendered_labels(SEED, int(iid[3:])))
            counts += np.bincount(labels.ravel(), minlength=256)
        assert info['class_pixels'] == {name: int(counts[i]) for i, name in
                                        enumerate(YCOR_CLASSES)}
        assert info['ignored_pixels'] == int(counts[255])
        assert sum(info['class_pixels'].values()) + info['ignored_pixels'] == len(iids) * H * W
    assert sorted(p.name for p in converted_dir.iterdir()) == ['images', 'labels',
                                                               'manifest.json']


def test_convert_zip_nested(raw_dir: Path, converted_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / 'yamaha_v0.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        for path in sorted(raw_dir.rglob('*')):
            zf.write(path, Path('yamaha_v0') / path.relative_to(raw_dir))
    out = tmp_path / 'from_zip'
    manifest = convert_ycor(archive, out, progress=False)
    reference = json.loads((converted_dir / 'manifest.json').read_text())
    assert manifest['splits'] == reference['splits']
    for path in sorted(converted_dir.rglob('*.*')):
        if path.name != 'manifest.json':
            assert (out / path.relative_to(converted_dir)).read_bytes() == path.read_bytes()


def test_convert_unknown_colour_is_atomic_or_ignored(raw_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / 'raw'
    shutil.copytree(raw_dir, source)
    iid = 'iid000002'
    frame = _frames(source)[iid]
    rgb = read_label_png(frame / 'labels.png')
    rgb[10:13, 20:24] = (10, 20, 30)  # 12 pixels of a colour outside the palette
    Image.fromarray(rgb).save(frame / 'labels.png')  # RGB now, not palette
    out = tmp_path / 'out'
    with pytest.raises(DataFormatError) as info:
        convert_ycor(source, out, progress=False)
    message = str(info.value)
    assert iid in message and '(10, 20, 30)' in message and '12 px' in message
    assert '--unknown-to-ignore' in message
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['raw']  # no temporary left behind

    manifest = convert_ycor(source, out, unknown_to_ignore=True, progress=False)
    split = frame.parent.name
    labels = np.asarray(Image.open(out / 'labels' / split / f'{iid}.png'))
    expected = _rendered_labels(SEED, 2)
    expected[10:13, 20:24] = IGNORE_INDEX
    np.testing.assert_array_equal(labels, expected)
    assert manifest['splits'][split]['unknown_colors'] == {
        iid: [{'rgb': [10, 20, 30], 'pixels': 12}]}


def test_convert_refuses_existing_output_and_bad_sources(raw_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError):
        convert_ycor(raw_dir, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ['keep.txt']
    empty = tmp_path / 'empty'
    empty.mkdir()
    convert_ycor(raw_dir, empty, progress=False)  # an empty directory is fine
    assert (empty / 'manifest.json').is_file()

    nothing = tmp_path / 'nothing'
    nothing.mkdir()
    with pytest.raises(DataFormatError, match='no train/ or valid/'):
        convert_ycor(nothing, tmp_path / 'o1', progress=False)
    broken = tmp_path / 'broken'
    shutil.copytree(raw_dir, broken)
    (_frames(broken)['iid000001'] / 'labels.png').unlink()
    with pytest.raises(DataFormatError, match='iid000001 is missing labels.png'):
        convert_ycor(broken, tmp_path / 'o2', progress=False)
    mismatch = tmp_path / 'mismatch'
    shutil.copytree(raw_dir, mismatch)
    frame = _frames(mismatch)['iid000003']
    Image.fromarray(read_label_png(frame / 'labels.png')[:-1]).save(frame / 'labels.png')
    with pytest.raises(DataFormatError, match=f'iid000003: rgb.jpg is {W}x{H}'):
        convert_ycor(mismatch, tmp_path / 'o3', progress=False)
    assert not any((tmp_path / name).exists() for name in ('o1', 'o2', 'o3'))


# ---- transforms -----------------------------------------------------------------------------

def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return render_scene(np.random.default_rng(seed), H, W)


def test_train_transform_shapes_padding_and_values() -> None:
    image, labels = _scene()
    transform = TrainTransform(scale=(256, 128), crop=96)
    for seed in range(4):
        out_image, out_labels = transform(image, labels, np.random.default_rng(seed))
        assert out_image.shape == (3, 96, 96) and out_image.dtype == np.float32
        assert out_labels.shape == (96, 96) and out_labels.dtype == np.int64
        assert set(np.unique(out_labels)) <= set(np.unique(labels)) | {IGNORE_INDEX}
    # ratio 0.5: (128, 64) fits 160x96 into 107x64, so rows 64.. of a 96-crop are padding
    assert rescale_size(W, H, (128, 64)) == (107, 64)
    small = TrainTransform(scale=(256, 128), ratios=(0.5,), crop=(96, 128), photometric=False)
    out_image, out_labels = small(image, labels, np.random.default_rng(0))
    assert out_image.shape == (3, 96, 128)
    assert (out_image[:, 64:] == 0).all() and (out_image[:, :, 107:] == 0).all()
    assert (out_labels[64:] == IGNORE_INDEX).all() and (out_labels[:, 107:] == IGNORE_INDEX).all()
    assert (out_labels[:64, :107] != IGNORE_INDEX).mean() > 0.8
    assert np.abs(out_image[:, :64, :107]).mean() > 0.1


def test_train_transform_is_deterministic_given_the_rng() -> None:
    image, labels = _scene()
    transform = TrainTransform(scale=(256, 128), crop=64)
    first = transform(image, labels, np.random.default_rng(5))
    second = transform(image, labels, np.random.default_rng(5))
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.labels, second.labels)
    others = [transform(image, labels, np.random.default_rng(s)).image for s in range(6, 9)]
    assert not all(np.array_equal(first.image, other) for other in others)


def test_train_transform_flip() -> None:
    x = np.arange(W, dtype=np.float32)[None, :, None] * 255 / W  # left-right ramp
    image = np.broadcast_to(x, (H, W, 3)).astype(np.uint8)
    image = np.ascontiguousarray(image)
    image[:, :, 1] = np.arange(H, dtype=np.uint8)[:, None]
    labels = (np.arange(W)[None, :] * 8 // W).repeat(H, axis=0).astype(np.uint8)
    base = dict(scale=(W, H), ratios=(1.0,), crop=(H, W), photometric=False)
    plain = TrainTransform(flip_prob=0.0, **base)(image, labels, np.random.default_rng(0))
    flipped = TrainTransform(flip_prob=1.0, **base)(image, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(plain.labels, labels)  # identity resize and crop
    np.testing.assert_allclose(plain.image, normalize(image))
    np.testing.assert_array_equal(flipped.labels, plain.labels[:, ::-1])
    np.testing.assert_array_equal(flipped.image, plain.image[:, :, ::-1])


def test_photometric_distortion_forced_and_off() -> None:
    image, _ = _scene()
    forced = PhotoMetricDistortion(prob=1.0)
    changed = 0
    for seed in range(4):
        out = forced(image, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == image.shape
        changed += not np.array_equal(out, image)
        np.testing.assert_array_equal(out, forced(image, np.random.default_rng(seed)))
    assert changed == 4
    off = PhotoMetricDistortion(prob=0.0)(image, np.random.default_rng(0))
    np.testing.assert_array_equal(off, image)
    # neutral contrast/saturation; grey has no hue: only the brightness shift U(-32, 32) acts
    neutral = PhotoMetricDistortion(contrast_range=(1.0, 1.0), saturation_range=(1.0, 1.0),
                                    hue_delta=1, prob=1.0)
    grey = np.full((4, 4, 3), 100, dtype=np.uint8)
    values = set()
    for seed in range(8):
        out = neutral(grey, np.random.default_rng(seed))
        assert len(np.unique(out)) == 1
        values.add(int(out[0, 0, 0]))
    assert 68 <= min(values) < 100 < max(values) <= 132 and len(values) > 4
    light = [int(neutral(np.full((2, 2, 3), 250, np.uint8), np.random.default_rng(s))[0, 0, 0])
             for s in range(8)]
    assert min(light) >= 250 - 32 and 255 in light  # clipped at 255, not wrapped around


def test_photometric_hue_wraps_in_opencv_hsv() -> None:
    import cv2

    hsv = np.zeros((4, 4, 3), dtype=np.uint8)
    hsv[..., 0], hsv[..., 1], hsv[..., 2] = 2, 255, 255  # a saturated red, hue 2 of [0, 180)
    red = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    hue_only = PhotoMetricDistortion(brightness_delta=0, contrast_range=(1.0, 1.0),
                                     saturation_range=(1.0, 1.0), hue_delta=18, prob=1.0)
    hues = set()
    for seed in range(20):
        out = cv2.cvtColor(hue_only(red, np.random.default_rng(seed)), cv2.COLOR_RGB2HSV)
        hue = int(out[0, 0, 0])
        assert (out[..., 0] == hue).all()
        assert min((hue - 2) % 180, (2 - hue) % 180) <= 19  # within +-18 on the hue circle
        hues.add(hue)
    assert any(h > 160 for h in hues) and any(h < 20 for h in hues)  # wrapped below 0


def test_eval_transform_is_runtime_preprocessing() -> None:
    assert rescale_size(1024, 544) == (964, 512)
    image, labels = _scene()
    transform = EvalTransform(scale=(256, 128))
    out_image, out_labels = transform(image, labels)
    np.testing.assert_array_equal(out_image, normalize(fit_to_scale(image, (256, 128))))
    assert out_image.shape == (3, 128, 213)
    np.testing.assert_array_equal(out_labels, labels)
    assert out_labels.dtype == np.int64
    full = np.zeros((544, 1024, 3), dtype=np.uint8)
    seed_out = EvalTransform()(full, np.zeros((544, 1024), np.uint8))
    assert seed_out.image.shape == (3, 512, 964) and seed_out.labels.shape == (544, 1024)


# ---- dataset and CLI ------------------------------------------------------------------------

def test_dataset_items_are_a_function_of_seed_epoch_index(converted_dir: Path) -> None:
    transform = TrainTransform(scale=(256, 128), crop=64)
    dataset = SegmentationDataset(converted_dir, 'train', transform, seed=3)
    assert dataset.stems == sorted(p.stem for p in (converted_dir / 'images/train').iterdir())
    assert dataset.class_names == YCOR_CLASSES and len(dataset) == len(dataset.stems)
    image, labels = dataset[1]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert labels.shape == (64, 64) and labels.dtype == torch.int64
    twin = SegmentationDataset(converted_dir, 'train', transform, seed=3)
    torch.testing.assert_close(twin[1][0], image)
    assert torch.equal(twin[1][1], labels)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1][0], image)
    dataset.set_epoch(0)
    torch.testing.assert_close(dataset[1][0], image)
    assert not torch.equal(SegmentationDataset(converted_dir, 'train', transform, seed=4)[1][0],
                           image)
    assert len(SegmentationDataset(converted_dir, 'train', transform, max_items=2)) == 2


def test_dataset_eval_split_and_errors(raw_dir: Path, converted_dir: Path,
                                      tmp_path: Path) -> None:
    dataset = SegmentationDataset(converted_dir, 'valid', EvalTransform(scale=(256, 128)))
    image, labels = dataset[0]
    assert image.shape == (3, 128, 213) and labels.shape == (H, W)
    expected = _rendered_labels(SEED, int(dataset.stems[0][3:]))
    np.testing.assert_array_equal(labels.numpy(), expected)
    with pytest.raises(DataFormatError, match='contrast-semask-data convert-ycor'):
        SegmentationDataset(raw_dir, 'train', EvalTransform())
    with pytest.raises(DataFormatError, match='contrast-semask-data convert-ycor'):
        SegmentationDataset(raw_dir.parent, 'train', EvalTransform())
    with pytest.raises(DataFormatError, match='expected .*images/test'):
        SegmentationDataset(converted_dir, 'test', EvalTransform())


def test_cli_synth_then_convert(tmp_path: Path) -> None:
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    assert data_main(['--no-progress', 'synth', str(raw), '--n', '3', '--seed', '2',
                      '--height', '48', '--width', '64', '--valid-fraction', '0.3']) == 0
    assert sorted(p.name for p in raw.iterdir()) == ['train', 'valid']
    assert data_main(['--no-progress', 'convert-ycor', str(raw), str(out)]) == 0
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['splits']['train']['num_images'] == 2
    assert manifest['splits']['valid']['sizes'] == {'64x48': 1}
    assert len(list((out / 'labels/train').glob('iid*.png'))) == 2
    assert data_main(['--no-progress', 'convert-ycor', str(tmp_path / 'missing'),
                      str(tmp_path / 'o')]) == 2
    assert data_main(['--no-progress', 'convert-ycor', str(raw), str(out)]) == 2  # exists
    assert data_main(['--no-progress', 'synth', str(out)]) == 2
