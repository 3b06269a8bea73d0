"""Turn trained networks into anomaly scores.

Two raw signals per sample, both residuals (higher = more anomalous):

* ``reconstruction``: ``mean((x - G(z))**2)`` over features, with ``z = E(x)``, optionally
  refined by a few batched gradient steps on ``z`` (AnoGAN's latent search, every row at
  once). For images it is read from a residual *map* instead (see :func:`image_maps`): the
  residual in two bands (fine detail and the whole residual), each divided by its mean at
  that pixel over the training images, pooled over small windows; the score is the mean of
  the highest windows. A defect covering 1 % of an image moves this score; a mean over every
  pixel would drown it.
* ``discriminator``: ``mean((f(x) - f(G(z)))**2)`` where ``f`` is the last hidden layer of
  the discriminator (feature matching, never the output logit). For a BiGAN
  discriminator ``f`` sees the pair ``(., z)``.

and a third that reads the code itself:

* ``latent``: the squared Mahalanobis distance of ``z`` from the codes of the training
  data (Ledoit-Wolf covariance). The residuals only see how far ``x`` lies *off* the
  generator's manifold; a sample *on* the manifold but in a region normal data never
  reaches (an extrapolated code) is caught here.

and a fourth that reads D's learned features:

* ``knn``: the mean distance of ``f(x)`` to the features of its ``k`` nearest training rows
  (a non-parametric density in the space D learned; several modes need no Gaussian), mixed
  half and half (each standardised) with that distance divided by those rows' own mean
  distance to their ``k`` nearest (a local density, as LOF's: a row just off a tight cluster
  is close in absolute terms, yet far for that cluster).

Each is standardised with a robust location/scale measured once on the training data
(median and interquartile range), so the combination weight means the same thing on every
data set and no statistic ever depends on the batch being scored.

The module is longer than most (over 400 lines) for one reason: every component follows the
same blocking rules that give a row the same bits alone or in any batch (fixed block
shapes, padding), and the k-NN search with its prepared bank is written to those rules;
split across modules, the rules and the code that relies on them would drift apart.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ScoreConfig", "pad_rows", "raw_scores", "residual_maps", "contributions", "image_maps", "fit_map_scale",
           "frozen", "robust_stats", "threshold_at", "standardise", "combine", "fit_latent", "fit_knn",
           "knn_terms", "own_distances", "stat_names", "KNN_LOCAL_SHARE",
           "COMPONENTS", "KNN_NEIGHBOURS", "KNN_BANK_ROWS", "TRAIN_SCORE_ROWS", "MAP_WINDOW", "MAP_TOP_FRACTION"]

COMPONENTS = ("discriminator", "reconstruction", "latent", "knn")
# ``knn``: mean distance to this many nearest training rows in D's feature space...
KNN_NEIGHBOURS = 5
# ...among at most this many training rows (a seeded sample of them; stored with the model).
KNN_BANK_ROWS = 2048
# The knn component is this share of the local ratio (standardised) and the rest the
# distance (standardised): a global density alone calls rows just off a tight cluster dense.
KNN_LOCAL_SHARE = 0.5
# A bank row's own k-NN distance is floored at this fraction of the bank's median positive one:
# a row a hair off a value repeated in training is then far, not infinitely far.
OWN_DISTANCE_FLOOR = 1e-2
# Training rows whose standardised components are kept with the model (a seeded sample):
# thresholds are read from them after the fit.
TRAIN_SCORE_ROWS = 10_000
# Image reconstruction score: the residual map is averaged over windows of this side...
MAP_WINDOW = 4
# ...and the score is the mean of this fraction of the windows (the highest ones).
MAP_TOP_FRACTION = 0.02
# A bank row this close (squared, relative to the row's squared norm) is at distance zero
# (the row itself, or a duplicate): float32 rounding of |a|^2 + |b|^2 - 2ab leaves about 1e-7
# of |a|^2 where a == b.
_SELF_TOLERANCE = 1e-5

# Rows are fed to the networks in blocks padded to a multiple of this many rows. CPU
# matrix kernels pick their blocking from the number of rows; padding makes a row's score
# bit-identical whether it is scored alone or inside any batch.
ROW_BLOCK = 64
# The latent term runs in padded blocks of this many rows (a fixed size for the same
# reason; larger than ROW_BLOCK to spread the per-call cost over more rows). The k-NN term
# keeps ROW_BLOCK: a block's distances to the whole bank then stay in cache.
_LATENT_BLOCK = 512
# The nearest bank rows are searched among groups of this many bank rows (see smallest).
_KNN_GROUP = 16


@dataclass
class ScoreConfig:
    joint: bool = False
    n_refine_steps: int = 0
    refine_lr: float = 0.05
    kappa: float = 1.0
    batch_size: int = 8192
    amp_dtype: torch.dtype | None = None
    context_dim: int = 0
    loc: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    # Location of the training codes and the transposed Cholesky factor ``L.T`` of their
    # precision matrix (``precision = L @ L.T``), float64, set by fit_latent.
    latent_loc: np.ndarray | None = None
    latent_factor: np.ndarray | None = None
    # D's features of (a sample of) the training rows, float32, set by fit_knn.
    knn_bank: np.ndarray | None = None
    knn_k: int = KNN_NEIGHBOURS
    # Each bank row's mean distance to its knn_k nearest other bank rows (own_distances),
    # float32, set by fit_knn; None in models saved before the local term (their knn term
    # is the distance alone).
    knn_own: np.ndarray | None = None
    # Images: mean of each residual band at each pixel over the training images, float32,
    # shape (2, size, size), set by fit_map_scale.
    map_scale: np.ndarray | None = None
    # The bank prepared for scoring (_Bank), with the arrays it was built from;
    # rebuilt when knn_bank or knn_own is replaced, never pickled or compared.
    _knn_cache: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_knn_cache"] = None
        return state


@contextlib.contextmanager
def frozen(*nets: nn.Module):
    """No parameter of ``nets`` requires grad inside the block (gradients then flow to
    inputs or codes only); every flag is restored afterwards, whatever happens."""
    params = [p for net in nets for p in net.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def pad_rows(x: torch.Tensor, block: int = ROW_BLOCK) -> torch.Tensor:
    """``x`` with zero rows appended up to a multiple of ``block`` rows (the fixed block shape
    that gives a row the same bits alone or in any batch)."""
    n = x.shape[0]
    m = -(-n // block) * block
    if m == n:
        return x
    return torch.cat([x, x.new_zeros((m - n,) + tuple(x.shape[1:]))])


def _residuals(gen: nn.Module, disc: nn.Module, x: torch.Tensor, z: torch.Tensor, joint: bool,
               with_features: bool = False, map_cfg: ScoreConfig | None = None):
    """Reconstruction and discriminator-feature residuals per row (and D's features of
    ``x``). With ``map_cfg`` holding image map statistics, the reconstruction residual is
    the pooled map score instead of the mean over pixels."""
    x_hat = gen(z).float()
    if map_cfg is not None and map_cfg.map_scale is not None:
        rec = _pooled_score(image_maps(x, x_hat, map_cfg))
    else:
        rec = (x - x_hat).flatten(1).pow(2).mean(1)
    zz = z if joint else None
    fx = disc.features(x, zz).float()
    feat = (fx - disc.features(x_hat, zz).float()).flatten(1).pow(2).mean(1)
    if with_features:
        return rec, feat, fx.flatten(1)
    return rec, feat


def _bands(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared residual of images in two bands, ``(n, 2, H, W)``, mean over channels: its
    fine detail (the residual minus its 3x3 local mean) and the whole residual. Noise and
    thin lines live in the first, missing or foreign structure in the second."""
    r = (x - x_hat).float()
    local = F.avg_pool2d(F.pad(r, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return torch.stack([(r - local).pow(2).mean(1), r.pow(2).mean(1)], dim=1)


def image_maps(x: torch.Tensor, x_hat: torch.Tensor, cfg: ScoreConfig) -> torch.Tensor:
    """The per-pixel anomaly map of images ``(n, H, W)``: both residual bands, each divided
    by its training mean at that pixel, summed (a typical training pixel is about 2)."""
    scale = torch.from_numpy(cfg.map_scale).to(x.device)
    return (_bands(x, x_hat) / scale).sum(1)


def _pooled_score(maps: torch.Tensor) -> torch.Tensor:
    """Mean of the highest :data:`MAP_TOP_FRACTION` of the ``MAP_WINDOW``-averaged map."""
    k = min(MAP_WINDOW, maps.shape[-1])
    windows = F.avg_pool2d(maps[:, None], k, stride=1).flatten(1)
    top = max(1, int(round(MAP_TOP_FRACTION * windows.shape[1])))
    return windows.topk(top, dim=1).values.mean(1)


def fit_map_scale(gen: nn.Module, enc: nn.Module, X: torch.Tensor, device: torch.device,
                  batch_size: int) -> np.ndarray:
    """The mean of each residual band at each pixel over the images ``X`` (the training
    images), accumulated batch by batch in float64, for ``ScoreConfig.map_scale``."""
    for net in (gen, enc):
        net.eval()
    total = None
    with torch.inference_mode():
        for start in range(0, X.shape[0], batch_size):
            chunk = X[start : start + batch_size]
            x = pad_rows(chunk).to(device)
            bands = _bands(x, gen(enc(x)).float())[: chunk.shape[0]].double().sum(0).cpu()
            total = bands if total is None else total + bands
    mean = (total / max(X.shape[0], 1)).numpy()
    # A pixel the generator always reproduces exactly would divide by zero: floor each band
    # at a small fraction of its mean over the image.
    floor = np.maximum(1e-3 * mean.mean(axis=(1, 2), keepdims=True), 1e-12)
    return np.ascontiguousarray(np.maximum(mean, floor), dtype=np.float32)


def _normal(t):
    """``t`` as a normal tensor: a copy when it was made under ``torch.inference_mode()``
    (autograd must not record inference tensors)."""
    return t.clone() if isinstance(t, torch.Tensor) and t.is_inference() else t


def _gradients_allowed(fn):
    """Run ``fn``, which needs autograd, even inside a caller's ``torch.inference_mode()``
    (serving code often scores in it): inference mode off, inference-tensor arguments copied."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False):
            return fn(*[_normal(a) for a in args], **kwargs)
    return wrapper


def _refine(gen, disc, x, z0, cfg: ScoreConfig) -> torch.Tensor:
    """Batched latent search: Adam on every row's ``z`` at once, minimising that row's own
    residual. Each row's loss depends only on its own ``z`` and Adam's update is
    element-wise, so rows never influence each other."""
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.refine_lr)
    for _ in range(cfg.n_refine_steps):
        rec, feat = _residuals(gen, disc, x, z, cfg.joint)
        loss = (rec + cfg.kappa * feat).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.context_dim:
            z.grad[:, -cfg.context_dim:] = 0  # the context is known: only the latent part moves
        opt.step()
    return z.detach()


def raw_scores(
    gen: nn.Module,
    disc: nn.Module,
    enc: nn.Module,
    X: torch.Tensor,
    device: torch.device,
    cfg: ScoreConfig,
) -> dict[str, np.ndarray]:
    """Unstandardised component scores for ``X`` (a CPU tensor), computed in batches.

    Before :func:`fit_latent` has stored the statistics of the training codes, ``latent``
    is absent and ``codes`` (the latent part of every row's ``z``, float64) is returned
    instead, for :func:`fit_latent`.

    Table rows on the CPU are split between up to ``torch.get_num_threads()`` worker
    threads, each scoring its rows with one intra-op thread (see :func:`_in_row_threads`).
    """
    for net in (gen, disc, enc):
        net.eval()  # dropout and batch-norm statistics are never live at scoring time
    if device.type == "cpu" and X.dim() == 2:
        if cfg.knn_bank is not None:
            _prepare_bank(cfg)  # once, before worker threads share it
        # parameters frozen once around all workers (the flags are shared: workers freezing
        # and restoring them each would race), never by a worker
        with frozen(gen, disc, enc) if cfg.n_refine_steps > 0 else contextlib.nullcontext():
            parts = _in_row_threads(lambda piece: _raw_scores(gen, disc, enc, piece, device, cfg, freeze=False), X)
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return _raw_scores(gen, disc, enc, X, device, cfg)


# Table rows per worker thread below which splitting rows between threads does not pay.
SPLIT_MIN_ROWS = 4096


def _in_row_threads(fn, X):
    """``fn`` of contiguous row ranges of ``X`` (whole padding blocks), on up to
    ``torch.get_num_threads()`` worker threads, each op on one intra-op thread; the list of
    results in row order.

    Table networks are small matrix products: split over intra-op threads they wait on each
    other at every op, and collapse when a core is busy with another process. Rows split
    between threads never wait on each other, so a busy core slows only its own share. Every
    row is computed by the same one-thread kernels on the same block shapes whichever thread
    takes it and however many rows come with it: table scores are those of one-thread
    scoring, bit for bit, on any thread count."""
    from concurrent.futures import ThreadPoolExecutor

    with _one_intra_op_thread() as threads:
        workers = max(1, min(threads, X.shape[0] // SPLIT_MIN_ROWS))
        step = max(ROW_BLOCK, -(-X.shape[0] // (workers * ROW_BLOCK)) * ROW_BLOCK)
        pieces = [X[start : start + step] for start in range(0, X.shape[0], step)] or [X]
        if len(pieces) == 1:
            return [fn(pieces[0])]
        with ThreadPoolExecutor(max_workers=len(pieces)) as pool:
            return list(pool.map(fn, pieces))


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"users": 0, "saved": 1}


@contextlib.contextmanager
def _one_intra_op_thread():
    """torch's (process-wide) intra-op thread count set to 1 inside the block; yields the
    count the caller had. Calls from several threads at once share the setting: the first
    saves the count, the last restores it, so concurrent scoring (a multi-threaded server)
    never leaves the process on the wrong count. A call that starts while another runs
    gets 1 (its rows run on one worker)."""
    with _THREADS_LOCK:
        if _THREADS_STATE["users"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
            threads = _THREADS_STATE["saved"]
        else:
            threads = 1
        _THREADS_STATE["users"] += 1
    try:
        yield threads
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["users"] -= 1
            if _THREADS_STATE["users"] == 0:
                torch.set_num_threads(_THREADS_STATE["saved"])


def _raw_scores(gen: nn.Module, disc: nn.Module, enc: nn.Module, X: torch.Tensor, device: torch.device,
                cfg: ScoreConfig, *, freeze: bool = True) -> dict[str, np.ndarray]:
    have_latent = cfg.latent_factor is not None
    have_knn = cfg.knn_bank is not None
    out = {name: np.empty(X.shape[0], dtype=np.float64) for name in ("discriminator", "reconstruction")}
    codes: list[np.ndarray] = []
    features: list[np.ndarray] = []
    if have_latent:
        out["latent"] = np.empty(X.shape[0], dtype=np.float64)
    if have_knn:
        out["knn"] = np.empty(X.shape[0], dtype=np.float64)
        if cfg.knn_own is not None:
            out["knn_local"] = np.empty(X.shape[0], dtype=np.float64)
    amp = (torch.autocast(device_type=device.type, dtype=cfg.amp_dtype)
           if cfg.amp_dtype is not None else contextlib.nullcontext())
    refine = cfg.n_refine_steps > 0
    with frozen(gen, disc, enc) if refine and freeze else contextlib.nullcontext():
        for start in range(0, X.shape[0], cfg.batch_size):
            chunk = X[start : start + cfg.batch_size]
            n = chunk.shape[0]
            x = pad_rows(chunk).to(device, non_blocking=True)
            with amp:
                if refine:
                    with torch.inference_mode(False):  # the search needs gradients, whatever the caller's mode
                        x = _normal(x)
                        with torch.no_grad():
                            z = enc(x).float()
                        with torch.enable_grad():
                            z = _refine(gen, disc, x, z, cfg)
                        with torch.no_grad():
                            rec, feat, fx = _residuals(gen, disc, x, z, cfg.joint, True, cfg)
                else:
                    with torch.inference_mode():
                        z = enc(x).float()
                        rec, feat, fx = _residuals(gen, disc, x, z, cfg.joint, True, cfg)
            out["reconstruction"][start : start + n] = rec[:n].double().cpu().numpy()
            out["discriminator"][start : start + n] = feat[:n].double().cpu().numpy()
            # The latent part of z (a conditional model's z ends with the known context).
            code = z[:n, : z.shape[1] - cfg.context_dim].detach()
            if have_latent:
                out["latent"][start : start + n] = latent_distance(code, cfg)
            else:
                codes.append(code.double().cpu().numpy())
            fx = fx[:n].detach().float().cpu().contiguous()
            if have_knn:
                dist, local = _knn_rows(fx, cfg)
                out["knn"][start : start + n] = dist.numpy()
                if local is not None:
                    out["knn_local"][start : start + n] = local.numpy()
            else:
                features.append(fx.numpy())
    if not have_latent:
        out["codes"] = np.concatenate(codes) if codes else np.empty((0, 0))
    if not have_knn:
        out["features"] = np.concatenate(features) if features else np.empty((0, 0), dtype=np.float32)
    return out


@_gradients_allowed
def residual_maps(gen: nn.Module, disc: nn.Module, enc: nn.Module, X: torch.Tensor, device: torch.device,
                  cfg: ScoreConfig, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-input residual maps of ``X`` (float64, on the networks' grid): the squared
    reconstruction residual (for images with map statistics: :func:`image_maps`, the map
    the reconstruction score pools), and the magnitude of the gradient of the discriminator-feature
    residual with respect to each input (the feature residual brought back to the input).
    Images are averaged over channels; a table's context columns are dropped. Rows are
    padded into blocks as for scoring and never influence each other."""
    for net in (gen, disc, enc):
        net.eval()
    n_feat = X.shape[1] - cfg.context_dim if X.dim() == 2 else None
    rec_maps, disc_maps = [], []
    with frozen(gen, disc, enc):
        for start in range(0, X.shape[0], batch_size):
            x = pad_rows(X[start : start + batch_size]).to(device)
            n = min(batch_size, X.shape[0] - start)
            with torch.no_grad():
                z = enc(x).float()
                x_hat = gen(z).float()
            x_in = x.clone().requires_grad_(True)
            zz = z if cfg.joint else None
            with torch.enable_grad():
                feat = (disc.features(x_in, zz).float() - disc.features(x_hat, zz).float()).pow(2).sum()
                (grad,) = torch.autograd.grad(feat, x_in)
            rec = (x - x_hat).pow(2)
            if rec.dim() == 4:  # mean over channels
                rec = image_maps(x, x_hat, cfg) if cfg.map_scale is not None else rec.mean(1)
                grad = grad.abs().mean(1)
            else:  # drop the context columns
                rec, grad = rec[:, :n_feat], grad[:, :n_feat].abs()
            rec_maps.append(rec[:n].detach().double().cpu())
            disc_maps.append(grad[:n].detach().double().cpu())
    return torch.cat(rec_maps).numpy(), torch.cat(disc_maps).numpy()


@_gradients_allowed
def contributions(gen: nn.Module, disc: nn.Module, enc: nn.Module, X: torch.Tensor, device: torch.device,
                  cfg: ScoreConfig, weights: tuple[float, float, float], batch_size: int = 4096) -> np.ndarray:
    """Per-feature contributions (float64, ``(n, n_features)``) of standardised table rows
    ``X`` to their combined anomaly score: gradient times input, ``x_j * d combined / d x_j``,
    with the training mean (0 in standardised units) as the reference. For a quadratic
    score such as the latent Mahalanobis term the contributions add up to twice the score
    exactly; for the networks they are the first-order share of each feature. Context
    columns are dropped. ``weights`` = ``(weight, latent_weight, knn_weight)``."""
    for net in (gen, disc, enc):
        net.eval()
    n_feat = X.shape[1] - cfg.context_dim
    loc = torch.from_numpy(cfg.latent_loc).to(device)
    factor = torch.from_numpy(cfg.latent_factor).to(device)
    bank = torch.from_numpy(cfg.knn_bank).to(device)
    bank_sq = bank.pow(2).sum(1)
    own = None if cfg.knn_own is None else torch.from_numpy(cfg.knn_own).to(device)
    out = []
    with frozen(gen, disc, enc), torch.enable_grad():
        for start in range(0, X.shape[0], batch_size):
            n = min(batch_size, X.shape[0] - start)
            # padded to whole blocks, as scoring: a row's contributions then have the same bits alone
            # or in any batch (ranks of near-tied columns never flip with the batch)
            x = pad_rows(X[start : start + batch_size]).to(device).clone().requires_grad_(True)
            z = enc(x).float()
            x_hat = gen(z).float()
            zz = z if cfg.joint else None
            fx = disc.features(x, zz).float().flatten(1)
            raw = {"reconstruction": (x - x_hat)[:, :n_feat].pow(2).mean(1),
                   "discriminator": (fx - disc.features(x_hat, zz).float().flatten(1)).pow(2).mean(1)}
            code = z[:, : z.shape[1] - cfg.context_dim].double()
            raw["latent"] = ((code - loc) @ factor.T).pow(2).sum(1)
            raw["knn"], local = _knn_differentiable(fx, bank, bank_sq, cfg.knn_k, own)
            if local is not None:
                raw["knn_local"] = local
            std = standardise({name: value.double() for name, value in raw.items()}, cfg)
            (grad,) = torch.autograd.grad(combine(std, *weights).sum(), x)
            out.append((grad * x)[:n, :n_feat].detach().double().cpu())
    return torch.cat(out).numpy()


def _knn_differentiable(fx: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, knn_k: int,
                        own: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The k-NN terms as :func:`_knn_block` defines them (the same ``k``, the same bank row at
    zero distance left out), differentiable: the gradient of a row's distance to itself
    points wherever rounding puts it, so keeping that row made the explanations of training
    rows and their duplicates noise. ``(distance, local ratio or None)``."""
    m = bank.shape[0]
    k = max(1, min(knn_k, m - 1))
    fx_sq = fx.pow(2).sum(1, keepdim=True)
    d2 = (fx_sq + bank_sq[None, :] - 2.0 * fx @ bank.T).clamp_min(0.0)
    found = d2.topk(min(k + 1, m), dim=1, largest=False)
    near, idx = found.values, found.indices
    dist = near.clamp_min(1e-12).sqrt()
    if near.shape[1] > k:  # else a one-row bank
        keep_own = near[:, 0].detach() <= _SELF_TOLERANCE * (fx_sq[:, 0].detach() + 1e-12)
        dist = torch.where(keep_own[:, None], dist[:, 1 : k + 1], dist[:, :k])
        idx = torch.where(keep_own[:, None], idx[:, 1 : k + 1], idx[:, :k])
    mean = dist.mean(1)
    return mean, None if own is None else mean / own[idx].mean(1)


@dataclass(frozen=True)
class _Bank:
    """The k-NN bank prepared for scoring: transposed, with its squared norms, padded to a
    multiple of :data:`_KNN_GROUP` rows whose squared norm is infinite (never near), and the
    bank rows' own k-NN distances (padded likewise) when the model has them."""

    rows_t: torch.Tensor  # (features, padded rows) float32
    sq: torch.Tensor  # (padded rows,)
    n_rows: int
    own: torch.Tensor | None  # (padded rows,) float32


def _prepare_bank(cfg: ScoreConfig) -> _Bank:
    """The prepared bank of ``cfg``, built once per bank array and kept in ``cfg``."""
    cached = cfg._knn_cache
    if cached is not None and cached[0] is cfg.knn_bank and cached[1] is cfg.knn_own:
        return cached[2]
    raw = torch.from_numpy(np.ascontiguousarray(cfg.knn_bank, dtype=np.float32))
    pad = -raw.shape[0] % _KNN_GROUP
    own = None
    if cfg.knn_own is not None:
        own = torch.from_numpy(np.ascontiguousarray(cfg.knn_own, dtype=np.float32))
        own = torch.cat([own, own.new_ones(pad)])
    bank = _Bank(rows_t=torch.cat([raw, raw.new_zeros((pad, raw.shape[1]))]).T.contiguous(),
                 sq=torch.cat([raw.pow(2).sum(1), raw.new_full((pad,), float("inf"))]), n_rows=raw.shape[0], own=own)
    cfg._knn_cache = (cfg.knn_bank, cfg.knn_own, bank)
    return bank


def smallest(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest entries of each row, ascending, and their columns.

    Columns ``j`` with the same ``j mod (m / _KNN_GROUP)`` form a group. The ``k`` smallest
    entries lie in the ``k`` groups with the smallest minima (any other group's minimum
    exceeds ``k`` of them), so an element-wise minimum over ``_KNN_GROUP`` contiguous
    slices and two small top-k's replace a top-k over every column: exact, ties included.
    """
    n, m = values.shape
    if m % _KNN_GROUP or m < 4 * k * _KNN_GROUP:
        found = values.topk(k, dim=1, largest=False)
        return found.values, found.indices
    width = m // _KNN_GROUP
    groups = values.view(n, _KNN_GROUP, width)
    best = groups.amin(1).topk(k, dim=1, largest=False).indices
    candidates = groups.gather(2, best[:, None, :].expand(n, _KNN_GROUP, k)).view(n, _KNN_GROUP * k)
    found = candidates.topk(k, dim=1, largest=False)
    # candidate t is slice t // k of group best[:, t % k]: column (t // k) * width + that group
    columns = (found.indices // k) * width + best.gather(1, found.indices % k)
    return found.values, columns


def _knn_block(rows: torch.Tensor, bank: _Bank, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean distance of each of ``ROW_BLOCK`` rows to its ``k`` nearest bank rows, leaving
    out one bank row at (numerically) zero distance: the row itself, for a training row, so
    that scoring it again gives the leave-one-out value its statistics were fitted with
    (duplicates of it still count); and, when the bank has its rows' own distances, that
    distance divided by the mean own distance of those ``k`` bank rows (the local ratio).
    ``|b|^2 - 2 r.b`` comes from one matrix product per fixed-size block, so a row gets the
    same bits in any batch; the row's own ``|r|^2``, the same for every bank row, is added
    to the nearest ones only."""
    m = bank.n_rows
    rows_sq = rows.pow(2).sum(1, keepdim=True)
    partial = torch.addmm(bank.sq, rows, bank.rows_t, alpha=-2.0)
    near, idx = smallest(partial, min(k + 1, m))
    near = (near + rows_sq).clamp_min_(0.0)
    if near.shape[1] > k:  # else a one-row bank
        # Below the rounding noise of the expanded product a distance is not resolved: it is
        # zero, so a duplicate of a bank row is at distance 0 from it wherever the row sits in
        # a block (its features can differ by one unit in the last place between positions).
        near = near.masked_fill_(near <= _SELF_TOLERANCE * (rows_sq + 1e-12), 0.0)
        keep_own = (near[:, 0] == 0.0)[:, None]
        near = torch.where(keep_own, near[:, 1 : k + 1], near[:, :k])
        idx = torch.where(keep_own, idx[:, 1 : k + 1], idx[:, :k])
    dist = near.sqrt_().mean(1)
    return dist, None if bank.own is None else dist / bank.own[idx].mean(1)


def _knn_rows(features: torch.Tensor, cfg: ScoreConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`knn_terms` of a float32 CPU tensor, float32."""
    bank = _prepare_bank(cfg)
    k = max(1, min(cfg.knn_k, bank.n_rows - 1))
    rows = pad_rows(features)
    dist = torch.empty(rows.shape[0], dtype=torch.float32)
    local = None if bank.own is None else torch.empty(rows.shape[0], dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, rows.shape[0], ROW_BLOCK):
            d, r = _knn_block(rows[start : start + ROW_BLOCK], bank, k)
            dist[start : start + ROW_BLOCK] = d
            if local is not None:
                local[start : start + ROW_BLOCK] = r
    n = features.shape[0]
    return dist[:n], None if local is None else local[:n]


def knn_terms(features: np.ndarray, cfg: ScoreConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """``(knn, knn_local)`` (float64) of each row's discriminator features: the mean distance
    to the ``cfg.knn_k`` nearest training rows' features (a non-parametric density in the
    space D learned to tell real data from generated data, which handles several modes where
    one Gaussian cannot), and that distance divided by the mean of the same distance of those
    training rows (a local density: a row just off a tight cluster is far for that cluster,
    though close in absolute terms); None when ``cfg`` has no ``knn_own``."""
    rows = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    _prepare_bank(cfg)
    parts = _in_row_threads(lambda piece: _knn_rows(piece, cfg), rows)  # the bits of table scoring
    dist = torch.cat([p[0] for p in parts]).double().numpy()
    if cfg.knn_own is None:
        return dist, None
    return dist, torch.cat([p[1] for p in parts]).double().numpy()


def knn_distance(features: np.ndarray, cfg: ScoreConfig) -> np.ndarray:
    """The ``knn`` term of :func:`knn_terms` alone."""
    return knn_terms(features, cfg)[0]


def fit_knn(raw: dict[str, np.ndarray], cfg: ScoreConfig, seed: int) -> None:
    """Keep (a seeded sample of at most :data:`KNN_BANK_ROWS`) training rows' features as
    the k-NN bank in ``cfg`` with each bank row's own k-NN distance among the others, and
    replace ``raw["features"]`` by the training rows' ``knn`` and ``knn_local`` terms (each
    row leaving itself out, as scoring it again does)."""
    features = raw.pop("features")
    n = features.shape[0]
    if n > KNN_BANK_ROWS:
        idx = np.sort(np.random.RandomState(seed).choice(n, KNN_BANK_ROWS, replace=False))
    else:
        idx = np.arange(n)
    cfg.knn_bank = np.ascontiguousarray(features[idx], dtype=np.float32)
    cfg.knn_own = own_distances(cfg.knn_bank, cfg.knn_k)
    raw["knn"], raw["knn_local"] = knn_terms(features, cfg)


def own_distances(bank: np.ndarray, knn_k: int = KNN_NEIGHBOURS) -> np.ndarray:
    """Each bank row's mean distance to its ``knn_k`` nearest other bank rows (float32), floored
    at :data:`OWN_DISTANCE_FLOOR` of the median of the positive ones: a row among ``knn_k``
    duplicates has distance 0, and discrete or stuck-at-one-value data can make most of them 0,
    so the floor is taken where the bank has spread (1 where it has none)."""
    own = knn_distance(bank, ScoreConfig(knn_bank=bank, knn_k=knn_k))
    positive = own[own > 0]
    floor = OWN_DISTANCE_FLOOR * float(np.median(positive)) if positive.size else 1.0
    return np.ascontiguousarray(np.maximum(own, max(floor, 1e-30)), dtype=np.float32)


def latent_distance(codes: torch.Tensor, cfg: ScoreConfig) -> np.ndarray:
    """Squared Mahalanobis distance (float64) of each row of ``codes`` from the training
    codes: ``|(z - loc) @ L|^2`` with ``precision = L @ L.T``.

    Computed in float64, one matrix product per fixed-size block of rows (the last one
    padded), so a row gets the same bits in any batch.
    """
    d = codes.detach().cpu().double() - torch.from_numpy(cfg.latent_loc)
    factor_t = torch.from_numpy(cfg.latent_factor).T
    padded = pad_rows(d, _LATENT_BLOCK)
    out = torch.cat([(padded[start : start + _LATENT_BLOCK] @ factor_t).square_().sum(1)
                     for start in range(0, padded.shape[0], _LATENT_BLOCK)]) if d.shape[0] else d[:, 0]
    return out[: d.shape[0]].numpy()


def fit_latent(raw: dict[str, np.ndarray], cfg: ScoreConfig) -> None:
    """Fit the location and (Ledoit-Wolf shrunk) precision of the training codes in
    ``raw["codes"]`` into ``cfg``, and replace the codes by the ``latent`` scores."""
    from sklearn.covariance import LedoitWolf

    codes = raw.pop("codes")
    lw = LedoitWolf(assume_centered=False).fit(codes)
    cfg.latent_loc = np.ascontiguousarray(lw.location_, dtype=np.float64)
    cov = lw.covariance_
    k = cov.shape[0]
    # A ridge keeps the precision finite when the codes do not vary (constant data, a
    # collapsed encoder); codes are on the scale of the generator's N(0, I) prior.
    cov = cov + 1e-6 * max(float(np.trace(cov)) / k, 1.0) * np.eye(k)
    precision = np.linalg.inv(cov)
    precision = (precision + precision.T) / 2
    cfg.latent_factor = np.ascontiguousarray(np.linalg.cholesky(precision).T, dtype=np.float64)
    raw["latent"] = latent_distance(torch.from_numpy(codes), cfg)


# Residuals are computed in float32, whose rounding differs by a unit in the last place
# between kernel code paths. A spread below this fraction of the median residual is
# rounding noise, not signal, and must not be blown up into large standardised scores.
RELATIVE_SCALE_FLOOR = 1e-3


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """Median and interquartile range, with floors so the scale is never (near) zero."""
    loc = float(np.median(values))
    q25, q75 = np.percentile(values, [25, 75])
    scale = float(q75 - q25)
    floor = RELATIVE_SCALE_FLOOR * abs(loc)
    if not scale > floor:
        scale = float(np.std(values))
    if not scale > floor:
        scale = floor if floor > 0 else 1.0
    return loc, scale


def threshold_at(train_scores: np.ndarray, contamination) -> float:
    """The outlier threshold on ``score_samples``-like training scores (higher = more
    normal): Tukey's lower fence ``Q1 - 1.5 * IQR`` for ``"auto"``, else the
    ``contamination`` quantile."""
    if contamination == "auto":
        q1, q3 = np.percentile(train_scores, [25, 75])
        return float(q1 - 1.5 * (q3 - q1))
    return float(np.percentile(train_scores, 100.0 * contamination))


def stat_names(local: bool) -> tuple[str, ...]:
    """The raw terms that get a robust location/scale: :data:`COMPONENTS`, and ``knn_local``
    where the model has the local k-NN term (``local``)."""
    return (*COMPONENTS, "knn_local") if local else COMPONENTS


def standardise(raw: dict, cfg: ScoreConfig) -> dict:
    """Each component of ``raw`` (numpy arrays or tensors) minus its training location, over
    its training scale; ``knn`` mixes the standardised distance and, where the model has it,
    the standardised local ratio (:data:`KNN_LOCAL_SHARE`)."""
    std = {k: (raw[k] - cfg.loc[k]) / cfg.scale[k] for k in COMPONENTS}
    if cfg.knn_own is not None:  # the one switch of the local term, as in scoring
        local = (raw["knn_local"] - cfg.loc["knn_local"]) / cfg.scale["knn_local"]
        std["knn"] = (1.0 - KNN_LOCAL_SHARE) * std["knn"] + KNN_LOCAL_SHARE * local
    return std


def combine(std: dict[str, np.ndarray], weight: float, latent_weight: float = 0.0,
            knn_weight: float = 0.0) -> np.ndarray:
    """AnoGAN's weighting of the latent-space signal against the discriminator's, plus the
    k-NN density term:
    ``(1 - weight) * (reconstruction + latent_weight * latent) + weight * discriminator
    + knn_weight * knn``."""
    latent = std["reconstruction"] + latent_weight * std["latent"] if latent_weight else std["reconstruction"]
    out = (1.0 - weight) * latent + weight * std["discriminator"]
    return out + knn_weight * std["knn"] if knn_weight else out
