"""The training order: every row once per epoch, batches of nearly equal length."""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from job.sampling import LengthBucketSampler


def _lengths(rows: int, seed: int = 0) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    # Like the demo's snippets in tokens: median about 26, from 3 to 80.
    return torch.empty(rows).log_normal_(3.25, 0.4, generator=generator).clamp(3, 80).int().tolist()


def _efficiency(order: list[int], lengths: list[int], batch: int) -> float:
    real = processed = 0
    for start in range(0, len(order), batch):
        sizes = [lengths[i] for i in order[start : start + batch]]
        real += sum(sizes)
        processed += max(sizes) * len(sizes)
    return real / processed


def test_every_row_once_per_epoch_and_a_short_batch_only_last() -> None:
    lengths = _lengths(1003)
    sampler = LengthBucketSampler(lengths, batch_size=16, bucket_batches=10)
    torch.manual_seed(1)
    order = list(sampler)
    assert sorted(order) == list(range(1003)) and len(sampler) == 1003
    batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    # Each full batch comes from one sorted bucket: its rows are in descending length.
    for batch in batches[:-1]:
        sizes = [lengths[i] for i in batch]
        assert sizes == sorted(sizes, reverse=True)
    assert len(batches[-1]) == 1003 % 16


def test_longest_batch_first() -> None:
    lengths = _lengths(800, seed=3)
    torch.manual_seed(0)
    order = list(LengthBucketSampler(lengths, batch_size=16))
    assert lengths[order[0]] == max(lengths)


def test_less_padding_than_the_trainers_sampler() -> None:
    for rows in (400, 4000):
        lengths = _lengths(rows, seed=rows)
        torch.manual_seed(0)
        ours = _efficiency(list(LengthBucketSampler(lengths, batch_size=16)), lengths, 16)
        torch.manual_seed(0)
        stock = _efficiency(list(LengthGroupedSampler(16, lengths=lengths)), lengths, 16)
        assert ours >= 0.93 and ours > stock, (rows, ours, stock)


def test_seeded_orders_repeat_and_epochs_differ() -> None:
    lengths = _lengths(600, seed=5)
    sampler = LengthBucketSampler(lengths, batch_size=8)
    torch.manual_seed(42)
    first, second = list(sampler), list(sampler)
    torch.manual_seed(42)
    assert list(sampler) == first  # resume replays the order from the restored generator
    assert first != second
    batches = lambda order: {frozenset(order[i : i + 8]) for i in range(0, len(order), 8)}  # noqa: E731
    assert batches(first) != batches(second)  # not just the same batches reordered


def test_fewer_rows_than_a_batch() -> None:
    torch.manual_seed(0)
    assert sorted(LengthBucketSampler([5, 9, 2], batch_size=16)) == [0, 1, 2]
    assert list(LengthBucketSampler([], batch_size=4)) == []
