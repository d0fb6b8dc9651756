"""Replay's report: report.json, the plots, the contact sheet and the one-line summary.

    report = build_report(bag, pipeline, recorder, wall_s, realtime=False, max_cost=1.0)
    write_report(out_dir, report, recorder, sheet)   # report.json + latency/coverage/held_out.png
    print(summarize(report))                         #   + contact_sheet.png (+ bev.png)

matplotlib and OpenCV are imported only when writing (a robot replaying without plots needs
neither to import this module).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from contrast_semask_ros.metrics import STAGES, Recorder
from contrast_semask_ros.pipeline import Pipeline

if TYPE_CHECKING:
    from contrast_semask_ros.replay_world import BevPlot

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
                 sheet: ContactSheet, bev: BevPlot | None = None) -> None:
    """report.json, latency.png, coverage.png, held_out.png and contact_sheet.png; bev.png
    with the cost grid's picture (write_bev)."""
    (out_dir / 'report.json').write_text(json.dumps(report, indent=2, default=str))
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    for name, draw in (('latency', _latency), ('coverage', _coverage), ('held_out', _held_out)):
        fig = draw(plt, report, rec)
        fig.tight_layout()
        fig.savefig(out_dir / f'{name}.png', dpi=100)
        plt.close(fig)
    if bev is not None:
        write_bev(out_dir / 'bev.png', bev)
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


def write_bev(path: Path, bev: BevPlot) -> None:
    """The top-down picture of the cost grid: the fused grid at the end beside the ground truth
    over the same window (top), and the last known value of every cell ever observed beside
    the ground truth over the same extent (bottom); on each, the path driven (the whole
    odometry) and the robot at the last grid's frame. Without a ground truth, the fused panels
    alone. Blue cheap, red costly, grey unknown."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = [('fused grid at the end', bev.final, bev.final_extent),
              ('every cell observed (its last value)', bev.mosaic, bev.mosaic_extent)]
    columns = 2 if bev.truth is not None else 1
    fig, axes = plt.subplots(2, columns, figsize=(6 * columns, 11), squeeze=False,
                             layout='constrained')
    cmap = matplotlib.colormaps['coolwarm'].with_extremes(bad='0.85')
    image = None
    for row, (title, values, extent) in enumerate(panels):
        ax = axes[row][0]
        if values is not None:
            image = ax.imshow(values, origin='lower', extent=extent, cmap=cmap, vmin=0,
                              vmax=bev.max_cost, interpolation='nearest')
        ax.set_title(title)
        if bev.truth is not None:
            truth = axes[row][1]
            data = bev.truth.data
            k = max(1, -(-max(data.shape) // 4000))  # at most 4000 cells a side
            shown = np.where(data[::k, ::k] >= 0, data[::k, ::k] / 100.0, np.nan)
            truth.imshow(shown, origin='lower', extent=bev.truth.extent, cmap=cmap, vmin=0,
                         vmax=bev.max_cost, interpolation='nearest')
            truth.set_title('ground truth')
        for ax in axes[row]:
            if len(bev.path):
                ax.plot(bev.path[:, 0], bev.path[:, 1], 'k-', lw=1.2, label='path (odometry)')
            if bev.robot is not None:
                ax.plot(*bev.robot, 'k^', ms=8, label='robot at the last grid')
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_aspect('equal')
            ax.set_xlabel(f'x ({bev.frame_id}, m)')
            ax.set_ylabel(f'y ({bev.frame_id}, m)')
    axes[0][0].legend(loc='upper right', fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label='cost')
    fig.suptitle(bev.title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    if bev := report.get('bev'):
        parts.append(f"cost grid: {bev['coverage_m2']:.0f} m^2 observed" + (
            f", BEV MAE {bev['cost_mae']:.3f} over the {bev['cells']} cells the frames observed"
            f" (the frames alone there {bev['frame_cost_mae']:.3f}, the images at their points"
            f" {bev['image_cost_mae']:.3f}, whole window {bev['window_cost_mae']:.3f}), "
            f"high-cost recall {bev['high_cost_recall']:.2f}"
            if 'cost_mae' in bev else ''))
    if skipped := sum(report.get('skipped', {}).values()):
        parts.append(f'{skipped} messages skipped')
    if sup := report.get('supervision'):
        parts.append(f"self-supervision ({sup['signal']}): {sup['labels']} labels on "
                     f"{sup['frames_labelled']} of {sup['keyframes']} keyframes, label latency "
                     f"median {sup['latency_s'].get('median', math.nan):.1f} s, Spearman vs "
                     f"ground truth {sup['spearman_vs_truth']:.3f}, footprint IoU "
                     f"{sup['footprint_iou']:.3f}")
    return ', '.join(parts)
