"""pretextlab.metrics.SegmentationMeter: segmentation metrics from one dataset-level confusion matrix.

The hand-made cases are 2 images of 2x3 pixels, 3 classes and the ignore value 255; every expected number is
worked out from a confusion matrix written out below, not from torchmetrics.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pretextlab.metrics import SegmentationMeter

IGNORE = 255
# Truth and prediction of two 2x3 images. The ignored pixel (bottom right) is predicted 0 and 1, which must
# count nowhere: were it counted, image 1 would have class 1 predicted.
TRUTH = torch.tensor([[[0, 0, 1],
                       [1, 2, IGNORE]],
                      [[0, 0, 0],
                       [0, 0, IGNORE]]], dtype=torch.uint8)
PRED = torch.tensor([[[0, 1, 1],
                      [1, 2, 0]],
                     [[0, 0, 0],
                      [0, 2, 1]]])
# The dataset's confusion matrix over the 10 labelled pixels, rows truth, columns prediction:
CONFMAT = [[5, 1, 1],  # truth 0: 5 right, one predicted 1 (image 0), one predicted 2 (image 1)
           [0, 2, 0],  # truth 1: both right
           [0, 0, 1]]  # truth 2: right
# Per image: image 0 [[1, 1, 0], [0, 2, 0], [0, 0, 1]]; image 1 [[4, 0, 1], [0, 0, 0], [0, 0, 0]].


def iou_from(cm: list[list[int]]) -> list[float]:
    """IoU per class, TP / (TP + FP + FN) = cm[c][c] / (row c + column c - cm[c][c]); NaN for 0 / 0."""
    out = []
    for c in range(len(cm)):
        tp, row, col = cm[c][c], sum(cm[c]), sum(r[c] for r in cm)
        out.append(tp / (row + col - tp) if row + col else math.nan)
    return out


def dice_from(cm: list[list[int]]) -> list[float]:
    """Dice per class, 2 TP / (2 TP + FP + FN) = 2 cm[c][c] / (row c + column c)."""
    return [2 * cm[c][c] / (sum(cm[c]) + sum(r[c] for r in cm)) if sum(cm[c]) + sum(r[c] for r in cm) else math.nan
            for c in range(len(cm))]


def nanmean(v: list[float]) -> float:
    v = [x for x in v if not math.isnan(x)]
    return sum(v) / len(v)


def logits_for(pred: torch.Tensor, num_classes: int = 3, seed: int = 0) -> torch.Tensor:
    """Random (B, C, H, W) logits whose argmax is `pred`."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(*pred.shape[:1], num_classes, *pred.shape[1:], generator=g)
    return noise + 10 * F.one_hot(pred, num_classes).permute(0, 3, 1, 2)


def meter_of(*batches: tuple[torch.Tensor, torch.Tensor], num_classes: int = 3,
             ignore_index: int | None = IGNORE) -> SegmentationMeter:
    m = SegmentationMeter(num_classes, ignore_index)
    for logits, masks in batches:
        m.update(logits, masks)
    return m


def test_hand_computed_iou_accuracy_and_dice():
    m = meter_of((logits_for(PRED), TRUTH))
    out = m.compute()
    iou = iou_from(CONFMAT)
    assert iou == pytest.approx([5 / 7, 2 / 3, 1 / 2])  # 5/(7+5-5), 2/(2+3-2), 1/(1+2-1)
    assert m.per_class() == pytest.approx(iou, rel=1e-6)
    assert out["miou"] == pytest.approx((5 / 7 + 2 / 3 + 1 / 2) / 3, rel=1e-6)
    assert out["pixel_accuracy"] == pytest.approx(8 / 10, rel=1e-6)  # the diagonal over the labelled pixels
    assert dice_from(CONFMAT) == pytest.approx([10 / 12, 4 / 5, 2 / 3])
    assert out["dice"] == pytest.approx((10 / 12 + 4 / 5 + 2 / 3) / 3, rel=1e-6)
    assert out["n"] == 2


def test_dataset_miou_is_not_the_mean_of_per_image_ious():
    per_image = [nanmean(iou_from(cm)) for cm in ([[1, 1, 0], [0, 2, 0], [0, 0, 1]],
                                                  [[4, 0, 1], [0, 0, 0], [0, 0, 0]])]
    assert per_image == pytest.approx([(1 / 2 + 2 / 3 + 1) / 3, (4 / 5 + 0) / 2])
    averaged = sum(per_image) / 2  # 0.561: what a per-image mean would report
    miou = meter_of((logits_for(PRED), TRUTH)).compute()["miou"]
    assert miou == pytest.approx(nanmean(iou_from(CONFMAT)), rel=1e-6)  # 0.627
    assert abs(miou - averaged) > 0.05
    # and the meter fed image by image still scores the dataset, not the images
    logits = logits_for(PRED)
    assert meter_of((logits[:1], TRUTH[:1]), (logits[1:], TRUTH[1:])).compute()["miou"] == pytest.approx(miou)


@pytest.mark.parametrize("value", [0, 1, 2])
def test_ignored_pixels_change_nothing(value):
    base = meter_of((logits_for(PRED), TRUTH))
    ignored = TRUTH == IGNORE
    logits = logits_for(PRED)
    pixels = logits.permute(0, 2, 3, 1)  # a view: (B, H, W, C)
    pixels[ignored] = torch.randn(int(ignored.sum()), 3) * 5 + 20 * F.one_hot(torch.tensor(value), 3)
    assert (logits.argmax(1)[ignored] == value).all()
    other = meter_of((logits, TRUTH))
    assert other.compute() == base.compute()
    assert other.per_class() == base.per_class()


def test_two_batches_equal_one_batch_of_both():
    g = torch.Generator().manual_seed(3)
    masks = torch.randint(0, 4, (6, 5, 7), generator=g, dtype=torch.uint8)
    masks[masks == 3] = IGNORE
    logits = torch.randn(6, 3, 5, 7, generator=g)
    whole = meter_of((logits, masks)).compute()
    parts = meter_of((logits[:2], masks[:2]), (logits[2:], masks[2:])).compute()
    assert parts.keys() == whole.keys() == {"miou", "pixel_accuracy", "dice", "loss", "n"}
    for k in ("miou", "pixel_accuracy", "dice", "n"):
        assert parts[k] == whole[k], k
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-6)


def test_loss_is_cross_entropy_of_the_concatenation_over_labelled_pixels():
    g = torch.Generator().manual_seed(4)
    batches = []
    for b in (3, 2):  # batches of different sizes and labelled-pixel counts
        masks = torch.randint(0, 4, (b, 6, 6), generator=g, dtype=torch.uint8)
        masks[masks == 3] = IGNORE
        batches.append((torch.randn(b, 3, 6, 6, generator=g) * 3, masks))
    logits = torch.cat([b[0] for b in batches])
    masks = torch.cat([b[1] for b in batches])
    expected = F.cross_entropy(logits, masks.long(), ignore_index=IGNORE)
    assert meter_of(*batches).compute()["loss"] == pytest.approx(float(expected), rel=1e-6)


def test_matches_torchmetrics_macro_scores_with_an_ignore_value_outside_the_classes():
    """miou is torchmetrics' macro Jaccard; dice, the mean of per-class F1 over the scored classes, equals
    torchmetrics' macro F1 when the ignore value is not a class; both equal the means of the per-class numbers."""
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

    g = torch.Generator().manual_seed(5)
    masks = torch.randint(0, 4, (4, 8, 8), generator=g, dtype=torch.uint8)
    masks[masks == 3] = IGNORE
    logits = torch.randn(4, 4, 8, 8, generator=g)  # 4 classes, class 3 predicted but never true
    m = meter_of((logits, masks), num_classes=4)
    out, pred, target = m.compute(), logits.argmax(1), masks.long()
    f1 = MulticlassF1Score(4, average="macro", ignore_index=IGNORE)(pred, target)
    jac = MulticlassJaccardIndex(4, average="macro", ignore_index=IGNORE)(pred, target)
    assert out["dice"] == pytest.approx(float(f1), rel=1e-6)
    assert out["miou"] == pytest.approx(float(jac), rel=1e-6)
    assert out["miou"] == pytest.approx(nanmean(m.per_class()), rel=1e-6)
    assert m.per_class()[3] == 0.0  # predicted, never true: IoU 0, counted


def test_absent_class_is_nan_and_left_out_while_a_predicted_only_class_counts_zero():
    # 4 classes, class 3 neither true nor predicted: NaN, and every mean is that of the 3-class case
    m4 = meter_of((logits_for(PRED, 4), TRUTH), num_classes=4)
    m3 = meter_of((logits_for(PRED, 3), TRUTH))
    assert math.isnan(m4.per_class()[3])
    assert m4.per_class()[:3] == pytest.approx(m3.per_class())
    for k in ("miou", "pixel_accuracy", "dice"):
        assert m4.compute()[k] == pytest.approx(m3.compute()[k], rel=1e-6), k
    # class 2 predicted once but never true: IoU 0 / (0 + 1 + 0) = 0, Dice 0, both counted in the means
    truth = TRUTH.clone()
    truth[0, 1, 1] = 1  # the one true 2 becomes 1
    cm = [[5, 1, 1],
          [0, 2, 1],  # the new 1 is predicted 2
          [0, 0, 0]]
    m = meter_of((logits_for(PRED), truth))
    assert m.per_class() == pytest.approx([5 / 7, 2 / 4, 0.0], rel=1e-6)
    assert m.per_class() == pytest.approx(iou_from(cm), rel=1e-6)
    assert m.compute()["miou"] == pytest.approx((5 / 7 + 2 / 4 + 0) / 3, rel=1e-6)
    assert m.compute()["dice"] == pytest.approx(sum(dice_from(cm)) / 3, rel=1e-6)


def test_ignore_index_that_is_a_class_is_never_scored():
    """ignore_index 0 with 3 classes (a void class with an index): class 0 is NaN and out of every mean;
    predicting 0 on a labelled pixel is an error for the pixel's true class."""
    truth = torch.tensor([[[1, 1, 2, 0]]], dtype=torch.uint8)
    pred = torch.tensor([[[0, 1, 2, 2]]])
    m = meter_of((logits_for(pred), truth), ignore_index=0)
    # labelled pixels (truth 1, 1, 2): confusion [[0, 0, 0], [1, 1, 0], [0, 0, 1]]
    per = m.per_class()
    assert math.isnan(per[0]) and per[1:] == pytest.approx([1 / 2, 1.0])
    out = m.compute()
    assert out["miou"] == pytest.approx(0.75)
    assert out["dice"] == pytest.approx((2 / 3 + 1) / 2)  # torchmetrics' macro F1 would give (0 + 2/3 + 1) / 3
    assert out["pixel_accuracy"] == pytest.approx(2 / 3)
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits_for(pred), truth.long(), ignore_index=0)))


def test_without_an_ignore_index_every_pixel_counts():
    truth = TRUTH.clone()
    truth[truth == IGNORE] = 2
    m = meter_of((logits_for(PRED), truth), ignore_index=None)
    cm = [[5, 1, 1],
          [0, 2, 0],
          [1, 1, 1]]  # the former ignored pixels: truth 2, predicted 0 and 1
    assert m.per_class() == pytest.approx(iou_from(cm), rel=1e-6)
    assert m.compute()["pixel_accuracy"] == pytest.approx(8 / 12)
    assert m.compute()["loss"] == pytest.approx(float(F.cross_entropy(logits_for(PRED), truth.long())), rel=1e-6)


def test_nothing_labelled_gives_nan_and_reset_starts_over():
    m = meter_of((logits_for(PRED), torch.full_like(TRUTH, IGNORE)))
    out = m.compute()
    assert out["n"] == 2 and all(math.isnan(out[k]) for k in ("miou", "pixel_accuracy", "dice", "loss"))
    assert all(math.isnan(v) for v in m.per_class())
    m.reset()
    m.update(logits_for(PRED), TRUTH)
    assert m.compute() == meter_of((logits_for(PRED), TRUTH)).compute()


def test_shapes_are_checked():
    m = SegmentationMeter(3, IGNORE)
    with pytest.raises(ValueError, match="expected logits"):
        m.update(torch.zeros(2, 4, 2, 3), TRUTH)
    with pytest.raises(ValueError, match="expected logits"):
        m.update(torch.zeros(2, 3, 3, 3), TRUTH)


WORKER = """
import json, sys
import torch
from pretextlab import dist
from pretextlab.metrics import SegmentationMeter
dist.init(torch.device("cpu"))
logits, masks = torch.load(sys.argv[1])
part = dist.shard_slice(len(masks))
m = SegmentationMeter(3, 255)
for i in range(part.start, part.stop, 2):  # this rank's share, in batches of up to 2
    j = min(i + 2, part.stop)
    m.update(logits[i:j], masks[i:j])
out = m.compute()
out["per_class"] = m.per_class()
json.dump(out, open(f"{sys.argv[2]}/rank{dist.rank()}.json", "w"))
"""


def test_two_torchrun_ranks_give_the_single_process_numbers(tmp_path):
    """Each rank scores its share of 7 images (4 and 3); both get the numbers of one process scoring all 7."""
    g = torch.Generator().manual_seed(6)
    masks = torch.randint(0, 4, (7, 6, 5), generator=g, dtype=torch.uint8)
    masks[masks == 3] = IGNORE
    logits = torch.randn(7, 3, 6, 5, generator=g)
    torch.save((logits, masks), tmp_path / "data.pt")
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "worker.py"), str(tmp_path / "data.pt"), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"torchrun exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    single = meter_of((logits, masks))
    expected = {**single.compute(), "per_class": single.per_class()}
    for r in (0, 1):
        got = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert got["n"] == 7
        for k in ("miou", "pixel_accuracy", "dice", "loss"):
            assert got[k] == pytest.approx(expected[k], rel=1e-6), (r, k)
        assert got["per_class"] == pytest.approx(expected["per_class"], rel=1e-6)
