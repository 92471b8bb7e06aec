"""A resumed epoch keeps its order when several ranks shard the data: accelerate's real sharding
(`prepare_data_loader` for rank 0 of 2) and its real `skip_first_batches`, the epoch then set the way the
Trainer sets it (transformers' `_run_epoch`: the loader's `set_epoch`, then the shard wrapper's batch
sampler). Without `epoch_reaches_sampler` (accelerate 1.x), the rest of the epoch came in epoch 0's
order. One process stands for rank 0 of two: what is tested is the chain of wrappers a rank's loader
is built from, which is the same in every rank; the two-rank training runs are tests/test_ranks.py."""

from accelerate import PartialState
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from torch.utils.data import DataLoader

from llava.train.sampler import ModalityLengthGroupedSampler
from llava.train.trainer import epoch_reaches_sampler

SAMPLES = list(range(16))


def set_epoch_as_the_trainer_does(loader, epoch):
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    underlying = getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None)
    if hasattr(underlying, "set_epoch"):
        underlying.set_epoch(epoch)


def rank0_loader(sampler):
    PartialState()
    return prepare_data_loader(
        DataLoader(SAMPLES, batch_size=2, sampler=sampler), num_processes=2, process_index=0, put_on_device=False
    )


def test_the_rest_of_a_resumed_epoch_is_drawn_in_that_epochs_order():
    sampler = ModalityLengthGroupedSampler([1] * 16, None, batch_size=2, world_size=2)
    loader = rank0_loader(sampler)
    set_epoch_as_the_trainer_does(loader, 1)
    epoch_1 = [batch.tolist() for batch in loader]
    assert epoch_1 != rank0_batches_of_epoch(sampler, 0)  # the orders differ, so the test can tell them apart

    sampler.set_epoch(0)  # a restarted process starts at epoch 0
    resumed = epoch_reaches_sampler(skip_first_batches(loader, 1), sampler)
    set_epoch_as_the_trainer_does(resumed, 1)
    assert [batch.tolist() for batch in resumed] == epoch_1[1:]


def rank0_batches_of_epoch(sampler, epoch):
    """Rank 0's batches of `epoch` through a fresh loader over the same sampler settings."""
    fresh = ModalityLengthGroupedSampler(sampler.lengths, sampler.has_media, batch_size=2, world_size=2)
    fresh.set_epoch(epoch)
    return [batch.tolist() for batch in rank0_loader(fresh)]
