import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgclust.errors import ParameterError
from imgclust.metrics import accuracy_hungarian, accuracy_majority, confusion, evaluate


def test_perfect_clustering_scores_one_under_any_renaming():
    t = ["cat", "cat", "dog", "dog", "bird"]
    p = [7, 7, 3, 3, 5]
    s = evaluate(t, p)
    assert s == {"accuracy_hungarian": 1.0, "accuracy_majority": 1.0, "nmi": pytest.approx(1.0), "ari": 1.0}


def test_hand_computed_one_to_one_and_many_to_one():
    # cluster 0: a a b   cluster 1: b b a   -> matching 0->a, 1->b gives 2 + 2 = 4 of 6
    t = ["a", "a", "b", "b", "b", "a"]
    p = [0, 0, 0, 1, 1, 1]
    assert accuracy_hungarian(t, p) == pytest.approx(4 / 6)
    assert accuracy_majority(t, p) == pytest.approx(4 / 6)


def test_many_to_one_beats_one_to_one_when_k_exceeds_labels():
    # Three clusters, two labels: clusters 0 and 2 are both 'a'. Majority maps both to 'a' (6/6);
    # one-to-one can only match one of them (4/6).
    t = ["a", "a", "b", "b", "a", "a"]
    p = [0, 0, 1, 1, 2, 2]
    assert accuracy_majority(t, p) == 1.0
    assert accuracy_hungarian(t, p) == pytest.approx(4 / 6)


def test_all_in_one_cluster():
    t = ["a"] * 3 + ["b"] * 7
    p = [0] * 10
    assert accuracy_majority(t, p) == pytest.approx(0.7)
    assert accuracy_hungarian(t, p) == pytest.approx(0.7)
    assert evaluate(t, p)["ari"] == pytest.approx(0.0)


def test_confusion_and_mappings():
    c = confusion(["x", "y", "y", "x", "x"], [1, 0, 0, 1, 0])
    assert c.clusters == [0, 1] and c.labels == ["x", "y"]
    assert c.matrix.tolist() == [[1, 2], [2, 0]]
    assert c.hungarian_mapping() == {0: "y", 1: "x"}
    assert c.majority_mapping() == {0: "y", 1: "x"}


def test_bad_lengths_are_refused():
    with pytest.raises(ParameterError, match="equal length"):
        evaluate([0, 1], [0])
    with pytest.raises(ParameterError, match="empty"):
        evaluate([], [])


labels = st.lists(st.integers(0, 4), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(t=labels, seed=st.integers(0, 1000))
def test_properties_bounds_permutation_and_perfect(t, seed):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 4, size=len(t))
    s = evaluate(t, p)
    assert 0.0 <= s["accuracy_hungarian"] <= s["accuracy_majority"] <= 1.0
    assert -1.0 <= s["ari"] <= 1.0 and 0.0 <= s["nmi"] <= 1.0 + 1e-12
    # Renaming clusters changes nothing.
    perm = rng.permutation(10)
    assert evaluate(t, perm[p]) == pytest.approx(s)
    # Shuffling samples (both arrays alike) changes nothing.
    order = rng.permutation(len(t))
    assert evaluate(np.asarray(t)[order], p[order]) == pytest.approx(s)
    # Predicting the truth is perfect.
    assert evaluate(t, t)["accuracy_hungarian"] == 1.0


@pytest.mark.parametrize("seed", range(40))
def test_nmi_ari_and_assignment_equal_scikit_learn_and_scipy(seed: int):
    from scipy.optimize import linear_sum_assignment as scipy_lsa
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from imgclust.metrics import linear_sum_assignment

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    t = rng.choice(["cat", "dog", "eel", "fox", "gnu"][: int(rng.integers(1, 6))], size=n)
    p = rng.integers(0, int(rng.integers(1, 12)), size=n)
    if seed % 5 == 0:
        p = np.arange(n)  # every sample its own cluster
    m = evaluate(t, p)
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(t, p), abs=1e-12)
    assert m["ari"] == pytest.approx(adjusted_rand_score(t, p), abs=1e-12)
    cost = rng.integers(0, 20, size=(int(rng.integers(1, 13)), int(rng.integers(1, 13)))).astype(float)
    rows, cols = linear_sum_assignment(cost)
    r_ref, c_ref = scipy_lsa(cost)
    assert len(rows) == len(set(rows)) == len(set(cols)) == min(cost.shape) and list(rows) == sorted(rows)
    assert cost[rows, cols].sum() == cost[r_ref, c_ref].sum()  # ties may pick another optimum of the same cost
