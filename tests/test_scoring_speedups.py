"""The fast paths of scoring give the plain computation's values, whatever the batch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from gananomaly import scoring


def _brute_knn(rows: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((rows[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1))
    d.sort(axis=1)
    own = d[:, 0] < 1e-6
    return np.where(own, d[:, 1 : k + 1].mean(1), d[:, :k].mean(1))


@pytest.mark.parametrize("m", [1000, 37, 6, 1])
def test_smallest_matches_a_full_top_k_with_ties(m):
    rng = np.random.RandomState(m)
    values = torch.from_numpy(rng.randint(0, 50, size=(70, -(-m // 16) * 16)).astype(np.float32))
    values[:, m:] = float("inf")  # a padded bank
    k = min(6, m)
    expected = values.topk(k, dim=1, largest=False).values
    got, columns = scoring.smallest(values, k)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # the columns hold those values, each column once
    torch.testing.assert_close(values.gather(1, columns), expected, rtol=0, atol=0)
    assert all(len(set(row.tolist())) == k for row in columns)


@pytest.mark.parametrize("m", [300, 5, 1])
def test_knn_is_the_exact_mean_distance_and_leaves_a_training_row_out(m):
    rng = np.random.RandomState(0)
    bank = rng.randn(m, 24).astype(np.float32) + 3.0
    cfg = scoring.ScoreConfig(knn_bank=bank)
    rows = np.vstack([rng.randn(40, 24).astype(np.float32) + 3.0, bank[:3]])
    got = scoring.knn_distance(rows, cfg)
    k = max(1, min(cfg.knn_k, m - 1))
    expected = _brute_knn(rows, bank, k) if m > 1 else np.sqrt(((rows - bank) ** 2).sum(1))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # a row scores the same bits alone and in any batch (blocks have a fixed shape)
    alone = np.array([scoring.knn_distance(rows[i : i + 1], cfg)[0] for i in range(len(rows))])
    np.testing.assert_array_equal(alone, got)
    perm = rng.permutation(len(rows))
    np.testing.assert_array_equal(scoring.knn_distance(rows[perm], cfg), got[perm])


def test_latent_distance_is_the_mahalanobis_distance_in_any_batch():
    rng = np.random.RandomState(1)
    codes = rng.randn(700, 5)
    cov = np.cov(rng.randn(200, 5) @ rng.randn(5, 5), rowvar=False)
    precision = np.linalg.inv(cov)
    cfg = scoring.ScoreConfig(latent_loc=codes.mean(0), latent_factor=np.linalg.cholesky(precision).T.copy())
    d = codes - cfg.latent_loc
    got = scoring.latent_distance(torch.from_numpy(codes), cfg)
    np.testing.assert_allclose(got, np.einsum("ij,jk,ik->i", d, precision, d), rtol=1e-10)
    alone = np.array([scoring.latent_distance(torch.from_numpy(codes[i : i + 1]), cfg)[0] for i in range(0, 700, 50)])
    np.testing.assert_array_equal(alone, got[::50])


def test_prepared_bank_follows_a_replaced_bank_and_is_never_pickled():
    rng = np.random.RandomState(2)
    cfg = scoring.ScoreConfig(knn_bank=rng.randn(50, 8).astype(np.float32))
    rows = rng.randn(10, 8).astype(np.float32)
    first = scoring.knn_distance(rows, cfg)
    copy = pickle.loads(pickle.dumps(cfg))
    assert copy._knn_cache is None
    np.testing.assert_array_equal(scoring.knn_distance(rows, copy), first)
    cfg.knn_bank = cfg.knn_bank + 10.0  # a new bank: the prepared one is rebuilt
    np.testing.assert_allclose(scoring.knn_distance(rows, cfg), _brute_knn(rows, cfg.knn_bank, 5), rtol=1e-4)


def test_table_rows_split_between_threads_score_as_on_one_thread(monkeypatch):
    """Rows split between worker threads (one intra-op thread each) give one-thread scoring's
    bits, whatever the thread count and however the rows are batched."""
    from gananomaly import GANAnomalyDetector

    monkeypatch.setattr(scoring, "SPLIT_MIN_ROWS", 256)  # split small inputs too
    rng = np.random.RandomState(0)
    det = GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0).fit(rng.randn(300, 5))
    T = rng.randn(1000, 5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = det.score_components(T, raw=True)
        torch.set_num_threads(3)
        split = det.score_components(T, raw=True)
        pieces = np.concatenate([det.score_samples(T[:100]), det.score_samples(T[100:])])
        assert torch.get_num_threads() == 3  # restored after the workers
    finally:
        torch.set_num_threads(before)
    for name in ("discriminator", "reconstruction", "latent", "knn"):
        np.testing.assert_array_equal(split[name].to_numpy(), one[name].to_numpy(), err_msg=name)
    np.testing.assert_array_equal(pieces, det.score_samples(T))


def test_refinement_on_worker_threads_leaves_the_networks_as_they_were(monkeypatch):
    """Latent refinement in several worker threads: every parameter's requires_grad flag is
    restored and no gradient reaches the networks; scores agree with one-thread scoring."""
    from gananomaly import GANAnomalyDetector

    monkeypatch.setattr(scoring, "SPLIT_MIN_ROWS", 128)
    entered, real_frozen = [], scoring.frozen

    def counting_frozen(*nets):
        entered.append(len(nets))
        return real_frozen(*nets)

    rng = np.random.RandomState(1)
    det = GANAnomalyDetector(epochs=1, encoder_epochs=1, n_refine_steps=3, random_state=0).fit(rng.randn(300, 5))
    nets = (det.generator_, det.discriminator_, det.encoder_)
    flags = [p.requires_grad for net in nets for p in net.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for net in nets for p in net.parameters()]
    T = rng.randn(1000, 5)
    before = torch.get_num_threads()
    monkeypatch.setattr(scoring, "frozen", counting_frozen)
    try:
        torch.set_num_threads(4)
        split = det.score_samples(T)
        assert entered == [3]  # once around the four workers, never by a worker (shared flags)
        torch.set_num_threads(1)
        one = det.score_samples(T)
    finally:
        torch.set_num_threads(before)
    assert [p.requires_grad for net in nets for p in net.parameters()] == flags
    after = [p.grad for net in nets for p in net.parameters()]
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(after, grads))
    np.testing.assert_allclose(split, one, rtol=1e-6, atol=1e-9)


def test_concurrent_scoring_calls_restore_the_thread_count(monkeypatch):
    """Scoring from several Python threads at once (a multi-threaded server): every call gets
    one-thread scoring's values and the process ends on the thread count it had."""
    from concurrent.futures import ThreadPoolExecutor

    from gananomaly import GANAnomalyDetector

    monkeypatch.setattr(scoring, "SPLIT_MIN_ROWS", 128)
    rng = np.random.RandomState(2)
    det = GANAnomalyDetector(epochs=1, encoder_epochs=1, random_state=0).fit(rng.randn(300, 5))
    tables = [rng.randn(700, 5) for _ in range(6)]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        expected = [det.score_samples(t) for t in tables]
        torch.set_num_threads(3)
        with ThreadPoolExecutor(max_workers=6) as pool:
            got = list(pool.map(det.score_samples, tables))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def _brute_local(rows: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distance, local ratio) by the definition, in float64: a row's mean distance to its k
    nearest bank rows (itself left out), over the mean of those rows' own such distance."""
    def nearest(q):
        d = np.sqrt(((q[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1))
        order = np.argsort(d, axis=1, kind="stable")
        d_sorted = np.take_along_axis(d, order, 1)
        own = d_sorted[:, 0] < 1e-6
        pick = np.where(own[:, None], order[:, 1 : k + 1], order[:, :k])
        return np.take_along_axis(d, pick, 1).mean(1), pick

    own_dist, _ = nearest(bank)
    dist, pick = nearest(rows)
    return dist, dist / own_dist[pick].mean(1)


def test_the_local_knn_term_is_the_distance_over_the_neighbours_own_distance_in_any_batch():
    rng = np.random.RandomState(3)
    # a tight cluster beside a wide one: the row just off the tight cluster is close in absolute
    # terms (a small distance) and far for its cluster (a large ratio)
    bank = np.vstack([rng.randn(30, 6) * 0.05, rng.randn(400, 6) * 2.0 + 6.0]).astype(np.float32)
    raw = {"features": bank.copy()}
    cfg = scoring.ScoreConfig()
    scoring.fit_knn(raw, cfg, seed=0)
    expected_own, _ = _brute_local(bank, bank, 5)
    np.testing.assert_allclose(cfg.knn_own, expected_own, rtol=1e-4)
    # the training rows' terms leave each row out, as scoring it again does
    dist, local = scoring.knn_terms(bank, cfg)
    np.testing.assert_array_equal(raw["knn"], dist)
    np.testing.assert_array_equal(raw["knn_local"], local)
    rows = np.vstack([rng.randn(40, 6) * 2.0 + 6.0, np.full((1, 6), 0.5), bank[:3]]).astype(np.float32)
    dist, local = scoring.knn_terms(rows, cfg)
    want_dist, want_local = _brute_local(rows, bank, 5)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-4)
    np.testing.assert_allclose(local, want_local, rtol=1e-4)
    off_cluster = 40
    assert dist[off_cluster] < np.median(dist[:40])  # globally "dense"...
    assert local[off_cluster] > 5 * np.max(local[:40])  # ...locally far off
    alone = np.array([scoring.knn_terms(rows[i : i + 1], cfg)[1][0] for i in range(len(rows))])
    np.testing.assert_array_equal(alone, local)
    # the differentiable form (explanations) gives the same terms
    t = torch.from_numpy(rows)
    bank_t = torch.from_numpy(cfg.knn_bank)
    d_diff, l_diff = scoring._knn_differentiable(t, bank_t, bank_t.pow(2).sum(1), 5, torch.from_numpy(cfg.knn_own))
    np.testing.assert_allclose(d_diff.numpy(), dist, rtol=1e-4)
    np.testing.assert_allclose(l_diff.numpy(), local, rtol=1e-4)


def test_duplicated_bank_rows_have_a_floored_own_distance_and_finite_ratios():
    rng = np.random.RandomState(4)
    bank = np.vstack([np.zeros((8, 3)), rng.randn(100, 3)]).astype(np.float32)  # 8 copies of one row
    raw = {"features": bank}
    cfg = scoring.ScoreConfig()
    scoring.fit_knn(raw, cfg, seed=0)
    floor = np.float32(scoring.OWN_DISTANCE_FLOOR * np.median(cfg.knn_own[8:]))
    np.testing.assert_allclose(cfg.knn_own[:8], floor, rtol=1e-6)  # the copies' 0, floored
    assert np.isfinite(raw["knn_local"]).all()
    assert np.isfinite(scoring.knn_terms(rng.randn(50, 3).astype(np.float32) * 0.01, cfg)[1]).all()


def test_a_bank_mostly_of_one_repeated_row_floors_by_the_rows_that_spread():
    """Discrete or stuck-at-one-value data: most bank rows sit among 5 copies (own distance 0).
    The floor comes from the rows that do spread, so a row a hair off the repeated value is far
    for its neighbours, not a trillion times farther than a gross outlier."""
    rng = np.random.RandomState(5)
    bank = np.vstack([np.zeros((300, 4)), rng.randn(200, 4)]).astype(np.float32)
    cfg = scoring.ScoreConfig()
    scoring.fit_knn({"features": bank}, cfg, seed=0)
    assert cfg.knn_own.min() >= scoring.OWN_DISTANCE_FLOOR * np.median(cfg.knn_own[300:]) * (1 - 1e-6)
    _, local = scoring.knn_terms(np.array([[0.05] * 4, [8.0] * 4], dtype=np.float32), cfg)
    assert local[0] < 100 * np.median(scoring.knn_terms(bank[300:], cfg)[1])
    assert local[1] > 5 * np.median(scoring.knn_terms(bank[300:], cfg)[1])
    # no spread at all (constant data): the ratio is the distance itself
    const = np.ones((20, 4), dtype=np.float32)
    np.testing.assert_array_equal(scoring.own_distances(const), np.ones(20, dtype=np.float32))
