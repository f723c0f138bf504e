"""Quantizers and collision re-assignment (paper App. A): hand-made cases, properties, ReDial."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn.cluster import KMeans

from crslib.ids import collisions, quantize as q





def dist_table(rows: list[list[list[float]]]) -> np.ndarray:
    """(n, L, K) distances from nested lists."""
    return np.array(rows, dtype=float)


# ------------------------------------------------------------------ re-assignment, by hand
def test_nearest_free_last_level_code_in_order_of_smallest_distance():
    codes = [[0, 0], [0, 0], [0, 1]]
    dist = dist_table([[[0, 1, 1], [0.2, 0.5, 0.9]],
                       [[0, 1, 1], [0.1, 0.3, 0.4]],   # smaller last-level distance: keeps (0,0)
                       [[0, 1, 1], [0.5, 0.0, 0.5]]])
    r = collisions.reassign_collisions(codes, dist)
    # item 0 goes down its rank 0, 1, 2: 0 is item 1's, 1 is item 2's -> 2
    assert r.codes.tolist() == [[0, 2], [0, 0], [0, 1]]
    assert (r.collisions_before, r.collisions_after, r.backtracked) == (1, 0, 0)
    assert r.moved.tolist() == [True, False, False]


def test_ties_go_by_item_index():
    codes = [[0, 0]] * 3
    dist = dist_table([[[0, 1, 1, 1], [0, 1, 2, 3]]] * 3)
    r = collisions.reassign_collisions(codes, dist)
    assert r.codes.tolist() == [[0, 0], [0, 1], [0, 2]]
    assert r.collisions_before == 2 and r.moved.sum() == 2


def test_full_last_level_backtracks_one_level():
    # K=2: prefix (0,) holds (0,0) and (0,1); item 2 must leave it
    codes = [[0, 0], [0, 1], [0, 0]]
    dist = dist_table([[[0.0, 0.9], [0.1, 0.9]],
                       [[0.0, 0.9], [0.9, 0.0]],
                       [[0.1, 0.6], [0.2, 0.3]]])
    r = collisions.reassign_collisions(codes, dist)
    assert r.codes.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert r.backtracked == 1


def test_backtrack_keeps_what_it_can_and_reassigns_following_levels_by_rank():
    # L=3, K=2: (0,0,*) is full, (0,1,*) has room -> change level 2 only, then level 3
    codes = [[0, 0, 0], [0, 0, 1], [0, 0, 0]]
    dist = dist_table([[[0, 1], [0, 1], [0.05, 0.5]],
                       [[0, 1], [0, 1], [0.5, 0.05]],
                       [[0, 1], [0.0, 0.7], [0.6, 0.1]]])
    r = collisions.reassign_collisions(codes, dist)
    assert r.codes[2].tolist() == [0, 1, 1]


def test_backtrack_two_levels_when_a_whole_subtree_is_full():
    # L=3, K=2: all four SIDs under (0,) taken; item 4 collides with item 0
    codes = [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [0, 0, 0]]
    far = [[0, 1], [0, 1], [0.9, 0.9]]
    dist = dist_table([[[0, 1], [0, 1], [0.05, 0.5]], far, far, far,
                       [[0.0, 0.5], [0.3, 0.1], [0.4, 0.2]]])
    r = collisions.reassign_collisions(codes, dist)
    # level 1 -> 1 (only subtree with room); levels 2 and 3 follow their own ranks: 1, 1
    assert r.codes[4].tolist() == [1, 1, 1]
    assert r.codes[:4].tolist() == codes[:4]
    assert r.backtracked == 1


def test_a_group_never_takes_another_groups_sid():
    # groups {0,1} on (0,0) and {2,3} on (0,1); item 1's next choice (0,1) is reserved
    codes = [[0, 0], [0, 0], [0, 1], [0, 1]]
    dist = dist_table([[[0, 1, 1], [0.0, 0.5, 0.9]],
                       [[0, 1, 1], [0.01, 0.1, 0.5]],
                       [[0, 1, 1], [0.5, 0.0, 0.9]],
                       [[0.0, 0.2, 0.1], [0.5, 0.01, 0.9]]])
    r = collisions.reassign_collisions(codes, dist)
    assert r.codes[:3].tolist() == [[0, 0], [0, 2], [0, 1]]
    assert r.codes[3].tolist() == [2, 1]  # (0,) full: level 1 by rank 0 (full), 2; then 1
    assert len({tuple(c) for c in r.codes.tolist()}) == 4


def test_no_collisions_is_identity():
    codes = np.array([[0, 1], [1, 0], [1, 1]])
    r = collisions.reassign_collisions(codes, np.zeros((3, 2, 2)))
    assert (r.codes == codes).all() and not r.moved.any() and r.collisions_before == 0


def test_reassignment_rejects_impossible_and_bad_input():
    with pytest.raises(ValueError, match="cannot get unique SIDs"):
        collisions.reassign_collisions([[0, 0]] * 5, np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match="disagree"):
        collisions.reassign_collisions([[0, 0]], np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        collisions.reassign_collisions([[0], [0]], np.full((2, 1, 2), np.nan))
    with pytest.raises(ValueError, match="lie in"):
        collisions.reassign_collisions([[0], [5]], np.zeros((2, 1, 2)))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(2, 4), st.integers(0, 2**31 - 1), st.data())
def test_reassignment_properties(levels, k, seed, data):
    n = data.draw(st.integers(1, k ** levels))
    rng = np.random.default_rng(seed)
    # few distinct distance rows -> many collisions and full subtrees
    dist = rng.integers(0, 3, size=(n, levels, k)).astype(float)
    codes = dist.argmin(-1)
    r = collisions.reassign_collisions(codes, dist)
    assert r.codes.shape == (n, levels) and r.codes.min() >= 0 and r.codes.max() < k
    assert len({tuple(c) for c in r.codes.tolist()}) == n
    assert r.moved.sum() == r.collisions_before == n - len({tuple(c) for c in codes.tolist()})
    kept = {tuple(c) for c in r.codes[~r.moved].tolist()}
    assert kept == {tuple(c) for c in codes.tolist()}  # every SID stays with one of its items


# ------------------------------------------------------------------ quantizers
def test_rqkmeans_one_level_matches_sklearn_kmeans():
    X = np.random.default_rng(0).normal(size=(200, 5))
    m = q.RQKMeans(levels=1, codebook_size=7, seed=3).fit(X)
    ref = KMeans(7, n_init=1, random_state=3).fit(X)
    np.testing.assert_allclose(m.codebooks_[0], ref.cluster_centers_)
    assert (m.transform(X)[:, 0] == ref.predict(X)).all()


def test_residual_distances_follow_the_greedy_path():
    X = np.random.default_rng(1).normal(size=(50, 4))
    m = q.RQKMeans(levels=3, codebook_size=4).fit(X)
    d, codes = m.residual_distances(X), m.transform(X)
    r = X.copy()
    for level, C in enumerate(m.codebooks_):
        np.testing.assert_allclose(d[:, level], ((r[:, None] - C[None]) ** 2).sum(-1), atol=1e-9)
        assert (codes[:, level] == d[:, level].argmin(1)).all()
        r = r - C[codes[:, level]]
    np.testing.assert_allclose(m.decode(codes), X - r, atol=1e-9)


def test_rqkmeans_quantizes_a_pca_projection():
    X = np.random.default_rng(2).normal(size=(100, 40))
    m = q.RQKMeans(levels=2, codebook_size=4, n_components=8).fit(X)
    assert m.codebooks_.shape == (2, 4, 8) and m.decode(m.transform(X)).shape == (100, 40)
    assert 0 < m.reconstruction_error(X) < 1
    raw = q.RQKMeans(levels=2, codebook_size=4, n_components=None).fit(X)
    assert raw.pca_ is None and raw.codebooks_.shape == (2, 4, 40)


def test_few_distinct_points_reconstruct_exactly():
    X = np.repeat(np.eye(3), 2, axis=0)  # 3 distinct points, K=8
    m = q.RQKMeans(levels=2, codebook_size=8).fit(X)
    assert m.reconstruction_error(X) < 1e-12


@pytest.mark.parametrize("make", [lambda: q.RQKMeans(), lambda: q.RQVAE(epochs=1)])
def test_bad_input_raises_value_error(make):
    X = np.random.default_rng(0).normal(size=(20, 4))
    with pytest.raises(ValueError, match="not fitted"):
        make().transform(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make().fit(bad)
    with pytest.raises(ValueError, match="non-empty"):
        make().fit(np.zeros((0, 4)))
    m = make()
    m.levels = 0
    with pytest.raises(ValueError, match="levels"):
        m.fit(X)
    with pytest.raises(ValueError, match="unknown method"):
        q.make_quantizer("pq")


def test_rqvae_is_deterministic_and_leaves_global_rng_alone():
    X = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    state = torch.random.get_rng_state()
    a = q.RQVAE(levels=3, codebook_size=8, epochs=4, batch_size=64, seed=5).fit(X)
    assert torch.equal(state, torch.random.get_rng_state())
    b = q.RQVAE(levels=3, codebook_size=8, epochs=4, batch_size=64, seed=5).fit(X)
    assert np.array_equal(a.codebooks_, b.codebooks_)
    assert np.array_equal(a.transform(X), b.transform(X))
    c = q.RQVAE(levels=3, codebook_size=8, epochs=4, batch_size=64, seed=6).fit(X)
    assert not np.array_equal(a.codebooks_, c.codebooks_)
    assert len(a.history_) == 4 and np.isfinite(a.history_).all()
    assert a.get_params()["seed"] == 5


def test_rqvae_training_lowers_the_loss_and_uses_every_code():
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(16, 8))[rng.integers(0, 16, 512)] + 0.05 * rng.normal(size=(512, 8)))
    m = q.RQVAE(levels=2, codebook_size=16, epochs=30, batch_size=128,
                hidden_dims=(64, 32)).fit(X)
    assert m.history_[-1] < m.history_[0]
    assert len(np.unique(m.transform(X)[:, 0])) == 16  # dead codes were revived


def _embeddings(draw, n, d):
    return np.array(draw(st.lists(st.lists(st.floats(-10, 10), min_size=d, max_size=d),
                                  min_size=n, max_size=n)), dtype=np.float64).reshape(n, d)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["rqkmeans", "rqvae"]), st.integers(1, 3), st.integers(2, 6),
       st.integers(1, 6), st.integers(0, 1000), st.data())
def test_quantizer_properties(method, levels, k, d, seed, data):
    n = data.draw(st.integers(1, min(40, k ** levels)))
    X = _embeddings(data.draw, n, d)
    params = {"epochs": 2, "hidden_dims": (16, 8), "latent_dim": 4} if method == "rqvae" else {}

    def run():
        m = q.make_quantizer(method, levels=levels, codebook_size=k, seed=seed, **params).fit(X)
        dist = m.residual_distances(X)
        return m.transform(X), collisions.reassign_collisions(dist.argmin(-1), dist).codes

    greedy, codes = run()
    assert codes.shape == (n, levels) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < k
    assert len({tuple(c) for c in codes.tolist()}) == n
    greedy2, codes2 = run()
    assert np.array_equal(greedy, greedy2) and np.array_equal(codes, codes2)


# ------------------------------------------------------------------ real catalog
@pytest.fixture(scope="module")
def redial_embeddings(shared_data):
    from crslib import data
    from crslib.ids import encode
    catalog = data.load_redial_catalog(shared_data / "redial")
    return catalog, encode.encode_items(catalog, progress=False)  # cached after the first run


@pytest.mark.slow  # about 40 s, plus about 90 s the first time the embeddings are encoded
def test_redial_rqvae_4x64_unique_and_level1_used(redial_embeddings):
    catalog, X = redial_embeddings
    assert X.shape[0] == len(catalog) == 6924
    m = q.RQVAE(levels=4, codebook_size=64, seed=0).fit(X)
    dist = m.residual_distances(X)
    greedy = dist.argmin(-1)
    r = collisions.reassign_collisions(greedy, dist)
    assert len({tuple(c) for c in r.codes.tolist()}) == 6924
    assert len(np.unique(r.codes[:, 0])) / 64 >= 0.9
    assert r.collisions_before < 0.05 * 6924  # codes carry information beyond level 1
    assert m.reconstruction_error(X) < 0.9


def test_redial_rqkmeans_4x64_unique(redial_embeddings):
    catalog, X = redial_embeddings
    m = q.RQKMeans(levels=4, codebook_size=64, seed=0).fit(X)
    dist = m.residual_distances(X)
    r = collisions.reassign_collisions(dist.argmin(-1), dist)
    assert len({tuple(c) for c in r.codes.tolist()}) == len(catalog)
    assert len(np.unique(r.codes[:, 0])) == 64


def test_the_quantizers_are_scikit_learn_estimators():
    """get_params, clone and fit_transform come from scikit-learn's BaseEstimator and
    TransformerMixin (issue 23): a clone is unfitted with the same parameters, and fits to the
    same codes."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError
    X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    for est in (q.RQKMeans(levels=2, codebook_size=4, seed=3),
                q.RQVAE(levels=2, codebook_size=4, seed=3, epochs=2)):
        codes = est.fit_transform(X)
        twin = clone(est)
        assert twin.get_params() == est.get_params() and not hasattr(twin, "codebooks_")
        with pytest.raises(NotFittedError, match="not fitted"):
            twin.transform(X)
        np.testing.assert_array_equal(twin.fit(X).transform(X), codes)
