"""Data-parallel training across processes, GPUs and nodes.

Launch with torchrun; every process loads the same data and trains on its own share of each
epoch. The networks being trained are wrapped in DistributedDataParallel, which averages
gradients over the processes during every backward pass (NCCL on GPUs, gloo on CPU) and
broadcasts rank 0's buffers; after every epoch the trainer broadcasts them once more (batch-norm
statistics of image networks follow each rank's own batches), so all replicas hold identical
weights (checked at the end by comparing a digest of every tensor). Rank 0 writes the model::

    torchrun --nproc_per_node=4 -m gananomaly.distributed --input X.npy --output model/
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
        --nproc_per_node=8 -m gananomaly.distributed --input X.npy --output model/

The global batch is ``world_size x batch_size``; the epoch count means passes over the
whole data set, as in a single process.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["main", "weights_digest"]


def weights_digest(detector) -> str:
    """SHA-256 over every network tensor: equal on every rank when replicas are in sync."""
    h = hashlib.sha256()
    for net in (detector.generator_, detector.discriminator_, detector.encoder_):
        for key, value in sorted(net.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    from gananomaly._args import epochs_arg, positive_int_arg, seed_arg
    from gananomaly.data import read_numeric
    from gananomaly.estimator import GANAnomalyDetector
    from gananomaly.model_dir import check_target

    parser = argparse.ArgumentParser(prog="python -m gananomaly.distributed")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--epochs", type=epochs_arg, default="auto", help='"auto" or a positive int')
    parser.add_argument("--batch-size", type=positive_int_arg, default=64)
    parser.add_argument("--seed", type=seed_arg, default=0)
    parser.add_argument("--objective", default="auto", choices=["auto", "gan", "wgan-gp"])
    parser.add_argument("--encoder", default="izif", choices=["izif", "bigan"])
    parser.add_argument("--backend", default=None, help="nccl or gloo (default: nccl with CUDA, else gloo)")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        print("run this module under torchrun (see its docstring)", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    backend = args.backend or ("nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    try:  # everything a rank can refuse, before any rank trains (torchrun then stops the others)
        X = read_numeric(args.input)
        if len(X) == 0:
            raise ValueError(f"--input {args.input!r} has no rows")
        det = GANAnomalyDetector(
            epochs=args.epochs, batch_size=args.batch_size, random_state=args.seed, objective=args.objective,
            encoder=args.encoder, device=f"cuda:{local_rank}" if cuda else "cpu",
        )
        det._validate_params()
        if int(os.environ["RANK"]) == 0:
            check_target(Path(args.output))  # the save comes after the training
    except (ValueError, TypeError, OSError) as exc:
        print(f"gananomaly.distributed (rank {os.environ['RANK']}): error: {exc}", file=sys.stderr)
        return 2
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    try:
        det.fit(X)
        digest = weights_digest(det)
        digests: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"replicas diverged: weight digests {digests}")
        if dist.get_rank() == 0:
            det.save(args.output)
            print(f"trained on {dist.get_world_size()} processes ({backend}, DistributedDataParallel); "
                  f"weights {digest[:12]} on every rank; "
                  f"saved to {args.output}")
        dist.barrier()  # every rank waits for rank 0's save
        # DistributedDataParallel's reducer stays alive through hooks on the parameters of
        # the trained networks; freed only at interpreter exit, after the process group is
        # gone, it could abort the process ("terminate called without an active exception").
        # Free the networks, and with them the reducer, while the group exists.
        del det
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
