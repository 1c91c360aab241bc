"""Which of the recipe's levers help find lesions on real mammograms: the recipe against itself with one setting
changed, every arm at the recipe's full budget, scored out of fold with paired intervals → JSON, Markdown, FROC plot.

    .venv/bin/python benchmarks/levers_mias.py --arms recipe,grid_0.8mm    # 15-55 minutes an arm, 2-core CPU

Each arm is :mod:`benchmarks.quality_mias` (prep, K-fold training by woman, out-of-fold prediction, evaluation) on
the same folds and seed; an arm whose ``result.json`` exists in ``--work`` is not run again (the study resumes, and
``--reuse NAME=FOLDER`` takes an earlier ``quality_mias`` work folder, with its ``result.json``, as an arm).

The arms (``--arms`` picks some):

* ``recipe``: ``experiments/mias_real/recipe.yaml`` as it is (0.4 mm per training pixel, float32) — the default
  baseline of the differences;
* ``grid_0.8mm``: prep at 0.8 mm per training pixel (``prep.scale`` 0.0625: a 1024² MIAS scan becomes 256²), the
  recipe's grid before the 0.4 mm one won here, with the same 128-px crops (102 mm of breast instead of 51), so that a
  training step costs the same (the network's deepest features are 32 training pixels apart: 26 mm on this grid);
* ``grid_0.3mm``, ``grid_0.2mm``: finer grids than the recipe's (``prep.scale`` 1/6 and 0.25; 0.2 mm is mini-MIAS's
  own pixel, no resampling), the same 128-px crops (38 and 26 mm of breast): a step costs the same, the deepest
  features are 9.6 and 6.4 mm apart, and calcification specks keep more of their few pixels; out-of-fold prediction
  covers 1.8 and 4 times the pixels;
* ``bfloat16``: the recipe in mixed bfloat16 (weights, loss and the network's input layers in float32); only worth
  running where the CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16): on a CPU without AVX-512 a bfloat16
  training step is 6 to 11 times *slower* than float32 (``results/train_throughput_bf16_cpu.md``).
* ``contralateral``: the woman's other breast in the same view, mirrored, as the network's second input channel
  (``prep.contralateral`` and ``data.contralateral``; :mod:`mammo_seg.data.contralateral`): asymmetry is how a
  reader tells a lesion from dense tissue. MIAS images come in left/right pairs; predict finds the pair by name.
* ``width_0.75``: a wider network (every filter count × 0.75 instead of × 0.5) in the same training time: a step costs
  1.88 × the recipe's on this CPU (one thread, 16 crops of 128 px), so 10 epochs instead of 18 (validated every 5th).
  On the AMD EPYC CPU without AVX-512 the benchmark's 45 minutes leave no room for a wider network at 18 epochs.
* ``width_0.75_epochs_18``: the same wider network at the recipe's 18 epochs, which fits the 45 minutes on a CPU with
  AVX-512 (an Intel Xeon, where the recipe's benchmark takes 15 minutes).
* ``crop_192``: crops of 192 px (77 mm of breast) instead of 128 (51 mm), 7 a batch instead of 16: the same pixels a
  step, so about the same time, with more context around each lesion and fewer, larger views of the breast; the
  network predicts whole 512-px scans, and nnU-Net's 2-D patches are as large as the memory allows.
* ``crop_96``: the other way, crops of 96 px (38 mm) and 28 a batch: 9.3 lesion crops a step instead of 5.3 (the
  192-px arm lost lesions with 2.3), each with less context;
* ``lesion_share_0.5``: half of the crops centred on a lesion instead of nnU-Net's third: 8 lesion crops a
  step instead of 5.3, for the few lesions of 108 women (about 65 in a fold's training women).
* ``lesion_share_0.2``: the other way, a fifth of the crops on a lesion (3.2 a step): more of the breast's dense
  tissue, where the recipe's false positives lie, and the recipe's operating point is held by its limit on the
  lesion-free scans it flags (measured on today's recipe: ``--reuse recipe=WORK``).
* ``dense_crops`` (and ``_seed_1``, ``_seed_2``): the crop stage's crops that are not on a lesion centred on the
  denser half of the breast (``data.background_quantile`` 0.5: pixels at or above the median of its intensities)
  instead of anywhere in it; the whole-scan stage as the recipe's. The recipe's false positives lie in dense tissue
  (in its out-of-fold maps, the median detection that hits no lesion is brighter than 85 % of its breast:
  ``results/false_positives_mias.md``) and its
  operating point is held by its limit on lesion-free scans flagged; unlike ``lesion_share_0.2``, the lesion crops
  stay a third. Its baseline is a run of today's recipe (``--reuse recipe=WORK``).
* ``ema`` (and ``_seed_1``, ``_seed_2``): each stage ends on the exponential moving average of its weights
  (``train.ema`` 0.995: about the last 200 of the crop stage's 720 steps and of the whole-scan stage's 240) instead
  of its last weights: Polyak averaging, a regulariser that changes no step. Every lever that fitted the training
  crops better outlined the held-out women's lesions worse. Its baseline is a run of today's recipe
  (``--reuse recipe=WORK``).
* ``lesion_offset`` (and ``_seed_1``, ``_seed_2``): the lesion crops hold their lesion pixel anywhere in the crop
  (``data.lesion_offset`` 1) instead of at its centre, as nnU-Net's lesion crops only contain their lesion: the
  recipe's crop-stage network never sees a lesion near a crop's edge, and on whole scans lesions lie anywhere in the
  network's view. Its baseline is a run of today's recipe (``--reuse recipe=WORK``).
* ``pos_weight_3`` (and ``_seed_1``, ``_seed_2``): the recipe's cross-entropy term with lesion pixels weighted 3
  (``weighted_bce`` ``pos_weight`` 3, as the 2018 pipeline weighted them 15 before decaying the weight), both stages:
  the other way from ``topk_bce``, which weighs the hardest background and collapsed; most of the lesions the recipe
  misses are small ones whose every pixel stays under probability 0.5 (``results/lesion_peaks_mias.md``). Its
  baseline is a run of today's recipe (``--reuse recipe=WORK``).
* ``weight_decay`` (and ``_seed_1``, ``_seed_2``): AdamW's decoupled weight decay on every kernel
  (``train.weight_decay`` 1: before each step w ← w·(1 − lr·λ), about exp(−0.72) ≈ 0.49 over the crop stage's
  cosine schedule without the gradient, exp(−0.06) over the whole-scan stage's), on top of the 2018 network's L2 on
  fc_1 and the logits. Every lever that fitted the training crops better outlined the held-out women's lesions worse.
  Its baseline is a run of today's recipe (``--reuse recipe=WORK``).
* ``topk_bce`` (and ``_seed_1``, ``_seed_2``): the recipe's cross-entropy term over each image's hardest tenth of
  pixels only (``loss.losses[0]``: ``topk_bce`` 0.1, nnU-Net's Dice + TopK10 loss; online hard-example mining),
  both stages: the recipe's false positives are as bright as the lesions it finds
  (``results/false_positives_mias.md``), and the plain cross-entropy averages them with the easy background that
  fills most of every crop. Its baseline is a run of today's recipe (``--reuse recipe=WORK``).
* ``epochs_18``: 18 epochs instead of 12 (the cosine schedule over all 18), the validation women scored every 6th
  epoch and after the last instead of after each (which changes no weight): the benchmark's time spent on training.
* ``epochs_36``, ``epochs_54``: two and three times the recipe's epochs (validated three times), in the time a CPU
  with AVX-512 leaves.
* ``augment_nnunet_54``: 54 epochs with nnU-Net's augmentation ranges (rotation ±180°, scale 0.7-1.4) and a wider
  gamma/contrast range (±0.3 instead of ±0.15): longer training with more to keep it from overfitting.
* ``augment_nnunet``, ``augment_nnunet_36`` (and ``_seed_1``, ``_seed_2``, against ``seed_1`` and ``seed_2``): the
  same augmentation at the recipe's 18 crop epochs, and at 36.
* ``width_0.35``: a narrower network (× 0.35) at the recipe's 18 epochs: less to overfit with.
* ``seed_1``, ``seed_2``: the recipe with another training seed (weights, crop positions, augmentation) and the same
  folds (``cv.seed`` 0): how far one training moves the figures, which the intervals over women do not include.
* ``nested``: the recipe with ``cv.nested``: 10 more models, each without two folds of women, and every scan
  predicted by the mean of the 4 that never saw its woman (``nested/fold<k>``), the operating point chosen on those
  means: a mean of models at a point chosen for a mean, as the shipped ensemble is (each model trained on 3/5 of the
  women instead of 4/5). Three times the recipe's training; its fold models are the recipe's own (the same config
  and seed train the same weights on one machine), so a copy of the recipe arm's ``run`` in the arm's folder
  leaves only the nested models to train.
* ``whole_scans``, ``whole_scans_seed_1``, ``whole_scans_seed_2``: fine-tunes (``FINE_TUNES``) of the ``recipe``,
  ``seed_1`` and ``seed_2`` arms' fold models, each fold from the same fold, for 2 epochs on whole scans (512-px
  crops of 512² scans, 4 a batch, lr 0.0005 decaying to 0): a curriculum's last stage. The network predicts whole
  scans but trained on 128-px crops only, whose deepest feature maps are 4 × 4 and mostly padding; one training in
  three (seed 2) found nothing on whole scans although it fitted its crops (``crop_position_mias.md``). The base
  arm runs first; a fine-tune's minutes are its own. Measured on the recipe before it had this stage (it has since:
  ``stages`` in the recipe), so that its ``recipe`` arm now already ends on whole scans.
* ``whole_scans_6_epochs`` (and ``_seed_1``, ``_seed_2``, against ``seed_1`` and ``seed_2``): the recipe's
  whole-scan stage (its last, ``stages``) for 6 epochs instead of 2: more of the training on the inputs predict
  sees, the crops unchanged. Measured when the recipe had 2; it has 6 since, so that against today's recipe these
  arms change nothing.
* ``whole_scans_12_epochs`` (and ``_seed_1``, ``_seed_2``): the recipe's whole-scan stage for 12 epochs instead of
  6, the crops unchanged: 6 more minutes of training on the Intel Xeon; on the AMD EPYC without AVX-512, where
  the benchmark is already over its 45 minutes, about 25.
* ``whole_scans_lr_0.001`` (and ``_seed_1``, ``_seed_2``): the recipe's whole-scan stage at twice its learning rate
  (0.001 instead of 0.0005, still decaying to 0), the crops unchanged.

* ``whole_scans_tversky`` (and ``_seed_1``, ``_seed_2``): the recipe's whole-scan stage under cross-entropy +
  Tversky loss (α 0.3 on false positives, β 0.7 on false negatives: Salehi et al.'s recall-favouring setting)
  instead of cross-entropy + soft Dice, the crops unchanged: most lesions the recipe misses stay under probability
  0.5 in every pixel of its out-of-fold maps (40 to 46 of the 82 for seeds 0-2; ``results/lesion_peaks_mias.md``).
* ``ignore_calc`` (and ``_seed_1``, ``_seed_2``, against ``seed_1`` and ``seed_2``): MIAS's calcification circles
  (CALC) stored as the ignore region at prep (``prep.ignore_kinds: [calcification]``): no loss, training metric,
  lesion crop or operating-point count sees them. At 0.4 mm a cluster's sub-millimetre specks are one or two pixels,
  and its circle, mostly plain tissue, may teach the network to call tissue a lesion; measured at the former 0.8 mm
  grid only (``loss_study_mias.md``). Every arm is scored against the same reference, calcification clusters
  included as lesions to find.
* ``deep_supervision`` (and ``_seed_1``, ``_seed_2``, against ``seed_1`` and ``seed_2``): the crop stage trained with
  deep supervision (``train.deep_supervision``, :mod:`mammo_seg.models.deep_supervision`): 1×1 heads on the decoder's
  up_conv2 (H/8) and up_conv6 (H/4), scored by the same loss as the logits, weights 4/7, 2/7, 1/7 (nnU-Net's 1, ½,
  ¼). The network has no skip connections, so its encoder learns only through the decoder's one path; the heads
  give it a shorter one. The whole-scan stage trains without them (they are not part of the saved model, so they
  would start there untrained).
* ``dropout_0.5`` (and ``_seed_1``, ``_seed_2``): dropout 0.5 on the bottleneck (fc_1, the network's one dropout)
  instead of the 2018 network's 0.25, as FCN's fully connected layers had (Long et al. 2015). Every lever that fitted
  the training crops better outlined the held-out women's lesions worse (``crop_96``, ``lesion_share_0.5``,
  ``epochs_54``): the recipe overfits its 108 women. Its baseline is a run of today's recipe (``--reuse recipe=WORK``).
* ``skips`` (and ``_seed_1``, ``_seed_2``): U-Net's skip connections (``model.skips``): the encoder's blocks at 1/8,
  1/4 and 1/2 of the input concatenated into the decoder's up_conv2, up_conv6 and up_conv9, which the 2018 network
  left out. The lesions the recipe misses are mostly small (``lesion_peaks_mias.py``), and without skips the decoder
  outlines them from the deepest features, 32 training pixels (13 mm) apart. Its baseline is a run of today's
  recipe (``--reuse recipe=WORK``).
* ``lr_0.004`` (and ``_seed_1``, ``_seed_2``): the crop stage at twice the recipe's learning rate (Adam, 0.004, the
  same warm-up and cosine decay to 0); the whole-scan stage keeps its own 0.0005. More epochs at the recipe's rate
  overfitted (``epochs_54``); a larger step is the other way to move further from the start in the same steps.
* ``dice_per_image`` (and ``_seed_1``, ``_seed_2``): the soft Dice term computed for each image and averaged
  (``per_image: true``) instead of from TP, FP and FN pooled over the batch, in both stages. Pooled, a batch's large
  lesions outweigh its small ones, and the lesions the recipe missed were mostly small (``lesion_peaks_mias.py``).
  The recipe has used it since it was measured here, so against today's recipe this arm changes nothing.
* ``iou_per_image`` (and ``_seed_1``, ``_seed_2``): that per-image Dice term replaced by the 2018 pipeline's soft IoU,
  per image as in its paper, with the Dice's smoothing of 1 pixel instead of the IoU's default 100 (which would
  halve the cost of missing a lesion of 100 pixels). Its baseline is a run of today's recipe (``--reuse recipe=WORK``).
* ``dice_lesion_images`` (and ``_seed_1``, ``_seed_2``): the recipe's per-image Dice averaged over the images that
  hold a lesion only (``lesion_images_only``). Two crops in three are lesion-free, and so are most whole scans; on
  such an image the Dice costs 1 − 1 / (FP + 1), half of a missed lesion's cost for one pixel of false-positive
  probability, so that the Dice term may teach the network to stay silent on small lesions too. Left out, their
  false positives are the cross-entropy's only.
* ``dice_per_image_x2`` (and ``_seed_1``, ``_seed_2``): the recipe's loss with its per-image Dice term weighted 2
  instead of 1 beside the cross-entropy: the other way from ``dice_lesion_images``, whose weaker Dice on lesion-free
  images found no more lesions and outlined them worse.

The ``whole_scans_6_epochs``, ``whole_scans_12_epochs``, ``whole_scans_lr_0.001`` and ``whole_scans_tversky`` arms
share their base arm's crop stage (``SAME_CROPS``: ``recipe``, ``seed_1`` or ``seed_2``, listed before them): the
same config and seed train the same crop-stage weights on one machine, so the arm starts from hard links to the base
arm's finished ``run/fold<k>/stage1_crops`` (and its ``run/cv.json``) and trains the whole-scan stage only.

Scored like :mod:`benchmarks.loss_study_mias`: out-of-fold FROC at one minimum detection area (``--min-area``) for
every arm, lesion Dice at each arm's own operating point, and paired bootstrap differences over women.

Data: J. Suckling et al., "The Mammographic Image Analysis Society Digital Mammogram Database", Excerpta Medica,
International Congress Series 1069, pp. 375-378, 1994. Research use only: nothing that shows a scan is written to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_description  # noqa: E402
from out_of_fold import (DIFFERENCE_GROUPS, arm_recipe, arm_tables, compare_arms, plot_frocs,  # noqa: E402
                         run_arm, write_results)
from quality_mias import ARCHIVE, GROUPS, RECIPE, RESULTS, nested, unpack  # noqa: E402

BASELINE = "recipe"
#: nnU-Net's rotation and scale ranges, and gamma/contrast wider than the recipe's ±0.15
STRONG_AUGMENT = ("nnU-Net's rotation and scale ranges (±180°, 0.7-1.4), gamma/contrast ±0.3",
                  ["data.augment.rotate=180", "data.augment.scale=[0.7, 1.4]", "data.augment.intensity=0.3"])
#: a stage on whole scans (the recipe's own second stage since it was measured here; ``stages=[]``: this stage only,
#: on top of the base arm's models): MIAS scans are 512² on the 0.4 mm grid, so a 512-px crop is the whole scan
#: (the sampler's rotation and scaling off: they would re-centre it on a breast pixel); about one pass over a fold's
#: training scans an epoch, at a quarter of the recipe's learning rate
WHOLE_SCANS = ("2 epochs on whole 512-px scans (40 steps of 4 scans, lr 0.0005, cosine)",
               ["stages=[]", "data.crop=512", "data.lesion_share=0", "data.augment.rotate=0",
                "data.augment.scale=[1, 1]", "train.epochs=2", "train.steps_per_epoch=40", "train.batch_size=4",
                "train.lr=0.0005", "train.warmup_epochs=0", "train.validation_freq=2"])


def mixed_loss(first: str, second: str, weight: float = 1.0) -> str:
    """A ``--set loss=`` value of the recipe's form: the loss ``first`` + ``weight`` × the loss ``second`` (YAML)."""
    return f"{{name: mixed, losses: [{first}, {second}], coefs: [1.0, {float(weight)!r}]}}"


def with_cross_entropy(term: str, weight: float = 1.0, pos_weight: float = 1.0) -> str:
    """The recipe's form with its cross-entropy (lesion pixels weighted ``pos_weight``) + ``weight`` × the region
    loss ``term``."""
    return mixed_loss(f"{{name: weighted_bce, pos_weight: {pos_weight:g}}}", term, weight)


#: the recipe's cross-entropy + soft Dice with the Dice term replaced by Salehi et al.'s recall-weighted Tversky index
RECALL_LOSS = with_cross_entropy("{name: tversky, alpha: 0.3, beta: 0.7}")
#: cross-entropy + the 2018 pipeline's soft IoU (Rahman & Wang) averaged over images, smoothed as the recipe's Dice
IMAGE_IOU_LOSS = with_cross_entropy("{name: iou, per_image: true, smooth: 1}")
#: the soft Dice averaged over images instead of pooled over the batch, so that an image's small lesion weighs in the
#: Dice term as much as another image's large one (today's recipe's Dice term)
IMAGE_DICE = "{name: dice, per_image: true}"
#: the recipe's cross-entropy + soft Dice with the Dice averaged over images
IMAGE_DICE_LOSS = with_cross_entropy(IMAGE_DICE)
#: the same, the Dice averaged over the images that hold a lesion only (lesion-free ones left to the cross-entropy)
LESION_IMAGE_DICE_LOSS = with_cross_entropy("{name: dice, per_image: true, lesion_images_only: true}")
#: the recipe's loss with its cross-entropy over each image's hardest tenth of pixels only (nnU-Net's Dice + TopK10)
TOPK_LOSS = mixed_loss("{name: topk_bce, fraction: 0.1}", IMAGE_DICE)
#: the recipe's loss with its cross-entropy weighing lesion pixels 3 times as much as background ones
LESION_WEIGHT_LOSS = with_cross_entropy(IMAGE_DICE, pos_weight=3)
#: the recipe's loss with twice the weight on its per-image Dice term
DOUBLE_IMAGE_DICE_LOSS = with_cross_entropy(IMAGE_DICE, weight=2.0)


def last_stage(**train) -> list[str]:
    """``--set`` keys that change these ``train`` keys of the recipe's last stage (``stages[-1]``)."""
    return [f"stages[-1].train.{key}={value}" for key, value in train.items()]


#: the training seeds an arm of :func:`with_seeds` is run with, and the recipe's own arm for each
SEED_BASELINES = {0: "recipe", 1: "seed_1", 2: "seed_2"}


def seed_twin(name: str, seed: int) -> str:
    """The arm ``name`` trained with another ``seed`` (the same folds): ``name_seed_N``; seed 0 is ``name`` itself."""
    return name if seed == 0 else f"{name}_seed_{seed}"


def with_seeds(name: str, what: str, overrides: list[str], prep: dict | None = None) -> dict:
    """The arm ``name`` and its twins ``name_seed_1``, ``name_seed_2``: another training seed, the same folds."""
    prep = prep or {}
    arms = {name: (what, overrides, prep)}
    for seed in SEED_BASELINES:
        if seed:
            arms[seed_twin(name, seed)] = (f"seed {seed}, {what}", [f"seed={seed}", "cv.seed=0", *overrides], prep)
    return arms


#: name → (what changes, the training keys it sets, the prep keys it sets)
ARMS = {
    "recipe": ("the recipe: 0.4 mm grid, 128-px crops (51 mm)", [], {}),
    "grid_0.8mm": ("0.8 mm grid, 128-px crops (102 mm)", [], {"scale": 0.0625}),
    "grid_0.3mm": ("0.3 mm grid, 128-px crops (38 mm)", [], {"scale": 0.05 / 0.3}),
    "grid_0.2mm": ("0.2 mm grid (mini-MIAS's own), 128-px crops (26 mm)", [], {"scale": 0.25}),
    "bfloat16": ("mixed bfloat16", ["train.mixed_precision=bfloat16"], {}),
    "epochs_18": ("18 epochs (validated every 6th)", ["train.epochs=18", "train.validation_freq=6"], {}),
    "contralateral": ("the other breast as a second channel", ["data.contralateral=true"], {"contralateral": True}),
    "width_0.75": ("width 0.75, 10 epochs (the same training time)",
                   ["model.width=0.75", "train.epochs=10", "train.validation_freq=5"], {}),
    "crop_192": ("192-px crops (77 mm), 7 a batch (the same pixels a step)",
                 ["data.crop=192", "train.batch_size=7"], {}),
    "crop_96": ("96-px crops (38 mm), 28 a batch (the same pixels a step)",
                ["data.crop=96", "train.batch_size=28"], {}),
    "lesion_share_0.5": ("half the crops on a lesion", ["data.lesion_share=0.5"], {}),
    "lesion_share_0.2": ("a fifth of the crops on a lesion", ["data.lesion_share=0.2"], {}),
    "epochs_36": ("36 epochs (validated every 12th)", ["train.epochs=36", "train.validation_freq=12"], {}),
    "epochs_54": ("54 epochs (validated every 18th)", ["train.epochs=54", "train.validation_freq=18"], {}),
    "width_0.75_epochs_18": ("width 0.75, the recipe's 18 epochs", ["model.width=0.75"], {}),
    "width_0.35": ("width 0.35, the recipe's 18 epochs", ["model.width=0.35"], {}),
    "seed_1": ("the recipe with training seed 1 (weights, crops, augmentation; the same folds)",
               ["seed=1", "cv.seed=0"], {}),
    "seed_2": ("the recipe with training seed 2 (weights, crops, augmentation; the same folds)",
               ["seed=2", "cv.seed=0"], {}),
    "augment_nnunet": (f"{STRONG_AUGMENT[0]}, the recipe's 18 epochs", STRONG_AUGMENT[1], {}),
    **with_seeds("augment_nnunet_36", f"36 epochs, {STRONG_AUGMENT[0]}",
                 ["train.epochs=36", "train.validation_freq=12", *STRONG_AUGMENT[1]]),
    "augment_nnunet_54": (f"54 epochs, {STRONG_AUGMENT[0]}",
                          ["train.epochs=54", "train.validation_freq=18", *STRONG_AUGMENT[1]], {}),
    "nested": ("nested cross-validation: the point chosen on, and every scan scored by, the mean of the 4 models "
               "trained without its woman's fold and one other", ["cv.nested=true"], {}),
    **with_seeds("whole_scans_6_epochs", "6 epochs on whole scans instead of 2 (after the same crops)",
                 last_stage(epochs=6, validation_freq=6)),
    **with_seeds("whole_scans_12_epochs", "12 epochs on whole scans instead of 6 (after the same crops)",
                 last_stage(epochs=12, validation_freq=12)),
    **with_seeds("ignore_calc", "calcification circles as an ignore region (prep.ignore_kinds)", [],
                 {"ignore_kinds": ["calcification"]}),
    **with_seeds("whole_scans_tversky", "whole-scan stage under BCE + Tversky (α 0.3, β 0.7) instead of BCE + Dice "
                 "(after the same crops)", [f"stages[-1].loss={RECALL_LOSS}"]),
    **with_seeds("whole_scans_lr_0.001", "whole-scan stage at lr 0.001 instead of 0.0005 (after the same crops)",
                 last_stage(lr=0.001)),
    **with_seeds("deep_supervision", "deep supervision in the crop stage (heads on up_conv2 and up_conv6)",
                 ["train.deep_supervision=true", *last_stage(deep_supervision="false")]),
    **with_seeds("dice_per_image", "the soft Dice term averaged over images instead of pooled over the batch "
                 "(both stages)", [f"loss={IMAGE_DICE_LOSS}"]),
    **with_seeds("iou_per_image", "the recipe's per-image soft Dice term replaced by the 2018 pipeline's soft IoU, per "
                 "image as in its paper (smoothing 1 pixel, as the Dice's)", [f"loss={IMAGE_IOU_LOSS}"]),
    **with_seeds("dice_lesion_images", "the per-image Dice term averaged over lesion images only (both stages)",
                 [f"loss={LESION_IMAGE_DICE_LOSS}"]),
    **with_seeds("dice_per_image_x2", "twice the weight on the per-image Dice term (cross-entropy 1, Dice 2; both "
                 "stages)", [f"loss={DOUBLE_IMAGE_DICE_LOSS}"]),
    **with_seeds("dropout_0.5", "dropout 0.5 on the bottleneck (fc_1) instead of 0.25", ["model.dropout=0.5"]),
    **with_seeds("ema", "the weights' moving average (Adam's EMA, momentum 0.995 a step) as each stage's model",
                 ["train.ema=0.995"]),
    **with_seeds("lesion_offset", "the lesion crops holding their lesion pixel anywhere in the crop, not at its "
                 "centre (nnU-Net's)", ["data.lesion_offset=1"]),
    **with_seeds("dense_crops", "the crops not on a lesion centred on the denser half of the breast (crop stage)",
                 ["data.background_quantile=0.5", "stages[-1].data.background_quantile=0"]),
    **with_seeds("topk_bce", "the cross-entropy over each image's hardest tenth of pixels (nnU-Net's TopK10) beside "
                 "the per-image Dice (both stages)", [f"loss={TOPK_LOSS}"]),
    **with_seeds("pos_weight_3", "the cross-entropy weighing lesion pixels 3 times as much as background ones, "
                 "beside the per-image Dice (both stages)", [f"loss={LESION_WEIGHT_LOSS}"]),
    **with_seeds("weight_decay", "AdamW's decoupled weight decay, λ = 1, on every kernel (both stages)",
                 ["train.weight_decay=1"]),
    **with_seeds("skips", "U-Net's skip connections: the encoder's blocks at 1/8, 1/4 and 1/2 of the input "
                 "concatenated into the decoder (model.skips)", ["model.skips=true"]),
    **with_seeds("lr_0.004", "the crop stage at lr 0.004 instead of 0.002 (the whole-scan stage as the recipe's)",
                 ["train.lr=0.004"]),
    "whole_scans": (f"the recipe's fold models, then {WHOLE_SCANS[0]}", WHOLE_SCANS[1], {}),
    "whole_scans_seed_1": (f"seed 1's fold models, then {WHOLE_SCANS[0]}", ["seed=1", "cv.seed=0", *WHOLE_SCANS[1]],
                           {}),
    "whole_scans_seed_2": (f"seed 2's fold models, then {WHOLE_SCANS[0]}", ["seed=2", "cv.seed=0", *WHOLE_SCANS[1]],
                           {}),
}
#: fine-tune arm → the arm whose fold models it starts from (``train.init_from``: fold k from fold k); the base arm
#: runs first, and the fine-tune's minutes are its own training only
FINE_TUNES = {"whole_scans": "recipe", "whole_scans_seed_1": "seed_1", "whole_scans_seed_2": "seed_2"}
#: arm → the arm whose fold models' first (crop) stage it shares: both train that stage with the same config and
#: seed, which on one machine gives the same weights bit for bit, so the arm starts from hard links to the base
#: arm's finished first stages (and its ``cv.json``) and trains its later stages only; the base arm runs first
SAME_CROPS = {seed_twin(arm, seed): base
              for arm in ("whole_scans_6_epochs", "whole_scans_12_epochs", "whole_scans_lr_0.001",
                          "whole_scans_tversky")
              for seed, base in SEED_BASELINES.items()}


def nested_arms(report: dict) -> str:
    """The clause naming the arms whose scans were predicted by means of nested models (``cv.nested``)."""
    names = [name for name, arm in report["arms"].items() if nested(arm["operating_point"])]
    return (f" (in {', '.join(f'`{n}`' for n in names)}: by the mean of the nested models that never saw her, "
            f"`cv.nested`)" if names else "")


def fine_tune_arms(report: dict) -> str:
    """The sentence naming the arms that fine-tune another arm's fold models (``FINE_TUNES``), or nothing."""
    tunes = [f"`{name}` from `{FINE_TUNES[name]}`'s" for name in report["arms"] if name in FINE_TUNES]
    return (f" Fine-tunes start from another arm's fold models, fold k from fold k ({'; '.join(tunes)}); their "
            f"minutes are the fine-tune's own." if tunes else "")


def write_markdown(report: dict, path: str) -> None:
    first = next(iter(report["arms"].values()))["real"]
    area = report["paired_min_area_mm2"]
    lines = ["# Which levers help find lesions on real mini-MIAS scans, out of fold", "",
             f"Each arm: the recipe `{report['recipe']}` with one setting changed, at its full budget, the same "
             f"{report['folds']} folds by woman and seed; {first['scans']} scans of {first['women']} women, "
             f"{first['lesions']} lesions; every scan predicted by the fold model that never saw its woman"
             f"{nested_arms(report)}. The FROC "
             f"sensitivities are at one minimum detection area for all arms ({area:g} mm²); the lesion Dice, false "
             f"positives and normals flagged at each arm's own operating point (chosen by the recipe's rule on its "
             f"pooled out-of-fold predictions). 95 % bootstrap intervals over women; the differences from "
             f"`{report['baseline']}` are paired (the same women resampled for both arms), **bold** where the "
             f"interval excludes 0. Minutes: each arm's whole benchmark (prep, training, out-of-fold prediction, "
             f"evaluation) on {report['machine']} (they also depend on what else the machine ran)."
             f"{fine_tune_arms(report)}", "",
             *arm_tables(report, ("setting", "setting"),
                         extra=(("training min", lambda arm: f"{arm['seconds']['train'] / 60:.1f}"),
                                ("total min", lambda arm: f"{arm['seconds_total'] / 60:.1f}")),
                         groups=(*DIFFERENCE_GROUPS, ("calcifications @1", "calcifications")))]
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")


def reuse(work: str, name: str, folder: str) -> None:
    """Take an earlier ``quality_mias`` work folder (run, fold predictions, ``result.json``) as arm ``name``."""
    target = os.path.join(work, name)
    if not os.path.isfile(os.path.join(folder, "result.json")):
        raise SystemExit(f"levers: --reuse {name}={folder}: no result.json there")
    if os.path.realpath(target) != os.path.realpath(folder):
        if os.path.lexists(target):
            shutil.rmtree(target) if os.path.isdir(target) and not os.path.islink(target) else os.remove(target)
        os.symlink(os.path.abspath(folder), target)


def first_stage(recipe: str, overrides: list[str]) -> tuple[str, dict]:
    """(folder name, config without its data folder) of the first curriculum stage an arm trains."""
    from mammo_seg.config import load_config, stage_configs

    folder, config = stage_configs(load_config(recipe, overrides))[0]
    tree = config.to_dict()
    tree["data"].pop("dir")
    return folder, tree


def share_crops(work: str, name: str, base: str, recipe: str, overrides: list[str], base_overrides: list[str]) -> None:
    """Start arm ``name``'s run from hard links to arm ``base``'s finished first stages (``SAME_CROPS``), after
    checking that the two arms train that stage with the same config."""
    from mammo_seg.run_dir import RunDir

    folder, config = first_stage(recipe, overrides)
    if (folder, config) != first_stage(recipe, base_overrides):
        raise SystemExit(f"levers: {name} does not train {base}'s first stage ({folder}) with the same config")
    source, target = RunDir(os.path.join(work, base, "run")), RunDir(os.path.join(work, name, "run"))
    folds = config["cv"]["folds"]
    missing = [k for k, fold in enumerate(source.folds(folds), start=1) if not fold.stage(folder).is_done()]
    if missing:
        raise SystemExit(f"levers: {name} shares {base}'s {folder}, which folds {missing} of {source.path} lack")
    os.makedirs(target.path, exist_ok=True)
    if not os.path.exists(target.folds_file):
        shutil.copy2(source.folds_file, target.folds_file)
    for have, want in zip(source.folds(folds), target.folds(folds)):
        if not os.path.exists(want.stage(folder).path):
            os.makedirs(want.path, exist_ok=True)
            shutil.copytree(have.stage(folder).path, want.stage(folder).path, copy_function=os.link)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default=RECIPE)
    parser.add_argument("--archive", default=ARCHIVE, help="the real mini-MIAS dev archive (.tar.xz)")
    parser.add_argument("--work", default=os.path.join("/tmp", "mammo_levers_mias"),
                        help="working folder: one sub-folder per arm (prep output, run, predictions)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "levers_mias"),
                        help="results prefix: PREFIX.json, PREFIX.md, PREFIX_froc.png")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--baseline", default=BASELINE, help="the arm the others are compared with (paired)")
    parser.add_argument("--min-area", type=float, default=160.0,
                        help="mm²: the smallest detection of every arm's FROC in the paired comparison")
    parser.add_argument("--reuse", action="append", default=[], metavar="ARM=FOLDER",
                        help="an earlier quality_mias work folder (with result.json) as this arm; repeatable")
    args = parser.parse_args(argv)
    names = [a for a in args.arms.split(",") if a]
    unknown = [a for a in names if a not in ARMS]
    if unknown or len(names) < 2:
        parser.error(f"--arms: at least two of {', '.join(ARMS)} (unknown: {', '.join(unknown) or 'none'})")
    if args.baseline not in names:
        parser.error(f"--baseline {args.baseline}: not among --arms")
    reused = dict(r.split("=", 1) for r in args.reuse if "=" in r)
    if len(reused) != len(args.reuse) or set(reused) - set(names):
        parser.error("--reuse: ARM=FOLDER, ARM among --arms")
    if not os.path.isfile(args.archive):
        parser.error(f"--archive {args.archive}: not found")
    needs = {**FINE_TUNES, **SAME_CROPS}
    early = [f"{n} (needs {needs[n]} before it)" for n in names if n in needs
             and (needs[n] not in names or names.index(needs[n]) > names.index(n))]
    if early:
        parser.error(f"--arms: arms listed before the arm whose models they start from: {', '.join(early)}")
    os.makedirs(args.work, exist_ok=True)
    for name, folder in reused.items():
        reuse(args.work, name, folder)
    for name in names:
        setting, overrides, prep = ARMS[name]
        if name in FINE_TUNES:
            base_run = os.path.join(os.path.abspath(args.work), FINE_TUNES[name], "run")
            overrides = [*overrides, f"train.init_from={base_run}"]
        recipe = arm_recipe(args.recipe, os.path.join(args.work, name), prep)
        if name in SAME_CROPS and not os.path.isfile(os.path.join(args.work, name, "result.json")):
            share_crops(args.work, name, SAME_CROPS[name], recipe, overrides, ARMS[SAME_CROPS[name]][1])
        run_arm(name, setting, recipe, overrides, args.archive, args.work, "levers")
    from data_prep.ground_truth import ground_truth

    results, common_area, paired = compare_arms(names, args.work, ground_truth(unpack(args.archive, args.work)),
                                                args.min_area, args.baseline, GROUPS)
    report = {"recipe": os.path.relpath(args.recipe, ROOT), "folds": results[names[0]]["folds"],
              "machine": machine_description(), "baseline": args.baseline,
              "arms": {name: {"setting": ARMS[name][0], "overrides": results[name]["overrides"],
                              "prep": ARMS[name][2], "operating_point": results[name]["operating_point"],
                              "real": results[name]["real"], "froc_at_common_area": common_area[name],
                              "seconds": results[name]["seconds"],
                              "seconds_total": results[name]["seconds_total"]} for name in names},
              "paired": paired, "paired_min_area_mm2": args.min_area}
    write_results(args.out, report, write_markdown, lambda path: plot_frocs(
        {name: arm["froc_at_common_area"]["froc"] for name, arm in report["arms"].items()}, path,
        f"FROC by lever (≥ {args.min_area:g} mm²), real mini-MIAS, out of fold"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
