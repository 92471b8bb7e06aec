"""A batch collated in a DataLoader worker reaches the training process equal to one collated in it, its
small tensors carried as bytes in the queue's message (no shared-memory segment, no file descriptor
handshake each), its large ones still through torch's shared memory."""

import pickle
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from llava.data.dataset import DataCollatorForSupervisedDataset
from llava.data.worker_handoff import INLINE_MAX_BYTES, for_training_process


class Items(Dataset):
    """Items in the form LazySupervisedDataset returns: text, a clip's pixels on every third, a skip
    record on every fifth."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        if i % 5 == 4:
            return {"skipped": True, "index": i, "id": f"s{i}", "reason": "unreadable", "path": f"{i}.mp4"}
        n = 5 + i
        item = {"id": f"s{i}", "input_ids": torch.arange(n) + i, "labels": torch.arange(n) - i}
        if i % 3 == 0:
            item["pixel_values"] = torch.full((8, 3, 112, 112), float(i))  # 1.2 MB: above the inline limit
            item["modality"] = "video"
        return item


def collator():
    return DataCollatorForSupervisedDataset(SimpleNamespace(pad_token_id=0, eos_token_id=1))


def test_batches_from_workers_equal_batches_collated_here():
    items = Items()
    here = DataLoader(items, batch_size=4, collate_fn=collator())
    there = DataLoader(items, batch_size=4, collate_fn=collator(), num_workers=2)
    for expected, received in zip(here, there, strict=True):
        assert set(received) == set(expected)
        for key in ("input_ids", "attention_mask", "labels"):
            assert type(received[key]) is torch.Tensor
            assert torch.equal(received[key], expected[key])
            assert received[key].dtype == expected[key].dtype
            assert not received[key].is_shared()  # bytes in the message, not a shared-memory segment
        assert len(received["images"]) == len(expected["images"])
        for got, want in zip(received["images"], expected["images"]):
            assert torch.equal(got, want)
            assert got.is_shared()  # a clip's pixels keep torch's shared memory
        assert received["modalities"] == expected["modalities"]
        assert received["skipped"] == expected["skipped"]


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(12, dtype=torch.long).reshape(3, 4),
        torch.randn(5, 7).to(torch.bfloat16),
        torch.randn(6, 4).t(),  # not contiguous
        torch.zeros(0, 0, dtype=torch.long),  # the batch of a step whose samples were all skipped
        torch.tensor(3.5),
    ],
)
def test_a_small_tensor_round_trips_exactly(tensor):
    batch = for_training_process({"x": tensor, "nested": [{"y": tensor}], "text": "kept"})
    received = pickle.loads(pickle.dumps(batch))
    for got in (received["x"], received["nested"][0]["y"]):
        assert type(got) is torch.Tensor and got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(got, tensor)
    assert received["text"] == "kept"


def test_a_large_tensor_is_left_to_torch():
    large = torch.zeros(INLINE_MAX_BYTES // 4 + 1)
    assert for_training_process({"x": large})["x"] is large
