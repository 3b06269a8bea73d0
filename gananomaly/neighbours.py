"""k-nearest-neighbour distances of rows to a fixed bank, for the ``knn`` score.

Squared distances ``|r|^2 + |b|^2 - 2 r.b`` come from one float32 matrix product per block
of :data:`BLOCK_ROWS` rows, the last block padded to that size: CPU matrix kernels pick
their blocking from the shapes, so a fixed shape gives a row the same bits alone or in any
batch. The bank is prepared once (transposed, its squared norms computed) and the row's own
``|r|^2``, the same for every bank row, is added to the nearest ones only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Bank", "prepare_bank", "mean_distance", "smallest", "BLOCK_ROWS", "GROUP"]

# Rows per matrix product with the bank: a fixed shape, and a (rows x bank) matrix that
# stays in cache (larger blocks measured slower).
BLOCK_ROWS = 64
# The smallest entries of a row are searched among groups of this many columns.
GROUP = 16


@dataclass(frozen=True)
class Bank:
    """A bank prepared for searching, padded to a multiple of :data:`GROUP` rows whose
    squared norm is infinite (never among the nearest)."""

    rows_t: torch.Tensor  # (features, padded rows) float32
    sq: torch.Tensor  # (padded rows,) squared norms; inf on padding
    n_rows: int


def prepare_bank(bank: np.ndarray) -> Bank:
    """:class:`Bank` of the float32 feature rows ``bank``."""
    raw = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
    m, d = raw.shape
    pad = -m % GROUP
    sq = torch.cat([raw.pow(2).sum(1), raw.new_full((pad,), float("inf"))])
    rows_t = torch.cat([raw, raw.new_zeros((pad, d))]).T.contiguous()
    return Bank(rows_t=rows_t, sq=sq, n_rows=m)


def smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` smallest entries of each row, ascending.

    Columns ``j`` with the same ``j mod (m / GROUP)`` form a group. The ``k`` smallest
    entries lie in the ``k`` groups with the smallest minima (any other group's minimum
    exceeds ``k`` of them), so an element-wise minimum over :data:`GROUP` contiguous slices
    and two small top-k's replace a top-k over every column: exact, ties included.
    """
    n, m = values.shape
    if m % GROUP or m < 4 * k * GROUP:
        return values.topk(k, dim=1, largest=False).values
    groups = values.view(n, GROUP, m // GROUP)
    best = groups.amin(1).topk(k, dim=1, largest=False).indices
    candidates = groups.gather(2, best[:, None, :].expand(n, GROUP, k)).view(n, GROUP * k)
    return candidates.topk(k, dim=1, largest=False).values


def _block(rows: torch.Tensor, bank: Bank, k: int, self_tolerance: float) -> torch.Tensor:
    m = bank.n_rows
    rows_sq = rows.pow(2).sum(1, keepdim=True)
    partial = torch.addmm(bank.sq, rows, bank.rows_t, alpha=-2.0)  # |b|^2 - 2 r.b
    near = (smallest(partial, min(k + 1, m)) + rows_sq).clamp_min_(0.0)
    if near.shape[1] <= k:  # a one-row bank
        return near.sqrt().mean(1)
    own = near[:, 0] <= self_tolerance * (rows_sq[:, 0] + 1e-12)
    near = near.sqrt()
    return torch.where(own, near[:, 1 : k + 1].mean(1), near[:, :k].mean(1))


def mean_distance(rows: torch.Tensor, bank: Bank, k: int, self_tolerance: float) -> torch.Tensor:
    """Mean distance (float32) of each float32 row to its ``k`` nearest bank rows, leaving
    out one bank row at (numerically) zero distance, within ``self_tolerance`` of the row's
    squared norm: the row itself, for a training row."""
    k = max(1, min(k, bank.n_rows - 1))
    n = rows.shape[0]
    out = torch.empty(n, dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, n, BLOCK_ROWS):
            block = rows[start : start + BLOCK_ROWS]
            size = block.shape[0]
            if size < BLOCK_ROWS:
                block = torch.cat([block, block.new_zeros((BLOCK_ROWS - size, block.shape[1]))])
            out[start : start + size] = _block(block, bank, k, self_tolerance)[:size]
    return out
