"""RuntimeStats (contrast_semask_ros/stats.py): one record per frame and per patch, running
totals reported by DDS, the diagnostics summary."""

from __future__ import annotations

import numpy as np

from contrast_semask_ros.bank import AddResult
from contrast_semask_ros.pipeline import (
    PATCH_ADDED,
    PATCH_MISS,
    FrameResult,
    PatchResult,
    Payloads,
    StageTimings,
)
from contrast_semask_ros.stats import RuntimeStats


def _frame(size_change: str | None = None, stamp_jump: str | None = None) -> FrameResult:
    plane = np.zeros((2, 2), np.float32)
    return FrameResult(1, np.zeros((1, 1, 1), np.float32), plane, plane, 3,
                       StageTimings(1.0, 2.0, 0.5, 0.5, 4.0), Payloads(None, None),
                       size_change, stamp_jump)


def test_record_frame_and_patch_count_everything_once() -> None:
    stats = RuntimeStats()
    stats.record_frame(_frame(), 0.1, 0.2, 5.0, 0.01, 3, now_s=0.0)
    stats.record_frame(_frame('size', 'jump'), 0.1, 0.2, 5.0, 0.01, 3, now_s=0.1)
    stats.record_patch(PatchResult(1, PATCH_ADDED, None, 1, AddResult(2, 1, 3, 0, 1), 0.5), 5)
    stats.record_patch(PatchResult(2, PATCH_MISS, 'evicted', None, None, 0.1), 5)
    counts = stats.counts()
    assert counts['frames_out'] == 2 and counts['size_changes'] == 1
    assert counts['stamp_jumps'] == 1
    assert counts['patches_in'] == 2 and counts['patches_added'] == 1
    assert counts['patches_miss'] == 1 and counts['prototypes_added'] == 2
    assert counts['prototypes_merged'] == 1 and counts['patch_regions_too_small'] == 3
    assert counts['patch_regions_invalid'] == 1
    snapshot = stats.snapshot()
    assert snapshot['infer_ms median'] == 2.0 and snapshot['bank_size'] == 5
    assert snapshot['rate_hz'] == 10.0


def test_lost_samples_follow_the_running_total_not_summed_deltas() -> None:
    stats = RuntimeStats()
    for total in (3, 7, 7, 2):  # a stray smaller report never makes it go back
        stats.gauge_max('frames_lost_in_transport', total)
    assert stats.snapshot()['frames_lost_in_transport'] == 7


def test_summary_warns_on_bad_inputs() -> None:
    stats = RuntimeStats()
    assert stats.summary(('frames_rejected',))[0] is False
    stats.count('frames_rejected', 2)
    warn, message, values = stats.summary(('frames_rejected',))
    assert warn and '2 bad inputs' in message and values['frames_rejected'] == '2'
