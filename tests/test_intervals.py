"""Bootstrap intervals over women: the observed figures equal detection.py's, and a hand-worked two-woman case."""

import numpy as np

from mammo_seg.detection import ScanLesions, froc, score_scans
from mammo_seg.intervals import bootstrap


def two_women():
    lesion = np.zeros((20, 20), bool)
    lesion[2:6, 2:6] = True
    prob1 = np.zeros((20, 20), np.float32)
    prob1[3:5, 3:5] = 0.7  # on the lesion: found at thresholds up to 0.7
    prob1[12:14, 12:14] = 0.6  # a false positive up to 0.6
    prob2 = np.zeros((20, 20), np.float32)
    prob2[8:10, 8:10] = 0.3  # woman B's normal scan: a false positive up to 0.3
    return [ScanLesions(prob1, [lesion], ["CIRC"], 1.0), ScanLesions(prob2, [], [], 1.0)]


def test_observed_figures_are_those_of_detection_and_the_intervals_are_hand_computed():
    scans = two_women()
    thresholds = (0.2, 0.5, 0.8)
    result = bootstrap(scans, ["A", "B"], 0.5, 0.0, [0.5, None], thresholds=thresholds, rates=(0.25, 0.5, 1.0),
                       resamples=400)
    group = result["groups"]["all"]
    reference = froc(scans, 0.0, thresholds=thresholds, fp_rates=(0.25, 0.5, 1.0))["sensitivity_at_fp_per_image"]
    assert {r: v["value"] for r, v in group["sensitivity_at_fp_per_image"].items()} == reference == \
        {"0.25": 0.0, "0.5": 1.0, "1": 1.0}
    at = score_scans(scans, 0.5, 0.0)
    assert group["sensitivity_at_operating_point"]["value"] == at["sensitivity"] == 1.0
    assert result["fp_per_image_at_operating_point"]["value"] == at["fp_per_image"] == 0.5
    assert result["normal_with_detection_rate"]["value"] == 0.0 and result["mean_lesion_dice"]["value"] == 0.5
    # resamples: AB/BA as observed; AA has 1 FP/image at 0.5 (so 0 sensitivity at 0.5 FP/image) and no normal
    # scan; BB has no lesion (left out of the sensitivities and the Dice)
    assert group["sensitivity_at_fp_per_image"]["0.5"]["ci95"] == [0.0, 1.0]
    assert group["sensitivity_at_fp_per_image"]["1"]["ci95"] == [1.0, 1.0]
    assert result["fp_per_image_at_operating_point"]["ci95"] == [0.0, 1.0]
    assert result["normal_with_detection_rate"]["ci95"] == [0.0, 0.0]
    assert result["mean_lesion_dice"]["ci95"] == [0.5, 0.5]
    assert result["women"] == 2 and group["lesions"] == 1


def test_groups_of_kinds_count_their_own_lesions_and_the_seed_fixes_the_intervals():
    scans = two_women()
    scans.append(ScanLesions(np.zeros((20, 20), np.float32), [np.eye(20, dtype=bool)], ["CALC"], 1.0))
    groups = {"masses": {"CIRC", "SPIC", "MISC"}, "calcifications": {"CALC"}}
    a = bootstrap(scans, ["A", "B", "C"], 0.5, 0.0, [0.5, None, 0.0], groups=groups, resamples=200)
    assert a["groups"]["masses"]["lesions"] == 1 and a["groups"]["calcifications"]["lesions"] == 1
    assert a["groups"]["masses"]["sensitivity_at_operating_point"]["value"] == 1.0
    assert a["groups"]["calcifications"]["sensitivity_at_operating_point"]["value"] == 0.0
    assert a == bootstrap(scans, ["A", "B", "C"], 0.5, 0.0, [0.5, None, 0.0], groups=groups, resamples=200)


def test_paired_differences_draw_the_same_women_for_both_arms():
    from mammo_seg.intervals import Arm, paired_differences

    finds = two_women()
    misses = two_women()
    misses[0].probability[3:5, 3:5] = 0.0  # the same false positives, the lesion missed
    arms = {"finds": Arm(finds, [0.5, None], 0.5, 0.0), "misses": Arm(misses, [0.0, None], 0.5, 0.0)}
    result = paired_differences(arms, ["A", "B"], "finds", thresholds=(0.2, 0.5, 0.8), rates=(0.5, 1.0),
                                resamples=300)
    diff = result["differences"]["misses"]
    assert list(result["differences"]) == ["misses"] and result["baseline"] == "finds"
    # every resample holding woman A (AB, BA, AA) loses her one lesion: −1; BB has no lesion and is left out
    at = diff["groups"]["all"]["sensitivity_at_operating_point"]
    assert at == {"value": -1.0, "ci95": [-1.0, -1.0], "resolved": True}
    assert diff["groups"]["all"]["sensitivity_at_fp_per_image"]["1"] == {"value": -1.0, "ci95": [-1.0, -1.0],
                                                                          "resolved": True}
    assert diff["mean_lesion_dice"] == {"value": -0.5, "ci95": [-0.5, -0.5], "resolved": True}
    # same false positives in both arms: a difference of 0 that no resample moves
    assert diff["fp_per_image_at_operating_point"] == {"value": 0.0, "ci95": [0.0, 0.0], "resolved": False}
    # unpaired, the two arms' own intervals of the sensitivity at 0.5 FP/image overlap completely
    alone = bootstrap(finds, ["A", "B"], 0.5, 0.0, [0.5, None], thresholds=(0.2, 0.5, 0.8), rates=(0.5,),
                      resamples=300)
    assert alone["groups"]["all"]["sensitivity_at_fp_per_image"]["0.5"]["ci95"] == [0.0, 1.0]


def test_paired_differences_refuse_arms_of_other_scans():
    import pytest

    from mammo_seg.intervals import Arm, paired_differences

    one = two_women()
    with pytest.raises(ValueError, match="same order"):
        paired_differences({"a": Arm(one, [0.5, None], 0.5, 0.0), "b": Arm(one[:1], [0.5], 0.5, 0.0)},
                           ["A", "B"], "a")


def test_the_mean_over_trainings_of_one_pair_is_the_paired_difference_and_of_two_their_mean():
    from mammo_seg.intervals import Arm, mean_paired_difference, paired_differences

    finds = two_women()
    misses = two_women()
    misses[0].probability[3:5, 3:5] = 0.0  # the same false positives, the lesion missed
    finder, misser = Arm(finds, [0.5, None], 0.5, 0.0), Arm(misses, [0.0, None], 0.5, 0.0)
    kwargs = {"thresholds": (0.2, 0.5, 0.8), "rates": (0.5, 1.0), "resamples": 300}
    one = mean_paired_difference([(misser, finder)], ["A", "B"], **kwargs)
    assert one["mean"] == paired_differences({"finds": finder, "misses": misser}, ["A", "B"], "finds",
                                             **kwargs)["differences"]["misses"]
    # two trainings: one loses the lesion (−1), the other is the baseline's twin (0); every resample holding
    # woman A averages them to −0.5, and BB (no lesion) is left out
    two = mean_paired_difference([(misser, finder), (finder, finder)], ["A", "B"], **kwargs)
    assert two["trainings"] == 2
    assert two["mean"]["groups"]["all"]["sensitivity_at_operating_point"] == {"value": -0.5, "ci95": [-0.5, -0.5],
                                                                              "resolved": True}
    assert two["mean"]["mean_lesion_dice"] == {"value": -0.25, "ci95": [-0.25, -0.25], "resolved": True}
    assert [e["groups"]["all"]["sensitivity_at_fp_per_image"]["1"] for e in two["each"]] == [-1.0, 0.0]
    assert two["mean"]["fp_per_image_at_operating_point"]["resolved"] is False


def test_the_mean_over_trainings_refuses_arms_of_other_scans():
    import pytest

    from mammo_seg.intervals import Arm, mean_paired_difference

    one = two_women()
    full, short = Arm(one, [0.5, None], 0.5, 0.0), Arm(one[:1], [0.5], 0.5, 0.0)
    with pytest.raises(ValueError, match="same order"):
        mean_paired_difference([(full, full), (short, full)], ["A", "B"])
    with pytest.raises(ValueError, match="no pair"):
        mean_paired_difference([], ["A", "B"])
