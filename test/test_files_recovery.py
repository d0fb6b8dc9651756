"""Damaged and partial files on the training side: stale temp files, a killed first write of
last.pt, truncated JPEGs in convert-ycor, an ONNX file and a spec from different exports."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from contrast_semask_ros.atomic import clean_stale, stale_temp_files
from contrast_semask_ros.engine_spec import EngineSpec, EngineSpecError, read_spec, spec_path
from contrast_semask_train.config import build_config
from contrast_semask_train.data import DataFormatError, convert_ycor, write_synthetic_ycor
from contrast_semask_train.data.dataset import SegmentationDataset
from contrast_semask_train.data.transforms import EvalTransform

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / 'config' / 'train' / 'micro_contrastive.yaml'


@pytest.fixture(scope='module')
def raw_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('raw')
    write_synthetic_ycor(root / 'yamaha_v0', n=10, seed=3, height=68, width=128,
                         valid_fraction=0.2, progress=False)
    return root / 'yamaha_v0'


@pytest.fixture(scope='module')
def synth_data(raw_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('conv') / 'ycor'
    convert_ycor(raw_data, out, progress=False)
    return out


# ----------------------------------------------------------------------------------------------
# stale temp files


def test_clean_stale_removes_what_a_killed_write_left(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / 'last.pt').write_bytes(b'complete')
    (tmp_path / '.last.pt.abc123.tmp').write_bytes(b'partial')
    (tmp_path / '.ycor.x1.tmp' / 'images').mkdir(parents=True)
    (tmp_path / 'ycor.tmp-9').mkdir()  # the older naming
    (tmp_path / '.other.pt.abc.tmp').write_bytes(b'someone else')
    with caplog.at_level(logging.INFO):
        removed = clean_stale(tmp_path, 'last.pt') + clean_stale(tmp_path, 'ycor')
    assert sorted(p.name for p in removed) == ['.last.pt.abc123.tmp', '.ycor.x1.tmp',
                                               'ycor.tmp-9']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.other.pt.abc.tmp', 'last.pt']
    assert caplog.text.count('left by an interrupted write') == 3


def test_convert_ycor_cleans_a_killed_conversion_and_loaders_ignore_temps(
        raw_data: Path, tmp_path: Path) -> None:
    stale = tmp_path / '.ycor.k1ll3d.tmp'
    (stale / 'images' / 'train').mkdir(parents=True)
    out = tmp_path / 'ycor'
    convert_ycor(raw_data, out, progress=False)
    assert not stale.exists()
    # a partial file a killed writer left among the images is not an item (nor an error)
    (out / 'images' / 'train' / '.iid999.jpg').write_bytes(b'\xff\xd8partial')
    (out / 'images' / 'train' / 'iid998.tmp-1.jpg').write_bytes(b'\xff\xd8partial')
    dataset = SegmentationDataset(out, 'train', EvalTransform(scale=(128, 64)))
    assert len(dataset) == 8 and all('tmp' not in s and not s.startswith('.')
                                     for s in dataset.stems)
    # a raw source whose parent holds a stale temp copy is still one tree
    parent = tmp_path / 'src'
    parent.mkdir()
    os.symlink(raw_data, parent / 'yamaha_v0')
    (parent / '.yamaha_v0.x.tmp' / 'train' / 'iid0').mkdir(parents=True)
    manifest = convert_ycor(parent, tmp_path / 'again', progress=False)
    assert manifest['splits']['train']['num_images'] == 8


def test_output_permissions_follow_the_umask(raw_data: Path, tmp_path: Path) -> None:
    from contrast_semask_train.model import build_model, save_checkpoint

    old = os.umask(0o027)
    try:
        out = tmp_path / 'ycor'
        convert_ycor(raw_data, out, progress=False)
        ckpt = save_checkpoint(tmp_path / 'm.pt', build_model('micro', 8, 'contrastive'))
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o750  # not mkdtemp's 0700
    assert (out / 'manifest.json').stat().st_mode & 0o777 == 0o640
    assert ckpt.stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600


# ----------------------------------------------------------------------------------------------
# truncated images in convert-ycor


def _truncate_jpeg(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_convert_ycor_refuses_truncated_jpegs_and_lists_them(
        raw_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from contrast_semask_train.data.cli import main

    raw = _copy_tree(raw_data, tmp_path / 'raw')
    iids = sorted(p.name for p in (raw / 'train').iterdir())
    for iid in iids[:2]:
        _truncate_jpeg(raw / 'train' / iid / 'rgb.jpg')
    out = tmp_path / 'ycor'
    with pytest.raises(DataFormatError, match='2 frame') as info:
        convert_ycor(raw, out, progress=False)
    assert all(f'train/{iid}/rgb.jpg' in str(info.value) for iid in iids[:2])
    assert '--skip-bad' in str(info.value) and not out.exists()
    assert stale_temp_files(tmp_path, 'ycor') == []
    assert main(['convert-ycor', str(raw), str(out), '--no-progress']) == 2
    assert not out.exists()
    caplog.clear()
    assert main(['convert-ycor', str(raw), str(out), '--no-progress', '--skip-bad']) == 0
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['splits']['train']['num_images'] == len(iids) - 2
    assert len(manifest['skipped']) == 2 and iids[0] not in manifest['splits']['train']['iids']
    assert 'left out 2 frame(s) whose images do not decode' in caplog.text
    assert len(SegmentationDataset(out, 'train', EvalTransform(scale=(128, 64)))) == 6


def test_a_jpeg_that_decodes_is_accepted_whole(tmp_path: Path) -> None:
    """The full decode is no stricter than needed: a complete JPEG with trailing bytes is
    fine (PIL reads to the end-of-image marker)."""
    from PIL import Image

    from contrast_semask_train.data.ycor import BadImageError, _convert_frame

    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, format='JPEG')
    labels = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(labels, format='PNG')
    frame = _convert_frame('train', 'iid1', buf.getvalue() + b'\0\0', labels.getvalue(), False)
    assert frame.size == (16, 16)
    with pytest.raises(BadImageError, match='train/iid1/rgb.jpg does not decode'):
        _convert_frame('train', 'iid1', buf.getvalue()[:200], labels.getvalue(), False)


# ----------------------------------------------------------------------------------------------
# resume after a kill: last.pt missing or truncated, best.pt complete


def _tiny(data: Path, work_dir: Path, **overrides: object):
    values = {'data.root': str(data), 'work_dir': str(work_dir), 'crop_size': 64,
              'scale': [128, 64], 'eval_scale': [128, 64], 'batch_size': 2, 'num_workers': 0,
              'max_iters': 4, 'warmup_iters': 1, 'log_interval': 1, 'eval_interval': 2,
              'checkpoint_interval': 100, 'tensorboard': False, 'progress': False,
              'max_val_images': 1, 'loss.seed.num_samples': 128, **overrides}
    return build_config(PRESET, values)


def _losses(work_dir: Path) -> list[tuple[int, float]]:
    lines = (work_dir / 'metrics.jsonl').read_text().splitlines()
    return [(r['step'], r['loss']) for r in map(json.loads, lines) if 'loss' in r]


@pytest.mark.slow
def test_resume_falls_back_to_best_when_last_was_killed_in_its_first_write(
        synth_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from contrast_semask_train.train import train

    work = tmp_path / 'run'
    train(_tiny(synth_data, work, stop_at=2))  # step 2: best.pt, then last.pt
    partial = work / '.last.pt.k1ll3d.tmp'
    partial.write_bytes((work / 'last.pt').read_bytes()[:1000])  # the killed first write
    (work / 'last.pt').unlink()
    with caplog.at_level(logging.INFO):
        result = train(_tiny(synth_data, work), resume=True)
    assert result.step == 4
    assert f'resuming from {work / "best.pt"} (iteration 2) instead' in caplog.text
    assert f'removed {partial}' in caplog.text and not partial.exists()
    assert [s for s, _ in _losses(work)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_resume_after_truncation_with_bf16_autocast_matches_the_straight_run(
        synth_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """AMP on (bf16 autocast on the CPU): a truncated last.pt (a non-atomic copy) falls back
    to best.pt of the same step, and the resumed run repeats the straight run exactly."""
    from contrast_semask_train.train import train

    straight = tmp_path / 'straight'
    train(_tiny(synth_data, straight, dtype='bfloat16'))
    work = tmp_path / 'split'
    train(_tiny(synth_data, work, dtype='bfloat16', stop_at=2))
    data = (work / 'last.pt').read_bytes()
    (work / 'last.pt').write_bytes(data[:len(data) // 3])
    with caplog.at_level(logging.WARNING):
        train(_tiny(synth_data, work, dtype='bfloat16'), resume=True)
    assert 'truncated or damaged' in caplog.text and 'best.pt (iteration 2)' in caplog.text
    reference, resumed = _losses(straight), _losses(work)
    assert [s for s, _ in resumed] == [1, 2, 3, 4]
    assert resumed == reference
    last = torch.load(work / 'last.pt', weights_only=True)
    ref = torch.load(straight / 'last.pt', weights_only=True)
    for key, value in ref['model'].items():
        assert torch.equal(value, last['model'][key]), key


def test_resume_with_nothing_complete_says_what_it_found(synth_data: Path, tmp_path: Path) -> None:
    from contrast_semask_train.model import CheckpointError
    from contrast_semask_train.train import train

    work = tmp_path / 'run'
    work.mkdir()
    (work / 'last.pt').write_bytes(b'')
    (work / 'best.pt').write_bytes(b'PK\x03\x04partial')
    with pytest.raises(CheckpointError, match=r'no complete checkpoint in .*last.pt is empty.*'
                                              r'best.pt \(\d+ bytes\) is truncated'):
        train(_tiny(synth_data, work), resume=True)


# ----------------------------------------------------------------------------------------------
# the three export files belong together


def _spec_for(onnx: Path, sha: str) -> EngineSpec:
    import dataclasses

    spec = EngineSpec.build(height=32, width=32, bank_size=4, embedding_dim=16, stride=4,
                            mean=(0, 0, 0), std=(1, 1, 1), class_names=(),
                            checkpoint_sha256='0' * 64, precision='fp32', opset=18)
    return dataclasses.replace(spec, onnx_sha256=sha)


def test_read_spec_refuses_an_onnx_file_from_another_export(tmp_path: Path) -> None:
    import hashlib

    onnx = tmp_path / 'm.onnx'
    onnx.write_bytes(b'graph one')
    spec = _spec_for(onnx, hashlib.sha256(b'graph one').hexdigest())
    spec_path(onnx).write_text(spec.to_json())
    assert read_spec(onnx) == spec
    onnx.write_bytes(b'graph two')  # a later export replaced the ONNX file only
    with pytest.raises(EngineSpecError, match='different exports'):
        read_spec(onnx)
    assert read_spec(onnx, verify=False) == spec
    old = {k: v for k, v in spec.to_dict().items() if k not in ('onnx_sha256', 'engine_sha256')}
    spec_path(onnx).write_text(json.dumps(old))  # an export from before the hash: accepted
    assert read_spec(onnx).onnx_sha256 == ''


@pytest.mark.slow
def test_export_commits_the_three_files_together(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip('onnxruntime')
    from contrast_semask_train import export
    from contrast_semask_train.model import build_model, save_checkpoint

    ckpt = save_checkpoint(tmp_path / 'm.pt', build_model('micro', 8, 'contrastive'))
    out = tmp_path / 'models' / 'm.onnx'
    args = ['onnx', str(ckpt), '--height', '32', '--width', '32', '--bank-size', '4',
            '--out', str(out)]
    assert export.main(args) == 0
    spec = read_spec(out)  # verifies the recorded sha256 against the file
    assert len(spec.onnx_sha256) == 64
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    # a failure after the ONNX temp is written, while the spec is written: nothing new lands
    (out.parent / '.m.onnx.json.k1ll3d.tmp').write_text('{')  # and a stale temp is removed

    def broken_json(self: EngineSpec) -> str:
        raise OSError('simulated failure between the ONNX file and its spec')

    monkeypatch.setattr(EngineSpec, 'to_json', broken_json)
    other = save_checkpoint(tmp_path / 'n.pt', build_model('micro', 8, 'contrastive'))
    assert export.main([*args[:1], str(other), *args[2:]]) == 2
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before
