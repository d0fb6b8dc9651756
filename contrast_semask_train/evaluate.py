"""Evaluate a checkpoint: segmentation metrics and embedding quality for cost propagation.

Segmentation follows the seed (docs/MODEL.md §6): whole image at the test scale (1024x544 ->
964x512), logits resized to the network input, then to the label size, argmax; intersection
and union accumulated over the whole split; mIoU = nanmean over classes. Sliding-window
inference is optional.

Embedding quality measures what the robot needs. In each image some classes are "driven over":
one small patch of each gives a prototype (masked mean embedding) with that class's cost from a
cost table. The cost of every pixel is then propagated by similarity with the runtime's own
reference math (contrast_semask_ros.propagation), and we report
- cost_mae: mean |propagated - true cost| over pixels of driven-over classes;
- auroc_unknown: how well the confidence separates pixels of driven-over classes from pixels
  of classes the bank has never seen (1.0 = a threshold exists that marks all unseen terrain
  unknown and no seen terrain). Vanilla 256-d features and contrastive 64-d embeddings compare
  on exactly this task.

    contrast-semask-eval runs/contrastive_s/best.pt --data data/ycor --json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from contrast_semask_ros.exit_codes import EXIT_BAD_INPUT, EXIT_OK, MissingEnvironmentError, fail
from contrast_semask_ros.preprocess import SEED_TEST_SCALE, resize_labels
from contrast_semask_ros.propagation import propagate_cost
from contrast_semask_train.data import IGNORE_INDEX, YCOR_COST_TABLE, YCOR_PALETTE
from contrast_semask_train.model import ContrastSemask

_logger = logging.getLogger('contrast_semask_eval')


class SegMetrics(NamedTuple):
    miou: float  # nanmean of per-class IoU
    aacc: float  # pixel accuracy over labelled pixels
    macc: float  # nanmean of per-class accuracy
    iou: list[float]  # per class; NaN for a class absent from labels and predictions
    acc: list[float]  # per class; NaN for a class absent from the labels
    class_names: list[str]

    def as_flat_dict(self) -> dict[str, float]:
        out = {'mIoU': self.miou, 'aAcc': self.aacc, 'mAcc': self.macc}
        out.update({f'IoU.{n}': v for n, v in zip(self.class_names, self.iou, strict=True)})
        return out


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; ignored pixels skipped."""
    keep = labels != ignore_index
    index = labels[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def metrics_from_confusion(conf: torch.Tensor, class_names: Sequence[str] = ()) -> SegMetrics:
    """mmseg's metrics from a split-wide confusion matrix (docs/MODEL.md §6)."""
    conf = conf.double()
    tp = conf.diag()
    gt = conf.sum(1)
    union = gt + conf.sum(0) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)
    names = list(class_names) or [str(i) for i in range(conf.shape[0])]
    return SegMetrics(float(iou.nanmean()), float(tp.sum() / conf.sum().clamp(min=1)),
                      float(acc.nanmean()), iou.tolist(), acc.tolist(), names)


@torch.no_grad()
def predict_logits(model: ContrastSemask, image: torch.Tensor, out_size: tuple[int, int],
                   mode: str = 'whole', crop: int = 512, stride: int = 341) -> torch.Tensor:
    """image (1, 3, h, w) normalised -> logits (1, K, *out_size), docs/MODEL.md §2.

    'whole': stride-4 logits -> input size -> output size (bilinear). 'slide': crops of
    `crop` every `stride` pixels, each resized to its crop size, averaged where they overlap.
    """
    h, w = image.shape[-2:]
    if mode == 'whole':
        logits = F.interpolate(model(image).logits, size=(h, w), mode='bilinear',
                               align_corners=False)
    elif mode == 'slide':
        K = model.config.num_classes
        logits = image.new_zeros((1, K, h, w))
        count = image.new_zeros((1, 1, h, w))
        rows = range(0, max(h - crop, 0) + stride, stride)
        cols = range(0, max(w - crop, 0) + stride, stride)
        for y in rows:
            for x in cols:
                y0, x0 = min(y, max(h - crop, 0)), min(x, max(w - crop, 0))
                tile = image[..., y0:y0 + crop, x0:x0 + crop]
                out = F.interpolate(model(tile).logits, size=tile.shape[-2:], mode='bilinear',
                                    align_corners=False)
                logits[..., y0:y0 + crop, x0:x0 + crop] += out
                count[..., y0:y0 + crop, x0:x0 + crop] += 1
        logits = logits / count
    else:
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    return F.interpolate(logits, size=out_size, mode='bilinear', align_corners=False)


@torch.no_grad()
def evaluate_segmentation(model: ContrastSemask, dataset: Any, device: torch.device,
                          num_classes: int, indices: Iterable[int] | None = None,
                          mode: str = 'whole', progress: bool = False) -> torch.Tensor:
    """Accumulate the (K, K) confusion matrix of `model` over `dataset` items (CPU int64)."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    indices = list(range(len(dataset)) if indices is None else indices)
    for i in tqdm(indices, desc='eval', disable=not progress, dynamic_ncols=True):
        image, labels = dataset[i]  # 3, h, w normalised / H, W int64 at the original size
        logits = predict_logits(model, image[None].to(device), tuple(labels.shape), mode)
        conf += confusion_matrix(logits.argmax(1)[0].cpu(), labels, num_classes)
    model.train(was_training)
    return conf


def palette_image(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8 colours; ignore (255) is white."""
    table = np.full((256, 3), 255, np.uint8)
    table[:len(palette)] = np.asarray(palette, np.uint8)
    return table[labels]


def pca_rgb(embedding: torch.Tensor) -> np.ndarray:
    """(D, h, w) embedding -> (h, w, 3) uint8: the first three principal components."""
    D, h, w = embedding.shape
    x = embedding.reshape(D, -1).T.double()  # N, D
    x = x - x.mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # deterministic, unlike pca_lowrank
    proj = x @ vh[:3].T  # N, 3
    lo, hi = proj.quantile(0.01, dim=0), proj.quantile(0.99, dim=0)
    proj = ((proj - lo) / (hi - lo).clamp(min=1e-9)).clamp(0, 1)
    return (proj.reshape(h, w, 3).numpy() * 255).astype(np.uint8)


@torch.no_grad()
def visualise_predictions(model: ContrastSemask, dataset: Any, device: torch.device,
                          indices: Iterable[int]) -> list[np.ndarray]:
    """Per item one (H, 4W, 3) uint8 strip: image | ground truth | prediction | embedding PCA."""
    palette = YCOR_PALETTE if model.config.num_classes == len(YCOR_PALETTE) else [
        tuple(int(c) for c in np.random.default_rng(k).integers(0, 255, 3))
        for k in range(model.config.num_classes)]
    mean = torch.tensor(model.config.mean).view(3, 1, 1)
    std = torch.tensor(model.config.std).view(3, 1, 1)
    strips = []
    for i in indices:
        image, labels = dataset[i]
        h, w = image.shape[-2:]
        outputs = model(image[None].to(device))
        pred = F.interpolate(outputs.logits, size=(h, w), mode='bilinear',
                             align_corners=False).argmax(1)[0].cpu().numpy().astype(np.uint8)
        rgb = (image * std + mean).clamp(0, 255).byte().permute(1, 2, 0).numpy()
        gt = resize_labels(labels.numpy().astype(np.uint8), (w, h))
        emb = F.interpolate(torch.from_numpy(pca_rgb(outputs.embeddings[0].float().cpu()))
                            .permute(2, 0, 1)[None].float(), size=(h, w), mode='nearest')
        strips.append(np.concatenate([
            rgb, palette_image(gt, palette), palette_image(pred, palette),
            emb[0].permute(1, 2, 0).byte().numpy()], axis=1))
    return strips


# ----------------------------------------------------------------------------------------------
# embedding quality


class EmbeddingQuality(NamedTuple):
    cost_mae: float  # over pixels of driven-over (bank) classes
    cost_mae_all: float  # over all labelled pixels (unseen classes included)
    auroc_unknown: float  # confidence: seen-class pixels (positive) vs unseen-class pixels
    mean_confidence_seen: float
    mean_confidence_unseen: float
    num_images: int
    num_prototypes: int


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class
    is empty."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float('nan')
    order = np.argsort(scores, kind='mergesort')
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    # average rank within runs of equal scores
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def sample_patch_bank(embedding: np.ndarray, labels: np.ndarray, costs: np.ndarray,
                      rng: np.random.Generator, patch_radius: int = 4, min_pixels: int = 16,
                      drive_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick driven-over classes and one patch each. embedding (D, h, w), labels (h, w).

    Returns (prototypes (P, D) unit-norm, prototype costs (P,), seen-class mask over ids (K,)).
    Each class with >= min_pixels is driven over with probability drive_prob (at least one).
    A patch is the class's pixels within `patch_radius` of a random pixel of that class.
    """
    K = len(costs)
    present = [c for c in range(K) if (labels == c).sum() >= min_pixels]
    seen = np.zeros(K, bool)
    if not present:
        return np.zeros((0, embedding.shape[0]), np.float32), np.zeros(0, np.float32), seen
    chosen = [c for c in present if rng.random() < drive_prob] or [int(rng.choice(present))]
    protos, proto_costs = [], []
    for c in chosen:
        ys, xs = np.nonzero(labels == c)
        k = int(rng.integers(len(ys)))
        near = (np.abs(ys - ys[k]) <= patch_radius) & (np.abs(xs - xs[k]) <= patch_radius)
        mean = embedding[:, ys[near], xs[near]].mean(axis=1)  # D
        protos.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        proto_costs.append(costs[c])
        seen[c] = True
    return (np.stack(protos).astype(np.float32), np.asarray(proto_costs, np.float32), seen)


@torch.no_grad()
def embedding_quality(model: ContrastSemask, dataset: Any, device: torch.device,
                      cost_table: Sequence[float], indices: Iterable[int] | None = None,
                      temperature: float = 0.1, seed: int = 0, pixels_per_image: int = 4000,
                      progress: bool = False) -> EmbeddingQuality:
    """Cost propagation from a few patches per image (see the module docstring)."""
    from tqdm import tqdm

    costs = np.asarray(cost_table, np.float32)
    if len(costs) != model.config.num_classes:
        raise ValueError(f'cost table has {len(costs)} entries for '
                         f'{model.config.num_classes} classes')
    rng = np.random.default_rng(seed)
    err_seen, err_all, scores, is_seen = [], [], [], []
    n_images = n_protos = 0
    was_training = model.training
    model.eval()
    indices = list(range(len(dataset)) if indices is None else indices)
    for i in tqdm(indices, desc='embedding quality', disable=not progress, dynamic_ncols=True):
        image, labels = dataset[i]
        emb = model(image[None].to(device)).embeddings[0].float().cpu().numpy()  # D, h, w
        h, w = emb.shape[1:]
        lab = resize_labels(labels.numpy().astype(np.uint8), (w, h))  # h, w at stride 4
        protos, proto_costs, seen = sample_patch_bank(emb, lab, costs, rng)
        if len(protos) == 0:
            continue
        result = propagate_cost(emb, protos, proto_costs, temperature=temperature)
        labelled = lab != IGNORE_INDEX
        truth = costs[np.where(labelled, lab, 0)]
        pix_seen = labelled & seen[np.where(labelled, lab, 0)]
        err = np.abs(result.cost - truth)
        err_seen.append(err[pix_seen])
        err_all.append(err[labelled])
        pick = np.flatnonzero(labelled)
        pick = rng.choice(pick, size=min(pixels_per_image, len(pick)), replace=False)
        scores.append(result.confidence.reshape(-1)[pick])
        is_seen.append(pix_seen.reshape(-1)[pick])
        n_images += 1
        n_protos += len(protos)
    model.train(was_training)
    if not n_images:
        raise ValueError('no image had a labelled class to sample patches from')
    s, pos = np.concatenate(scores), np.concatenate(is_seen)
    return EmbeddingQuality(
        float(np.concatenate(err_seen).mean()), float(np.concatenate(err_all).mean()),
        auroc(s, pos), float(s[pos].mean()) if pos.any() else float('nan'),
        float(s[~pos].mean()) if (~pos).any() else float('nan'), n_images, n_protos)


def parse_cost_table(text: str, class_names: Sequence[str]) -> list[float]:
    """'name=cost,name=cost' (every class) or a YAML file mapping names to costs."""
    if not text:
        if set(class_names) != set(YCOR_COST_TABLE):
            raise ValueError('no default cost table for these classes; pass --cost-table '
                             'name=cost,... naming every class: ' + ', '.join(class_names))
        table: Mapping[str, Any] = YCOR_COST_TABLE
    elif Path(text).is_file():
        import yaml

        table = yaml.safe_load(Path(text).read_text())
    else:
        table = dict(item.split('=', 1) for item in text.split(','))
    missing = [n for n in class_names if n not in table]
    unknown = [n for n in table if n not in class_names]
    if missing or unknown:
        raise ValueError(f'cost table must name every class exactly: missing {missing}, '
                         f'unknown {unknown}; classes: {list(class_names)}')
    return [float(table[n]) for n in class_names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='contrast-semask-eval', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('checkpoint', type=Path, help='a contrast_semask checkpoint (.pt)')
    parser.add_argument('--data', type=Path, required=True, help='converted data directory')
    parser.add_argument('--split', default='valid')
    parser.add_argument('--scale', default=','.join(map(str, SEED_TEST_SCALE)),
                        help='test scale long,short (default: the seed\'s 2048,512)')
    parser.add_argument('--mode', choices=('whole', 'slide'), default='whole')
    parser.add_argument('--max-images', type=int, default=0, help='0 = the whole split')
    parser.add_argument('--cost-table', default='',
                        help='name=cost,... or a YAML file (default: the YCOR table)')
    parser.add_argument('--temperature', type=float, default=0.1,
                        help='propagation temperature tau (as on the robot)')
    parser.add_argument('--seed', type=int, default=0, help='patch sampling seed')
    parser.add_argument('--no-embedding', action='store_true',
                        help='segmentation metrics only')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object (keys include mIoU) instead of a table')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = build_parser().parse_args(argv)
    from contrast_semask_train.data import EvalTransform, SegmentationDataset
    from contrast_semask_train.model import CheckpointError, load_checkpoint

    try:
        device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available()
                              else 'cpu' if args.device == 'auto' else args.device)
    except RuntimeError as err:
        return fail(_logger, f'--device {args.device!r}: {err}', EXIT_BAD_INPUT)
    if device.type == 'cuda' and not torch.cuda.is_available():
        return fail(_logger, MissingEnvironmentError(
            f'--device {args.device}: CUDA is not available on this machine; use --device cpu'))
    try:
        scale = tuple(int(v) for v in args.scale.split(','))
        model, payload = load_checkpoint(args.checkpoint)
        model.to(device)
        dataset = SegmentationDataset(
            args.data, args.split, EvalTransform(scale=scale, mean=model.config.mean,
                                                 std=model.config.std),
            max_items=args.max_images or None)
        names = list(model.config.class_names) or list(dataset.class_names)
        conf = evaluate_segmentation(model, dataset, device, model.config.num_classes,
                                     mode=args.mode, progress=not args.json)
        result: dict[str, Any] = {'checkpoint': str(args.checkpoint),
                                  'step': payload.get('step'), 'split': args.split,
                                  'num_images': len(dataset),
                                  **metrics_from_confusion(conf, names).as_flat_dict()}
        if not args.no_embedding:
            costs = parse_cost_table(args.cost_table, names)
            quality = embedding_quality(model, dataset, device, costs,
                                        temperature=args.temperature, seed=args.seed,
                                        progress=not args.json)
            result.update({'embedding_dim': model.config.output_dim, **quality._asdict()})
    except (CheckpointError, ValueError, OSError, ImportError) as err:
        return fail(_logger, err)  # 2: bad file or option; 3: package missing, disk full
    if args.json:
        sys.stdout.write(json.dumps(result) + '\n')
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            text = f'{value:.4f}' if isinstance(value, float) else str(value)
            sys.stdout.write(f'{key:<{width}}  {text}\n')
    return EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
