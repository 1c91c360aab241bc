"""The calcification-cluster finder of ``benchmarks/calcifications_mias.py``: specks, linking, the cluster's place
and score, and the out-of-fold choice of its thresholds, on hand-made maps."""

import importlib.util
import os

import numpy as np
import pytest

from mammo_seg.detection import Detection, ScanLesions

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
PIXEL_MM = 0.2  # mini-MIAS: linking within 3 mm is 15 px, a speck at most 1.2 mm² is 30 px


@pytest.fixture(scope="module")
def finder():
    """``benchmarks/calcifications_mias.py`` as a module (its sibling modules importable for this file's tests)."""
    import sys

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(BENCHMARKS)
        spec = importlib.util.spec_from_file_location("calcifications_mias",
                                                      os.path.join(BENCHMARKS, "calcifications_mias.py"))
        module = importlib.util.module_from_spec(spec)
        patch.setitem(sys.modules, spec.name, module)  # its dataclass looks its module up there
        spec.loader.exec_module(module)
        yield module


def contrast_map(specks: dict, shape=(120, 120)) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    for (y, x), value in specks.items():
        out[y, x] = value
    return out


def test_three_specks_within_the_link_are_one_cluster_at_their_mean_centre(finder):
    clusters = finder.find_clusters(contrast_map({(50, 50): 20, (50, 55): 15, (55, 50): 10}), PIXEL_MM, 8.0)
    # the mean centre (51.67, 51.67) rounded; the score is the third-highest speck peak; the area its 3 specks
    assert clusters == [Detection((52, 52), 10.0, 3)]


def test_too_few_or_too_far_apart_specks_are_no_cluster(finder):
    assert finder.find_clusters(contrast_map({(50, 50): 20, (50, 55): 15}), PIXEL_MM, 8.0) == []
    # 16 px apart (3.2 mm): over the 3-mm link
    assert finder.find_clusters(contrast_map({(20, 20): 20, (20, 36): 20, (20, 52): 20}), PIXEL_MM, 8.0) == []
    # the third speck under the speck threshold
    assert finder.find_clusters(contrast_map({(50, 50): 20, (50, 55): 15, (55, 50): 10}), PIXEL_MM, 12.0) == []


def test_specks_link_in_a_chain(finder):
    # 0-14 and 14-28 px apart are linked (2.8 mm), 0-28 are not: single linkage makes one cluster of the three
    clusters = finder.find_clusters(contrast_map({(20, 20): 9, (20, 34): 30, (20, 48): 12}), PIXEL_MM, 8.0)
    assert clusters == [Detection((20, 34), 9.0, 3)]


def test_a_bright_region_larger_than_a_speck_does_not_count(finder):
    def with_region(rows: int, columns: int) -> np.ndarray:
        contrast = contrast_map({(50, 50): 20, (50, 56): 15})
        contrast[54:54 + rows, 54:54 + columns] = 30
        return contrast

    assert finder.find_clusters(with_region(7, 7), PIXEL_MM, 8.0) == []  # 49 px: 1.96 mm², over 1.2
    assert finder.find_clusters(with_region(4, 8), PIXEL_MM, 8.0) == []  # 32 px: over by two
    assert finder.find_clusters(with_region(5, 6), PIXEL_MM, 8.0) == [Detection((52, 54), 15.0, 32)]  # 30 px: a speck


def test_speck_contrast_is_a_speck_over_the_noise_inside_the_breast(finder):
    rng = np.random.default_rng(0)
    scan = np.zeros((200, 200), np.float32)
    scan[20:180, 20:180] = 100 + rng.normal(0, 2, (160, 160))
    scan[100:102, 100:102] += 40  # a 0.4-mm speck, 20 noise levels high
    contrast = finder.speck_contrast(scan, PIXEL_MM)
    assert contrast[100, 100] > 10
    assert np.percentile(contrast[40:160, 40:160], 99) < 6
    assert (contrast[:30] == 0).all()  # outside the breast and in its 3-mm edge band


def scan_with_lesion(lesion: bool) -> ScanLesions:
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    return ScanLesions(np.zeros((20, 20), np.float32), [mask] if lesion else [], ["CALC"] if lesion else [], 0.04)


def test_the_finder_is_chosen_for_the_most_lesions_within_the_false_positive_budget(finder):
    scans = [scan_with_lesion(True), scan_with_lesion(True), scan_with_lesion(False), scan_with_lesion(False)]
    hit, miss = (7, 7), (15, 15)
    found = [[Detection(hit, 9.0, 3)], [Detection(hit, 5.0, 3)], [Detection(miss, 7.0, 3)], [Detection(miss, 3.0, 3)]]
    # down the scores: 9 (1 lesion, 0 FP), 7 (1, 1), 5 (2, 1), 3 (2, 2: over 0.25 × 4 scans)
    choice = finder.choose_finder(scans, {8.0: found})
    assert (choice["score_threshold"], choice["found"], choice["false_positives"]) == (5.0, 2, 1)


def test_each_fold_is_scored_by_a_choice_made_without_it(finder):
    scans = [scan_with_lesion(True), scan_with_lesion(False)] * 2
    hit, miss = (7, 7), (15, 15)
    # fold 1 (scans 0, 1): its lesion's cluster scores 4, a false positive 6; fold 2 (scans 2, 3): its lesion's 9
    found = [[Detection(hit, 4.0, 3)], [Detection(miss, 6.0, 3)], [Detection(hit, 9.0, 3)], []]
    clusters, chosen = finder.out_of_fold_clusters(scans, [1, 1, 2, 2], {8.0: found})
    assert chosen[1]["score_threshold"] == 9.0  # chosen on fold 2: it misses fold 1's lesion
    # chosen on fold 1, where the false positive comes first and is over the budget (1 on 2 scans): no cluster,
    # so that fold 2's own cluster is not kept either
    assert chosen[2]["score_threshold"] == float("inf")
    assert clusters == [[], [], [], []]


def test_a_given_choice_sees_the_other_folds_scans_only(finder):
    scans = [scan_with_lesion(True), scan_with_lesion(False)] * 2
    found = [[Detection((7, 7), 4.0, 3)], [], [Detection((7, 7), 9.0, 3)], []]
    seen = []

    def choose(training):
        seen.append(training)
        return {"speck_threshold": 8.0, "score_threshold": 5.0}

    clusters, _ = finder.out_of_fold_clusters(scans, [1, 1, 2, 2], {8.0: found}, choose)
    assert seen == [[2, 3], [0, 1]] and clusters == [[], [], [Detection((7, 7), 9.0, 3)], []]


def test_keeping_no_cluster_beats_clusters_that_find_nothing(finder):
    scans = [scan_with_lesion(True)] + [scan_with_lesion(False)] * 3
    # down the scores: 9 (a false positive: 0 lesions, 1 FP), 8 (2 FP: over 0.25 × 4 scans), so the lesion's 3 is
    # never reached, and the one cluster within the budget finds nothing
    found = [[Detection((7, 7), 3.0, 3)], [Detection((15, 15), 9.0, 3)], [Detection((15, 15), 8.0, 3)], []]
    choice = finder.choose_finder(scans, {8.0: found})
    assert (choice["score_threshold"], choice["found"], choice["false_positives"]) == (float("inf"), 0, 0)


def test_the_speck_threshold_is_chosen_with_the_score_threshold(finder):
    scans = [scan_with_lesion(True), scan_with_lesion(True), scan_with_lesion(False), scan_with_lesion(False)]
    hit, miss = (7, 7), (15, 15)
    at_6 = [[Detection(hit, 9.0, 3)], [], [Detection(miss, 20.0, 3)], [Detection(miss, 19.0, 3)]]
    at_8 = [[Detection(hit, 9.0, 3)], [Detection(hit, 8.5, 3)], [Detection(miss, 8.0, 3)], []]
    # at 6 the two false positives come first (over 0.25 × 4 scans at the second); at 8 both lesions, 0 FP
    choice = finder.choose_finder(scans, {6.0: at_6, 8.0: at_8})
    assert (choice["speck_threshold"], choice["score_threshold"], choice["found"]) == (8.0, 8.5, 2)


SECTION = {"objective": "sensitivity", "max_fp_per_image": 1.0, "max_normal_rate": 0.25, "min_areas_mm2": [1]}


def network_scan(finder, peaks: dict, lesion: bool, clusters=()):
    """A 20² scan of 1-mm² pixels: the network's 2×2 blobs at ``peaks`` (corner → probability), a lesion at
    rows and columns 5-9 when ``lesion``."""
    p = np.zeros((20, 20), np.float32)
    for (y, x), v in peaks.items():
        p[y:y + 2, x:x + 2] = v
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    return finder.WithClusters(p, [mask] if lesion else [], ["CIRC"] if lesion else [], 1.0, clusters=tuple(clusters))


def test_the_combined_point_keeps_the_rule_with_the_clusters_counted(finder):
    """One lesion scan (the network: the lesion at 0.6, a false positive at 0.9) and four lesion-free ones. Without
    clusters the rule finds the lesion at every threshold up to 0.6 and takes the highest; with cluster false
    positives on half the lesion-free scans no threshold keeps a quarter of them unflagged, and the rule falls
    back, as the recipe's does (:func:`mammo_seg.inference.operating_point.select`), to the fewest flagged, then
    the best Dice, and on a tie the first candidate: the lowest threshold, 0.05."""
    from types import SimpleNamespace

    section = SimpleNamespace(**SECTION)
    scans = [network_scan(finder, {(6, 6): 0.6, (15, 15): 0.9}, True)] + [network_scan(finder, {}, False)] * 4
    network = finder.network_candidates(scans, section.min_areas_mm2)
    point = finder.combined_point(network, scans, [[] for _ in scans], section)
    assert (point["threshold"], point["sensitivity"]) == (0.6, 1.0)  # the highest threshold that finds the lesion
    # the lesion's 2×2 of its 25 px at every threshold up to 0.6: Dice 2·4 / (8 + 25), the false positive's 4 px too
    assert point["mean_dice"] == pytest.approx(8 / 33)
    flagging = [[], [Detection((1, 1), 1.0, 3)], [Detection((1, 1), 1.0, 3)], [], []]
    point = finder.combined_point(network, scans, flagging, section)
    assert (point["threshold"], point["normal_with_detection_rate"]) == (0.05, 0.5)


def test_the_rule_point_counts_the_chosen_scans_and_their_kept_clusters_only(finder):
    """Scans 0-3 chosen of 5; a cluster on the lesion (kept), one false positive on scan 2 (kept), one on scan 3
    (not kept), one on scan 4 (not chosen). Every threshold finds the lesion (the network's blob up to 0.6, the
    cluster at all), with one false positive in 4 scans and one of the 3 lesion-free scans flagged (within this
    section's limit of 0.4); the tie goes to the best lesion Dice, which the network's outline gives up to 0.6."""
    from types import SimpleNamespace

    section = SimpleNamespace(**{**SECTION, "max_normal_rate": 0.4})
    scans = [network_scan(finder, {(6, 6): 0.6}, True)] + [network_scan(finder, {}, False)] * 4
    network = finder.network_candidates(scans, section.min_areas_mm2)
    clusters = finder.cluster_matches(scans, [[Detection((7, 7), 9.0, 3)], [], [Detection((1, 1), 8.0, 3)],
                                              [Detection((1, 1), 7.0, 3)], [Detection((1, 1), 12.0, 3)]])
    assert clusters.hits == [[0], [], [], []] and list(clusters.false_positive) == [False, True, True, True]
    point = finder.rule_point(network, np.arange(4), clusters, clusters.score >= 8.0, section)
    assert (point["threshold"], point["sensitivity"], point["fp_per_image"]) == (0.6, 1.0, 0.25)
    assert point["normal_with_detection_rate"] == pytest.approx(1 / 3)
    assert point["mean_dice"] == pytest.approx(8 / 29)  # 2·4 / (4 + 25): the network's outline (a cluster has none)
    point = finder.rule_point(network, np.arange(4), clusters, clusters.score >= 7.0, section)  # scan 3's too
    assert point["normal_with_detection_rate"] == pytest.approx(2 / 3) and point["fp_per_image"] == 0.5


def test_the_rule_chooses_the_finder_within_its_limit_on_normals_flagged(finder):
    """The network finds the one lesion scan's lesion at 0.6. Clusters: one on the second lesion (score 9), false
    positives on two of the 6 lesion-free scans (scores 10 and 5). Within 0.25 false positives per image the budget
    takes scores down to 9: both lesions, one normal flagged (1/6 ≤ 0.25). At score 5 both normals are flagged
    (2/6 > 0.25): the rule stops at 9 too. Without the lesion cluster scoring above the false positive's 10, no
    threshold finds more than the network alone while keeping the normals in the limit: no cluster."""
    from types import SimpleNamespace

    section = SimpleNamespace(**SECTION)
    scans = [network_scan(finder, {(6, 6): 0.6}, True), network_scan(finder, {}, True)]
    scans += [network_scan(finder, {}, False)] * 6
    network = finder.network_candidates(scans, section.min_areas_mm2)
    found = [[], [Detection((7, 7), 9.0, 3)], [Detection((1, 1), 10.0, 3)], [Detection((1, 1), 5.0, 3)], [], [], [],
             []]
    choice = finder.choose_finder_by_rule(network, np.arange(8), {8.0: finder.cluster_matches(scans, found)},
                                          section)
    assert (choice["speck_threshold"], choice["score_threshold"]) == (8.0, 9.0)
    assert (choice["point"]["sensitivity"], choice["point"]["threshold"]) == (1.0, 0.6)
    found[1] = [Detection((7, 7), 4.0, 3)]  # the lesion's cluster now comes after both false positives
    choice = finder.choose_finder_by_rule(network, np.arange(8), {8.0: finder.cluster_matches(scans, found)},
                                          section)
    assert choice["score_threshold"] == float("inf") and choice["point"]["sensitivity"] == 0.5
