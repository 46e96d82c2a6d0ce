"""Metrics, the predictions file and McNemar's test (the paper's section 5.4)."""

import numpy as np
import pytest

from vmp_jax import cli
from vmp_jax.evaluate import metrics


def _predictions(ids, labels, predicted, k=3):
    scores = np.full((len(ids), k), 0.1)
    scores[np.arange(len(ids)), predicted] = 0.8
    return metrics.Predictions(np.array([str(i) for i in ids]), np.array(labels), scores)


def _table6_files(folder, shuffle_seed: int) -> list[str]:
    """Two predictions files keyed by video paths whose correct/incorrect pattern is the
    paper's Table 6 (14302 both right, 469 only A, 1833 only B, 3302 both wrong), the second
    file's rows in another order."""
    counts = {(True, True): 14302, (True, False): 469, (False, True): 1833, (False, False): 3302}
    right = [pattern for pattern, n in counts.items() for _ in range(n)]
    ids = [f"k400/val/{i:06d}_clip.mp4" for i in range(len(right))]
    labels = np.arange(len(right)) % 3
    paths = []
    for which in (0, 1):
        predicted = np.where([r[which] for r in right], labels, (labels + 1) % 3)
        p = _predictions(ids, labels, predicted)
        if which:
            order = np.random.default_rng(shuffle_seed).permutation(len(ids))
            p = metrics.Predictions(p.video_ids[order], p.labels[order], p.scores[order])
        paths.append(str(folder / f"{'ab'[which]}.csv"))
        metrics.write_csv(p, paths[-1])
    return paths


def test_table6_counts_give_the_papers_chi_square(capsys):
    result = metrics.McNemar(14302, 469, 1833, 3302)
    assert round(result.chi2, 1) == 808.2
    assert result.p_value < 1e-100
    assert cli.main(["compare", "--counts", "14302", "469", "1833", "3302"]) == 0
    assert "chi-square = 808.2" in capsys.readouterr().out


def test_table6_from_predictions_files_keyed_by_path(tmp_path, capsys):
    paths = _table6_files(tmp_path, shuffle_seed=3)
    result = metrics.mcnemar(*(metrics.read_csv(p) for p in paths))
    assert (result.both_correct, result.only_a, result.only_b, result.both_wrong) == (
        14302,
        469,
        1833,
        3302,
    )
    assert cli.main(["compare", *paths]) == 0
    assert "chi-square = 808.2" in capsys.readouterr().out


def test_old_integer_id_files_still_read(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("video_id,label,prediction,score_0,score_1\n0,1,1,0.2,0.8\n1,0,1,0.4,0.6\n")
    old = metrics.read_csv(str(path))
    assert old.video_ids.tolist() == ["0", "1"]
    result = metrics.mcnemar(old, _predictions([1, 0], [0, 1], [0, 0], k=2))
    assert (result.both_correct, result.only_a, result.only_b, result.both_wrong) == (0, 1, 1, 0)


def test_repeated_ids_are_an_error(tmp_path):
    a = _predictions(["v1.mp4", "v2.mp4", "v1.mp4"], [0, 1, 2], [0, 1, 2])
    b = _predictions(["v1.mp4", "v2.mp4"], [0, 1], [0, 1])
    with pytest.raises(ValueError, match=r"repeated in the first file: \['v1.mp4'\]"):
        metrics.mcnemar(a, b)


def test_mcnemar_pairs_rows_by_video_id(tmp_path, capsys):
    a = _predictions([0, 1, 2, 3, 4], [0, 1, 2, 0, 1], [0, 1, 0, 1, 1])  # right: 0 1 4
    b = _predictions([4, 3, 2, 1, 0], [1, 0, 2, 1, 0], [0, 0, 2, 1, 1])  # right: 3 2 1
    result = metrics.mcnemar(a, b)
    assert (result.both_correct, result.only_a, result.only_b, result.both_wrong) == (1, 2, 2, 0)
    paths = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    metrics.write_csv(a, paths[0])
    metrics.write_csv(b, paths[1])
    assert cli.main(["compare", *paths]) == 0
    assert "chi-square = 0.0" in capsys.readouterr().out


def test_ids_in_one_file_only_are_named(tmp_path, capsys):
    a = _predictions(["x/a.mp4", "x/b.mp4", "x/c.mp4"], [0, 1, 2], [0, 1, 2])
    b = _predictions(["x/a.mp4", "x/b.mp4", "x/d.mp4"], [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match=r"first file \['x/c.mp4'\], second file \['x/d.mp4'\]"):
        metrics.mcnemar(a, b)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,x\n1,2\n")
    assert cli.main(["compare", str(bad), str(bad)]) == 2
    assert "not a predictions file" in capsys.readouterr().err


def test_csv_round_trip_and_header(tmp_path):
    p = _predictions(["a dir/v 1.mp4", "b,c.mp4"], [2, 0], [2, 1])  # spaces, a comma
    path = tmp_path / "p.csv"
    metrics.write_csv(p, str(path))
    header = path.read_text().splitlines()[0]
    assert header == "video_id,label,prediction,score_0,score_1,score_2"
    back = metrics.read_csv(str(path))
    np.testing.assert_array_equal(back.video_ids, p.video_ids)
    np.testing.assert_allclose(back.scores, p.scores)


def test_top_k_confusion_and_per_class():
    p = _predictions([0, 1, 2, 3], [0, 1, 2, 2], [0, 2, 2, 1])
    assert metrics.top_k(p, 1) == 0.5
    assert metrics.top_k(p, 3) == 1.0
    np.testing.assert_array_equal(metrics.confusion(p), [[1, 0, 0], [0, 0, 1], [0, 1, 1]])
    np.testing.assert_allclose(metrics.per_class_accuracy(p), [1.0, 0.0, 0.5])
