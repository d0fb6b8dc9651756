"""Replay's report: report.json, the plots, the contact sheet and the one-line summary.

    report = build_report(bag, pipeline, recorder, wall_s, realtime=False, max_cost=1.0)
    write_report(out_dir, report, recorder, sheet)   # report.json + latency/coverage/held_out.png
    print(summarize(report))                         #   + contact_sheet.png

matplotlib and OpenCV are imported only when writing (a robot replaying without plots needs
neither to import this module).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from contrast_semask_ros.metrics import STAGES, Recorder
from contrast_semask_ros.pipeline import Pipeline

SHEET_FRAMES = 6  # rows of the contact sheet


class SheetRow(NamedTuple):
    stamp_ns: int
    camera: np.ndarray  # H, W, 3 uint8 RGB
    cost: np.ndarray  # H, W, 3 uint8 RGB overlay of the propagated cost
    truth: np.ndarray | None  # H, W, 3 uint8 RGB overlay of the ground truth, if any


class ContactSheet:
    """An evenly thinned sample of frames (camera | propagated cost | ground truth); memory
    stays bounded however long the bag."""

    def __init__(self, max_cost: float, rows: int = SHEET_FRAMES) -> None:
        self.max_cost, self.rows = max_cost, rows
        self._kept: list[SheetRow] = []

    def add(self, stamp_ns: int, camera: np.ndarray, cost_overlay: np.ndarray) -> None:
        self._kept.append(SheetRow(stamp_ns, camera, cost_overlay, None))
        if len(self._kept) > 4 * self.rows:  # keep an evenly thinned sample
            self._kept = self._kept[::2]

    def add_truth(self, stamp_ns: int, truth: np.ndarray) -> None:
        """truth (H, W) float cost, NaN = unlabelled, for the kept frame of that stamp."""
        for i, row in enumerate(self._kept):
            if row.stamp_ns == stamp_ns:
                from contrast_semask_ros.visualize import cost_overlay

                self._kept[i] = row._replace(truth=cost_overlay(row.camera, truth,
                                                                self.max_cost))

    def image(self) -> np.ndarray | None:
        """(rows * H, W_max, 3) uint8 RGB, or None when no frame was kept."""
        if not self._kept:
            return None
        picks = np.linspace(0, len(self._kept) - 1, min(self.rows, len(self._kept)))
        lines = []
        for i in picks.round():
            row = self._kept[int(i)]
            lines.append(np.concatenate([row.camera, row.cost] + (
                [row.truth] if row.truth is not None else []), axis=1))
        width = max(line.shape[1] for line in lines)
        lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0))) for line in lines]
        return np.concatenate(lines, axis=0)


def build_report(bag: Path, pipeline: Pipeline, rec: Recorder, wall_s: float,
                 realtime: bool, max_cost: float, bag_format: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """What report.json holds: the run (bag and how it was read, model, backend), then the
    recorder's numbers."""
    spec = pipeline.backend.spec
    frames = len(rec.frame_stamps)
    return {
        'bag': str(bag), 'bag_format': dict(bag_format or {}),
        'checkpoint_sha256': spec.checkpoint_sha256,
        'backend': pipeline.backend.name, 'engine_size': [spec.height, spec.width],
        'wall_s': wall_s, 'throughput_fps': frames / wall_s if wall_s > 0 else 0.0,
        'realtime': realtime, 'max_cost': max_cost,
        **rec.summary(),
        'config': asdict(pipeline.config),  # as validated: bank_size 0 resolved to Kmax
    }


def write_report(out_dir: Path, report: dict[str, Any], rec: Recorder,
                 sheet: ContactSheet) -> None:
    """report.json, latency.png, coverage.png, held_out.png and contact_sheet.png."""
    (out_dir / 'report.json').write_text(json.dumps(report, indent=2, default=str))
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    for name, draw in (('latency', _latency), ('coverage', _coverage), ('held_out', _held_out)):
        fig = draw(plt, report, rec)
        fig.tight_layout()
        fig.savefig(out_dir / f'{name}.png', dpi=100)
        plt.close(fig)
    image = sheet.image()
    if image is not None:
        import cv2

        cv2.imwrite(str(out_dir / 'contact_sheet.png'), image[..., ::-1])  # RGB -> BGR


def _latency(plt: Any, report: dict[str, Any], rec: Recorder) -> Any:
    stages = [s for s in STAGES if rec.latency.get(s)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.boxplot([rec.latency[s] for s in stages], showfliers=False)
    left.set_xticks(range(1, len(stages) + 1), [s.removesuffix('_ms') for s in stages],
                    rotation=30)
    left.set_ylabel('ms')
    left.set_title('latency per stage')
    for stage in ('infer_ms', 'frame_ms'):
        right.plot(rec.latency.get(stage, []), label=stage.removesuffix('_ms'))
    right.set_xlabel('frame')
    right.set_ylabel('ms')
    right.legend()
    right.set_title(f"throughput {report['throughput_fps']:.2f} frames/s")
    return fig


def _coverage(plt: Any, report: dict[str, Any], rec: Recorder) -> Any:
    fig, left = plt.subplots(figsize=(8, 4))
    left.plot(rec.coverage, color='tab:blue')
    left.set_ylabel('known pixels (fraction)', color='tab:blue')
    left.set_ylim(0, 1.02)
    left.set_xlabel('frame')
    right = left.twinx()
    right.plot(rec.bank_sizes, color='tab:orange')
    right.set_ylabel('prototypes in the bank', color='tab:orange')
    left.set_title('coverage and bank growth')
    return fig


def _held_out(plt: Any, report: dict[str, Any], rec: Recorder) -> Any:
    fig, ax = plt.subplots(figsize=(5, 5))
    known = [r for r in rec.held_out if not math.isnan(r.predicted)]
    ax.scatter([r.measured for r in known], [r.predicted for r in known], s=12, alpha=0.6)
    top = report.get('max_cost', 1.0)
    ax.plot([0, top], [0, top], 'k--', lw=1)
    held = report['held_out']
    ax.set_title(f"held-out patches: MAE {held.get('mae', math.nan):.3f}, "
                 f"Spearman {held.get('spearman', math.nan):.2f}")
    ax.set_xlabel('measured cost')
    ax.set_ylabel('propagated cost (region mean)')
    return fig


def summarize(report: dict[str, Any]) -> str:
    """One line: frames, throughput, held-out and ground-truth error, coverage, latency."""
    held, gt = report['held_out'], report['ground_truth']
    infer = report['latency_ms'].get('infer_ms', {})
    parts = [f"{report['frames']} frames at {report['throughput_fps']:.2f} frames/s",
             f"infer median {infer.get('median', math.nan):.1f} ms",
             f"coverage {report['coverage']['final']:.0%} (final)",
             f"bank {report['bank_size_final']}"]
    if 'mae' in held:
        parts.append(f"held-out MAE {held['mae']:.3f} over {held['regions']} regions")
    if 'cost_mae' in held:
        parts.append(f"held-out cost MAE {held['cost_mae']:.3f} against the ground truth")
    if 'mae' in gt:
        parts.append(f"ground-truth MAE {gt['mae']:.3f} on {gt['known_of_labelled']:.0%} "
                     'of labelled pixels')
    if skipped := sum(report.get('skipped', {}).values()):
        parts.append(f'{skipped} messages skipped')
    if sup := report.get('supervision'):
        parts.append(f"self-supervision ({sup['signal']}): {sup['labels']} labels on "
                     f"{sup['frames_labelled']} of {sup['keyframes']} keyframes, label latency "
                     f"median {sup['latency_s'].get('median', math.nan):.1f} s, Spearman vs "
                     f"ground truth {sup['spearman_vs_truth']:.3f}, footprint IoU "
                     f"{sup['footprint_iou']:.3f}")
    return ', '.join(parts)
