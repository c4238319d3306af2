"""The automatic k rule on data with known structure, its alternatives, and how a run uses them.

(``tests/test_choose_k.py`` covers the sweep and the criteria; this file the rule built on them.)
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import CLASSES, draw_image
from imgclust.cluster.choose_k import (
    Sweep,
    SweepRow,
    eigengap_k,
    pick_k,
    result_from_labels,
    score_sweep,
    sweep_k,
)
from imgclust.cluster.spectral import fit_spectral
from imgclust.outputs.k_candidates import K_CANDIDATES, load_candidate, save_candidates
from imgclust.pipeline import run
from imgclust.store.results import results_key, vectors_id


def two_scales(seed: int, *, n_per: int = 12, dim: int = 32, coarse: int = 4, fine: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``coarse`` well-separated super-groups, each of ``fine`` tighter groups of ``n_per`` points."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(coarse):
        centre = rng.normal(0, 30.0, dim)
        for f in range(fine):
            X.append(centre + rng.normal(0, 3.0, dim) + rng.normal(0, 1.0, (n_per, dim)))
            y += [c * fine + f] * n_per
    return np.concatenate(X).astype(np.float32), np.array(y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_scales_of_groups_give_the_fine_level(seed: int) -> None:
    X, y = two_scales(seed)
    sweep = sweep_k(X, range(2, 31), method="spectral", seed=seed, labels_true=y)
    pick = pick_k(sweep)
    assert pick.k == 20, pick.reason
    assert pick.candidates[0] == 20 and len(pick.candidates) >= 2 and len(set(pick.candidates)) == len(pick.candidates)
    assert sweep.rows[sweep.ks.index(20)].nmi == pytest.approx(1.0)


def fake_sweep(sil: dict[int, float], inertia: dict[int, float], eigenvalues: list[float] | None = None,
               se: float = 0.002) -> Sweep:
    rows = [SweepRow(k=k, inertia=inertia[k], silhouette=sil[k], silhouette_se=se, calinski_harabasz=1.0,
                     davies_bouldin=1.0) for k in sorted(sil)]
    return Sweep(rows=rows, n_samples=1000, silhouette_sample=1000, seed=0, engine="test", seconds=0.0,
                 eigenvalues=tuple(eigenvalues or ()))


KS = range(2, 21)
# Inertia with an elbow at 10: steep to 10, then flat.
INERTIA = {k: 2000.0 - 150.0 * min(k, 10) - 5.0 * max(0, k - 10) for k in KS}


def spectrum(gap_after: int, n: int = 22) -> list[float]:
    """Eigenvalues with one clear gap after the first ``gap_after``."""
    return [1.0 - 0.002 * i if i < gap_after else 0.9 - 0.01 * (i - gap_after) for i in range(n)]


def test_silhouette_and_graph_agreeing_is_taken_as_is() -> None:
    # A clean two-class folder (dogs vs cats): the silhouette peaks at 2 and the graph has its gap after 2.
    sil = {k: 0.045 for k in KS} | {2: 0.107, 3: 0.093}
    pick = pick_k(fake_sweep(sil, INERTIA, spectrum(2)))
    assert (pick.k, pick.silhouette_k, pick.eigengap_k, pick.elbow) == (2, 2, 2, 10)
    assert pick.alternatives[0].basis == "agreement"
    assert pick.reason.startswith("the images fall most clearly into 2 groups")
    assert 10 in pick.candidates  # the elbow's finer grouping is offered


def test_a_coarse_split_the_graph_does_not_support_gives_way_to_the_elbow() -> None:
    # A mixed folder: the clearest split is thumbnails vs photos (k=2), but the graph's parts are 10.
    sil = {k: 0.05 for k in KS} | {2: 0.114, 3: 0.10}
    pick = pick_k(fake_sweep(sil, INERTIA, spectrum(10)))
    assert pick.k == 10 and pick.silhouette_k == 2 and pick.eigengap_k == 10
    assert pick.candidates[:2] == (10, 2)
    assert "was not taken" in pick.reason and "into 2 groups" in pick.reason
    coarse = pick.alternatives[1]
    assert coarse.k == 2 and coarse.basis == "separation" and "clearest split" in coarse.reason


def test_no_jargon_without_a_name_in_the_reasons() -> None:
    sil = {k: 0.05 for k in KS} | {2: 0.114, 14: 0.07}
    pick = pick_k(fake_sweep(sil, INERTIA, spectrum(6)))
    for c in pick.alternatives:
        assert "standard error" not in c.reason and "kneedle" not in c.reason
        assert re.search(r"\d", c.reason)  # says which k and what number singled it out
    assert len(pick.alternatives) <= 4


def test_without_a_spectrum_the_silhouette_rule_is_used() -> None:
    # k-means has no graph: the one-standard-error rule with the elbow as tie-break.
    sil = {k: 0.1 for k in KS} | {8: 0.3}
    pick = pick_k(fake_sweep(sil, INERTIA))
    assert pick.k == 8 and pick.eigengap_k is None and pick.candidates[0] == 8


def test_eigengap_is_the_largest_gap_within_the_sweep() -> None:
    assert eigengap_k(fake_sweep({k: 0.1 for k in KS}, INERTIA, spectrum(7))) == 7
    assert eigengap_k(fake_sweep({k: 0.1 for k in KS}, INERTIA)) is None


def test_score_sweep_fills_the_label_columns_from_the_kept_labels() -> None:
    X, y = two_scales(0, n_per=6, coarse=2, fine=2)
    plain = sweep_k(X, [2, 3, 4], method="spectral")
    assert all(r.nmi is None for r in plain.rows)
    scored = score_sweep(plain, y)
    with_labels = sweep_k(X, [2, 3, 4], method="spectral", labels_true=y)
    assert [r.as_row() for r in scored.rows] == [r.as_row() for r in with_labels.rows]
    assert score_sweep(plain, None) is plain and score_sweep(plain, y[:-1]) is plain


def test_result_from_labels_is_what_spectral_returns_for_them() -> None:
    X, _ = two_scales(1, n_per=8, coarse=2, fine=2)
    fit = fit_spectral(X, 4, seed=0)
    again = result_from_labels(X, fit.labels, 4, seed=0, method="spectral")
    np.testing.assert_array_equal(again.labels, fit.labels)
    np.testing.assert_allclose(again.centers, fit.centers, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again.distances, fit.distances, rtol=1e-4, atol=1e-4)
    assert again.inertia == pytest.approx(fit.inertia, rel=1e-5)


def test_saved_candidates_need_a_matching_fingerprint(tmp_path: Path) -> None:
    files = [f"/photos/{i}.png|100|{i}" for i in range(6)]  # the vectors' identities: path, size, mtime
    vectors = vectors_id("pixels-x", files)
    fp = results_key(vectors, method="spectral", method_options={}, seed=0)
    save_candidates(tmp_path, fp, {2: np.array([0, 0, 0, 1, 1, 1]), 3: np.array([0, 0, 1, 1, 2, 2])})
    np.testing.assert_array_equal(load_candidate(tmp_path, fp, 3), [0, 0, 1, 1, 2, 2])
    assert load_candidate(tmp_path, fp, 4) is None
    for other in (results_key(vectors, method="spectral", method_options={}, seed=1),
                  results_key(vectors, method="kmeans", method_options={}, seed=0),
                  results_key(vectors_id("pixels-x", [*files[:5], "/photos/5.png|100|6"]), method="spectral",
                              method_options={}, seed=0)):
        assert other != fp and load_candidate(tmp_path, other, 3) is None
    (tmp_path / K_CANDIDATES).write_bytes(b"not a zip")
    assert load_candidate(tmp_path, fp, 3) is None


# --- a default run ----------------------------------------------------------------------------------

def _sweep_rows(out: Path) -> list[dict[str, str]]:
    with (out / "sweep.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def image_folder_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three well-separated classes, 6 images each (the conftest folder, shared by this module's runs)."""
    root = tmp_path_factory.mktemp("images") / "images"
    for c, (name, (color, shape)) in enumerate(CLASSES.items()):
        for i in range(6):
            draw_image(root / name / f"{name}_{i}.png", color=color, shape=shape, seed=10 * c + i,
                       size=(64 + 8 * i, 48 + 4 * i))
    return root


@pytest.fixture(scope="module")
def auto_run(image_folder_module: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("auto") / "out"
    run(image_folder_module, out, features="pixels", feature_options={"size": 4}, k_range=(2, 6), cache=False)
    return out


def test_a_default_run_lists_the_alternatives_with_reasons(auto_run: Path) -> None:
    summary = json.loads((auto_run / "summary.json").read_text())
    cands = summary["k_candidates"]
    assert summary["k_auto"] is True and cands[0]["k"] == summary["k"]
    assert 2 <= len(cands) <= 4 and len({c["k"] for c in cands}) == len(cands)
    assert all(c["reason"] and c["basis"] and 2 <= c["k"] <= 6 for c in cands)
    assert {"elbow_k", "silhouette_k", "eigengap_k"} <= summary.keys()


def test_a_default_run_fills_the_sweep_label_columns(auto_run: Path) -> None:
    rows = _sweep_rows(auto_run)
    assert [int(r["k"]) for r in rows] == [2, 3, 4, 5, 6]
    assert all(r["nmi"] and r["ari"] and r["accuracy_majority"] for r in rows)
    assert [r["k"] for r in rows if r["accuracy_hungarian"]] == ["3"]  # the folder has 3 labels


def test_a_default_run_report_shows_how_k_was_chosen(auto_run: Path) -> None:
    html = (auto_run / "report.html").read_text()
    assert 'id="choosing-k"' in html and 'href="#choosing-k"' in html
    section = html[html.index('id="choosing-k"'):html.index('id="plots"')]
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"', section)
    summary = json.loads((auto_run / "summary.json").read_text())
    for c in summary["k_candidates"]:
        assert f"<td class=\"n\">{c['k']}" in section


def test_rerun_with_a_candidate_k_reuses_the_sweep(image_folder_module: Path, auto_run: Path) -> None:
    summary = json.loads((auto_run / "summary.json").read_text())
    other = next(c["k"] for c in summary["k_candidates"] if c["k"] != summary["k"])
    fp = results_key(vectors_id("pixels-x", X=np.zeros((1, 1))), method="spectral", method_options={}, seed=0)
    assert load_candidate(auto_run, fp, other) is None  # other vectors: no match
    saved = np.load(auto_run / K_CANDIDATES)
    r = run(image_folder_module, auto_run, features="pixels", feature_options={"size": 4}, k=other, cache=False)
    assert r.summary["k"] == other and r.summary.get("k_from_sweep") is True
    assert r.clustering.info == {"from": K_CANDIDATES}
    np.testing.assert_array_equal(r.clustering.labels, saved[f"k{other}"])
    html = (auto_run / "report.html").read_text()
    assert "not clustered again" in html
    # The report of the rerun still lists the candidates, the one used here marked.
    assert r.summary["k_candidates"] == summary["k_candidates"]
    assert f'<td class="n">{other} (used here)</td>' in html and 'id="choosing-k"' in html
    # ... and so does a second rerun, back to the chosen k.
    back = run(image_folder_module, auto_run, features="pixels", feature_options={"size": 4}, k=summary["k"],
               cache=False)
    assert back.summary.get("k_from_sweep") is True and back.summary["k_candidates"] == summary["k_candidates"]
    np.testing.assert_array_equal(back.clustering.labels, saved[f"k{summary['k']}"])
    # Another seed is another clustering: fitted afresh.
    r2 = run(image_folder_module, auto_run, features="pixels", feature_options={"size": 4}, k=other, seed=1,
             cache=False)
    assert "k_from_sweep" not in r2.summary and r2.clustering.info.get("from") is None



def test_cli_run_prints_the_other_choices(image_folder_module: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from imgclust.cli import main

    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(image_folder_module), "--out", str(out), "--features", "pixels",
                                    "--size", "4", "--ks", "2-6", "--no-cache"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    summary = json.loads((out / "summary.json").read_text())
    other = next(c for c in summary["k_candidates"] if c["k"] != summary["k"])
    assert "Other choices (rerun with --k K into the same --out; no clustering again):" in text
    assert f"k={other['k']}: {' '.join(other['reason'].split())}" in text


def test_the_run_sweep_leaves_unlabelled_images_out_of_its_scores():
    from imgclust.cluster.choose_k import score_sweep, sweep_k
    from imgclust.metrics import evaluate

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(10 * c, 1, (20, 4)) for c in range(3)]).astype(np.float32)
    truth = [str(i // 20) for i in range(60)]
    truth[::7] = [None] * len(truth[::7])  # images at the top level of a folder-labelled tree
    scored = score_sweep(sweep_k(X, [2, 3], method="kmeans"), truth)
    row = scored.rows[1]
    keep = [t is not None for t in truth]
    expected = evaluate(np.array(truth, object)[keep].astype(str), scored.labels[3][keep])["nmi"]
    assert row.nmi == pytest.approx(expected) and row.accuracy_hungarian is not None  # 3 labels, k = 3
