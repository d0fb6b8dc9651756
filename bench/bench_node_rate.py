#!/usr/bin/env python3
"""The highest camera rate cost_map_node sustains without drops (real rclpy + Fast DDS).

The node runs as a subprocess with a given model, sealed with a real rclpy publisher in a
private network namespace (test/ros_harness.py); frames of --size are published at each rate
for --seconds, and a rate counts as sustained when every frame got its cost image.
    PYTHONPATH=.:test .venv/bin/python bench/bench_node_rate.py --model m.onnx \\
        --rates 5,10,20,40 --size 544x1024
Prints a markdown row per rate; copy them to bench/RESULTS.md with the hardware.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'test'))

from ros_harness import run_sealed  # noqa: E402

_logger = logging.getLogger('bench_node_rate')


def main() -> int:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', required=True, help='.onnx (with its spec) or .engine')
    parser.add_argument('--rates', default='5,10,20,40')
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--size', default='544x1024', help='camera HxW')
    parser.add_argument('--bank-size', type=int, default=32)
    parser.add_argument('--node-arg', action='append', default=[],
                        help='extra node argument, e.g. --node-arg=-p --node-arg=x:=y')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'rate.json'
        proc = run_sealed([sys.executable, str(REPO / 'test' / 'ros_driver.py'), 'rate',
                           '--model', str(Path(args.model).resolve()), '--out', str(out),
                           '--rates', args.rates,
                           '--seconds', str(args.seconds), '--size', args.size,
                           '--bank-size', str(args.bank_size),
                           *(f'--node-arg={a}' for a in args.node_arg)],
                          timeout=600, cwd=tmp)
        if proc.returncode != 0:
            _logger.error('driver failed:\n%s', proc.stderr[-4000:])
            return 1
        result = json.loads(out.read_text())
    diag = result['diagnostics']
    _logger.info('| camera | rate | sent | node received | node processed | node dropped '
                 '(busy) | cost images back |')
    for rate, c in result['rates'].items():
        _logger.info('| %s | %s Hz | %d | %d | %d | %d | %d |', args.size, rate, c['sent'],
                     c['frames_in'], c['frames_out'], c['frames_dropped'], c['received'])
    _logger.info('frames the node saw DDS lose (message_lost events), whole run: %d',
                 diag.get('frames_lost_in_transport', 0))
    _logger.info('node infer median %.1f ms, total median %.1f ms, publish median %.1f ms',
                 diag.get('infer_ms median', float('nan')),
                 diag.get('total_ms median', float('nan')),
                 diag.get('publish_ms median', float('nan')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
