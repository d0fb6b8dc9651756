"""The latest-frame worker thread (contrast_semask_ros/worker.py), without ROS."""

from __future__ import annotations

import threading
import time

from contrast_semask_ros.worker import LatestWorker


def test_processes_the_newest_item_and_reports_replaced_ones() -> None:
    release, seen, errors = threading.Event(), [], []

    def process(item: int, _submitted: float) -> None:
        if item == 0:
            release.wait(5)  # busy with the first item while more arrive
        seen.append(item)

    worker = LatestWorker(process, lambda item, err: errors.append((item, err)))
    assert worker.submit(0) is False
    time.sleep(0.05)  # the worker took item 0
    assert worker.submit(1) is False  # nothing pending: not a drop
    assert worker.submit(2) is True  # replaced 1 before the worker took it
    release.set()
    deadline = time.monotonic() + 5
    while seen != [0, 2] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [0, 2] and not errors
    assert worker.stop(5)


def test_errors_are_reported_and_the_worker_keeps_going() -> None:
    seen, errors = [], []

    def process(item: int, _submitted: float) -> None:
        if item == 1:
            raise ValueError('bad frame')
        seen.append(item)

    worker = LatestWorker(process, lambda item, err: errors.append((item, str(err))))
    for item in (1, 2):
        worker.submit(item)
        time.sleep(0.05)
    assert worker.stop(5)
    assert errors == [(1, 'bad frame')] and seen == [2]


def test_stop_waits_for_the_item_in_progress_and_refuses_new_ones() -> None:
    started, finished = threading.Event(), threading.Event()

    def process(_item: int, _submitted: float) -> None:
        started.set()
        time.sleep(0.3)
        finished.set()

    worker = LatestWorker(process, lambda *_: None)
    worker.submit(1)
    assert started.wait(5)
    assert worker.stop(5) and finished.is_set()  # joined after the frame, not under it
    assert worker.submit(2) is False


def test_stop_says_when_the_item_outlasts_the_timeout() -> None:
    release = threading.Event()
    worker = LatestWorker(lambda *_: release.wait(5), lambda *_: None)
    worker.submit(1)
    time.sleep(0.05)
    assert worker.stop(0.1) is False  # still busy: the node must not free the model
    release.set()
